"""FastAPI dependencies as typed aliases: settings, stores, the gateway, the caller's key."""

from __future__ import annotations

from typing import Annotated

from fastapi import BackgroundTasks, Depends, Header

from forge.domain.errors import InsufficientScope
from forge.domain.records import ApiKey, KeyKind
from forge.gateway import Gateway
from forge.gateway.auth import Keys, require_model_calls
from forge.settings import Settings, get_settings
from forge.store.dynamo.store import DynamoStore
from forge.store.s3archive import S3Archive
from forge.wiring import get_archive, get_gateway, get_keys, get_store

SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[DynamoStore, Depends(get_store)]
ArchiveDep = Annotated[S3Archive, Depends(get_archive)]
GatewayDep = Annotated[Gateway, Depends(get_gateway)]
KeysDep = Annotated[Keys, Depends(get_keys)]


async def current_key(
    keys: KeysDep,
    background: BackgroundTasks,
    authorization: Annotated[str | None, Header()] = None,
) -> ApiKey:
    """The caller's key; its use is recorded once the answer has gone (last_used_at)."""
    key = await keys.authenticate(authorization)
    background.add_task(keys.record_use, key)
    return key


KeyDep = Annotated[ApiKey, Depends(current_key)]  # either kind: the account views


async def inference_key(key: KeyDep) -> ApiKey:
    """A key that may call models: any inference key, a management key only when allowed."""
    require_model_calls(key)
    return key


async def management_key(key: KeyDep) -> ApiKey:
    if key.kind is not KeyKind.MANAGEMENT:
        raise InsufficientScope(
            "This route needs a management key; inference keys call models only"
        )
    return key


InferenceKeyDep = Annotated[ApiKey, Depends(inference_key)]
ManagementKeyDep = Annotated[ApiKey, Depends(management_key)]
