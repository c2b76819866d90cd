"""API keys: found by the hash of the bearer token, cached per container with their project caps."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Generic, TypeVar, cast

from forge.domain.errors import BudgetStoreUnavailable, InvalidApiKey
from forge.domain.ids import hash_api_key
from forge.domain.metrics import refusal_metrics
from forge.domain.money import Bucket
from forge.domain.records import ApiKey, KeyStatus, ProjectCaps
from forge.gateway.holds import Blocking
from forge.ports import NO_METER, GatewayStore, Meter, emit_quietly

V = TypeVar("V")
KEY_CACHE_SECONDS = 10.0  # a paused or revoked key stops working within this long


class TtlCache(Generic[V]):
    """Values remembered per container for `seconds` (key and project lookups)."""

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self._seconds = seconds
        self._clock = clock
        self._entries: dict[str, tuple[float, V]] = {}

    def get(self, key: str) -> V | None:
        entry = self._entries.get(key)
        if entry is None or self._clock() - entry[0] >= self._seconds:
            return None
        return entry[1]

    def put(self, key: str, value: V) -> None:
        self._entries[key] = (self._clock(), value)


class Keys:
    """Authenticates API keys and reads their projects' caps, each from the store at most once
    per KEY_CACHE_SECONDS per container."""

    def __init__(
        self,
        store: GatewayStore,
        clock: Callable[[], float],
        blocking: Blocking,
        meter: Meter = NO_METER,
    ) -> None:
        self.store = store
        self.blocking = blocking
        self.meter = meter
        # A paused or revoked key, or a changed project cap, applies within this long.
        self._keys: TtlCache[ApiKey] = TtlCache(KEY_CACHE_SECONDS, clock)
        self._project_caps: TtlCache[dict[Bucket, ProjectCaps]] = TtlCache(KEY_CACHE_SECONDS, clock)

    async def authenticate(self, authorization: str | None) -> ApiKey:
        if not authorization or not authorization.startswith("Bearer "):
            raise InvalidApiKey("Missing API key: send 'Authorization: Bearer <key>'")
        return await self.authenticate_key(authorization.removeprefix("Bearer ").strip())

    async def authenticate_key(self, plaintext: str) -> ApiKey:
        key_hash = hash_api_key(plaintext)
        key = self._keys.get(key_hash)
        if key is None:
            try:
                key = cast(
                    ApiKey | None, await self.blocking(partial(self.store.get_api_key, key_hash))
                )
            except BudgetStoreUnavailable as exc:
                # In a store outage most calls fail here first (a key not cached yet): count
                # them with the refusals, where the fail-closed alarm looks.
                emit_quietly(self.meter, partial(refusal_metrics, exc))
                raise
            if key is not None:
                self._keys.put(key_hash, key)
        if key is None or key.status is not KeyStatus.ACTIVE:
            raise InvalidApiKey("Incorrect, paused or revoked API key")
        return key

    async def project_caps(self, key: ApiKey, bucket: Bucket) -> ProjectCaps:
        """The caps of the key's project in `bucket` (none set: no caps)."""
        cache_key = f"{key.account_id}#{key.project_id}"
        caps = self._project_caps.get(cache_key)
        if caps is None:
            caps = cast(
                dict[Bucket, ProjectCaps],
                await self.blocking(
                    partial(self.store.get_project_caps, key.account_id, key.project_id)
                ),
            )
            self._project_caps.put(cache_key, caps)
        return caps.get(bucket) or ProjectCaps()
