"""API keys: found by the hash of the bearer token, cached per container with their project caps.

How fast a change reaches every container (a pause, revoke or expiry; see docs/architecture.md
"Keys"): a key read at t is served from memory until t + KEY_FRESH_SECONDS; after that, up to
t + KEY_MAX_AGE_SECONDS, it is still served while one read refreshes it in the background; only
past that does a request read it before answering. A busy key so never waits for the store, and
a change is seen by every container within KEY_MAX_AGE_SECONDS of its write plus one read (the
reads are consistent). Unknown keys are remembered too, for UNKNOWN_KEY_SECONDS, and malformed
ones are refused without a read. Keys never seen are read at most NEW_KEY_READS_PER_SECOND a
second per container (a flood of distinct wrong keys); past that, 429 with Retry-After, and a
real key gets in on the client's retry while every known key goes on unaffected. A key
already being read for another request does not count again.
`last_used_at` is stamped in the background after the answer, at most once per TOUCH_SECONDS
per key per container.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Generic, TypeVar, cast

from forge.domain.errors import (
    BudgetStoreUnavailable,
    InsufficientScope,
    InvalidApiKey,
    KeyLookupsThrottled,
)
from forge.domain.ids import hash_api_key, is_well_formed_key
from forge.domain.metrics import refusal_metrics
from forge.domain.money import Bucket
from forge.domain.records import ApiKey, ProjectCaps, utcnow
from forge.gateway.holds import Blocking
from forge.ports import NO_METER, GatewayStore, Meter, emit_quietly

logger = logging.getLogger(__name__)

V = TypeVar("V")
KEY_FRESH_SECONDS = 0.5  # served without a read
KEY_MAX_AGE_SECONDS = 1.5  # served while refreshed in the background; older: read first
UNKNOWN_KEY_SECONDS = 5.0  # an unknown key is refused from memory this long
UNKNOWN_KEYS_KEPT = 10_000  # at most this many remembered (the oldest go first)
NEW_KEY_READS_PER_SECOND = 20.0  # reads of keys never seen, per container (and the burst)
TOUCH_SECONDS = 60.0  # last_used_at written at most this often per key per container
PROJECT_CACHE_SECONDS = 10.0  # a changed project cap applies within this long
# Runs a job off the request, later (a thread pool's submit); None: no background work.
RunLater = Callable[[Callable[[], None]], object]


class TtlCache(Generic[V]):
    """Values remembered per container for `seconds` (project lookups)."""

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


def require_model_calls(key: ApiKey) -> None:
    """Paid routes: a management key calls models only when given `can_call_models`."""
    if not key.calls_models:
        raise InsufficientScope(
            "This management key may not call models (it was not given can_call_models)"
        )


class TokenBucket:
    """`rate` takes a second, up to `rate` saved: take() says whether one is left."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._clock = clock
        self._tokens = rate
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._rate, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class Keys:
    """Authenticates API keys and reads their projects' caps (see the module docstring for
    how long each is remembered). `run_later` runs refreshes and last-used stamps off the
    request; without it (a simulation) a key is read again past KEY_MAX_AGE_SECONDS, before
    answering, and nothing is stamped."""

    def __init__(
        self,
        store: GatewayStore,
        clock: Callable[[], float],
        blocking: Blocking,
        meter: Meter = NO_METER,
        *,
        now: Callable[[], datetime] = utcnow,
        run_later: RunLater | None = None,
    ) -> None:
        self.store = store
        self.blocking = blocking
        self.meter = meter
        self._clock = clock
        self._now = now
        self._run_later = run_later
        self._known: dict[str, tuple[float, ApiKey]] = {}  # hash -> (read started, key)
        self._unknown: dict[str, float] = {}  # hash -> read started
        self._refreshing: set[str] = set()
        self._writing = threading.Lock()
        self._touched: dict[str, float] = {}  # key id -> when last stamped
        self._new_key_reads = TokenBucket(NEW_KEY_READS_PER_SECOND, clock)
        self._reading: dict[str, int] = {}  # key hash -> reads of it under way
        self._project_caps: TtlCache[dict[Bucket, ProjectCaps]] = TtlCache(
            PROJECT_CACHE_SECONDS, clock
        )

    async def authenticate(self, authorization: str | None) -> ApiKey:
        if not authorization or not authorization.startswith("Bearer "):
            raise InvalidApiKey("Missing API key: send 'Authorization: Bearer <key>'")
        return await self.authenticate_key(authorization.removeprefix("Bearer ").strip())

    async def authenticate_key(self, plaintext: str) -> ApiKey:
        key = await self._lookup(hash_api_key(plaintext)) if is_well_formed_key(plaintext) else None
        if key is None or not key.works_at(self._now()):
            raise InvalidApiKey("Incorrect, paused, revoked or expired API key")
        return key

    async def _lookup(self, key_hash: str) -> ApiKey | None:
        now = self._clock()
        unknown_since = self._unknown.get(key_hash)
        if unknown_since is not None and now - unknown_since < UNKNOWN_KEY_SECONDS:
            return None
        known = self._known.get(key_hash)
        if known is not None:
            age = now - known[0]
            if age < KEY_MAX_AGE_SECONDS:
                if age >= KEY_FRESH_SECONDS:
                    self._refresh_later(key_hash)
                return known[1]
        # A key being read for another request is not new: it does not count again (a burst
        # on one new key must not meet the limit). Each request reads for itself: waiting on
        # another's read would tie the two together.
        if known is None and key_hash not in self._reading and not self._new_key_reads.take():
            raise KeyLookupsThrottled("Too many unknown API keys; retry in a second")
        self._reading[key_hash] = self._reading.get(key_hash, 0) + 1
        try:
            return cast(ApiKey | None, await self.blocking(partial(self._read, key_hash)))
        except BudgetStoreUnavailable as exc:
            # In a store outage most calls fail here first (a key not cached yet): count
            # them with the refusals, where the fail-closed alarm looks.
            emit_quietly(self.meter, partial(refusal_metrics, exc))
            raise
        finally:
            left = self._reading.pop(key_hash) - 1
            if left:
                self._reading[key_hash] = left

    def _read(self, key_hash: str) -> ApiKey | None:
        """Read a key and remember what was read, stamped with when the read started (so a
        change written during the read is not taken as seen)."""
        started = self._clock()
        key = self.store.get_api_key(key_hash)
        with self._writing:  # request threads and background refreshes write concurrently
            if key is None:
                self._known.pop(key_hash, None)
                self._unknown.pop(key_hash, None)  # re-inserted last: the oldest go first
                self._unknown[key_hash] = started
                while len(self._unknown) > UNKNOWN_KEYS_KEPT:
                    del self._unknown[next(iter(self._unknown))]
            else:
                known = self._known.get(key_hash)
                if known is None or known[0] <= started:
                    self._known[key_hash] = (started, key)
        return key

    def _refresh_later(self, key_hash: str) -> None:
        if key_hash in self._refreshing or self._run_later is None:
            return
        self._refreshing.add(key_hash)

        def refresh() -> None:
            try:
                self._read(key_hash)
            except Exception as exc:  # the next request past the max age reads it itself
                logger.warning("key_refresh_failed", extra={"error": type(exc).__name__})
            finally:
                self._refreshing.discard(key_hash)

        self._run_later(refresh)

    def record_use(self, key: ApiKey) -> None:
        """Stamp the key's `last_used_at`, at most once per TOUCH_SECONDS, on a background
        thread. The API calls it once the answer is sent (a response's background task): a
        stamp queued with the request slowed its first upstream call under load."""
        if self._run_later is None:
            return
        now = self._clock()
        last = self._touched.get(key.key_id)
        if last is not None and now - last < TOUCH_SECONDS:
            return
        self._touched[key.key_id] = now
        at = self._now()

        def touch() -> None:
            try:
                self.store.touch_key(key.account_id, key.key_id, at)
            except Exception as exc:  # a lost stamp never fails a call
                logger.warning("key_touch_failed", extra={"error": type(exc).__name__})

        self._run_later(touch)

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
