"""FastAPI dependencies as typed aliases: settings, stores, the gateway, the caller's key.

Every dependency is a coroutine: FastAPI runs a plain function dependency on a worker thread,
a hand-off per dependency per request. The process's objects come from wiring's cached
factories, so once built they are returned at once; the first build, which may reach AWS
(clients, the provider secret), runs off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import BackgroundTasks, Depends, Header

from forge import settings as _settings
from forge import wiring
from forge.domain.errors import InsufficientScope
from forge.domain.records import ApiKey, KeyKind
from forge.gateway import Gateway
from forge.gateway.auth import Keys, require_model_calls
from forge.settings import Settings
from forge.store.dynamo.store import DynamoStore
from forge.store.s3archive import S3Archive

T = TypeVar("T")


async def _built(factory: Callable[[], T]) -> T:
    """A cached factory's product: at once when built, else built on a worker thread."""
    info: Any = getattr(factory, "cache_info", None)
    if info is not None and info().currsize:
        return factory()
    return await anyio.to_thread.run_sync(factory)


async def get_settings() -> Settings:
    return await _built(_settings.get_settings)


async def get_store() -> DynamoStore:
    return await _built(wiring.get_store)


async def get_archive() -> S3Archive:
    return await _built(wiring.get_archive)


async def get_gateway() -> Gateway:
    return await _built(wiring.get_gateway)


async def get_keys() -> Keys:
    return await _built(wiring.get_keys)


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
    record_use_later(background, keys.record_use, key)
    return key


def record_use_later(
    background: BackgroundTasks, record_use: Callable[[ApiKey], None], key: ApiKey
) -> None:
    """Stamp the key's use once the answer has gone; the stamp is queued, never waited for,
    so it runs on the event loop rather than on a worker thread."""

    async def record() -> None:
        record_use(key)

    background.add_task(record)


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
