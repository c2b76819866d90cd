"""FastAPI dependencies as typed aliases: settings, stores, the gateway, the caller's key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from forge.domain.records import ApiKey
from forge.gateway import Gateway
from forge.gateway.auth import Keys
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
    keys: KeysDep, authorization: Annotated[str | None, Header()] = None
) -> ApiKey:
    return await keys.authenticate(authorization)


KeyDep = Annotated[ApiKey, Depends(current_key)]
