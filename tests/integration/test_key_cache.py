"""The per-container key cache (forge.gateway.auth.Keys) on the in-memory twin, with a clock the
test moves: what reaches the store, and when. Reads are counted at the store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest

from forge.domain.errors import InvalidApiKey, KeyLookupsThrottled
from forge.domain.ids import new_api_key
from forge.domain.records import ApiKey, KeyStatus, utcnow
from forge.gateway import auth
from forge.gateway.auth import (
    KEY_FRESH_SECONDS,
    KEY_MAX_AGE_SECONDS,
    NEW_KEY_READS_PER_SECOND,
    TOUCH_SECONDS,
    UNKNOWN_KEY_SECONDS,
    UNKNOWN_KEYS_KEPT,
    Keys,
)
from forge.money_in.accounts import create_account, issue_key
from forge.store.dynamo.store import DynamoStore
from forge_tools.template import memory_stack
from tests.twin import TEMPLATE


class CountingStore(DynamoStore):
    """The twin's store, counting key reads and last-used stamps."""

    reads = 0
    touches = 0

    def get_api_key(self, key_hash: str) -> ApiKey | None:
        self.reads += 1
        return super().get_api_key(key_hash)

    def touch_key(self, account_id: str, key_id: str, at: datetime) -> None:
        self.touches += 1
        super().touch_key(account_id, key_id, at)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Later:
    """`run_later` that keeps the jobs until the test runs them (as the pool would, later)."""

    def __init__(self) -> None:
        self.jobs: list[Callable[[], None]] = []

    def __call__(self, job: Callable[[], None]) -> None:
        self.jobs.append(job)

    def run(self) -> int:
        count = len(self.jobs)
        while self.jobs:
            self.jobs.pop(0)()
        return count


async def inline(fn: Callable[[], Any]) -> Any:
    return fn()


@pytest.fixture
def store() -> CountingStore:
    stack = memory_stack(TEMPLATE)
    return CountingStore(stack.client, stack.tables["BudgetTable"], stack.tables["LedgerTable"])


def _keys(store: DynamoStore, clock: Clock, later: Later | None = None) -> Keys:
    return Keys(store, clock, inline, run_later=later)


def _authenticate(keys: Keys, plaintext: str) -> ApiKey:
    return anyio.run(keys.authenticate_key, plaintext)


def _refused(keys: Keys, plaintext: str) -> bool:
    try:
        _authenticate(keys, plaintext)
    except InvalidApiKey:
        return True
    return False


def _issue(store: DynamoStore) -> tuple[str, ApiKey]:
    return issue_key(store, create_account(store, "cache"))


def test_a_flood_of_one_wrong_key_reads_the_store_once_per_ttl(store: CountingStore) -> None:
    clock = Clock()
    keys = _keys(store, clock)
    wrong = new_api_key()
    for _ in range(1000):
        assert _refused(keys, wrong)
        clock.now += 0.001
    assert store.reads == 1
    clock.now += UNKNOWN_KEY_SECONDS
    assert _refused(keys, wrong)
    assert store.reads == 2


def test_a_flood_of_distinct_wrong_keys_reads_at_a_bounded_rate(store: CountingStore) -> None:
    clock = Clock()
    keys = _keys(store, clock)
    plaintext, key = _issue(store)
    assert _authenticate(keys, plaintext) == key
    reads, throttled = store.reads, 0
    for _ in range(1000):  # 1,000 different wrong keys in one second
        try:
            assert _refused(keys, new_api_key())
        except KeyLookupsThrottled:
            throttled += 1
        assert _authenticate(keys, plaintext).key_id == key.key_id  # known keys go on
        clock.now += 0.001
    # A second's worth of reads, plus the burst saved before the flood: 38 of 1,000.
    assert store.reads - reads == 1000 - throttled <= 2 * NEW_KEY_READS_PER_SECOND

    fresh, other = _issue(store)  # a real key met mid-flood: 429, then in on the retry
    with pytest.raises(KeyLookupsThrottled):
        _authenticate(keys, fresh)
    clock.now += 1.0
    assert _authenticate(keys, fresh) == other


def test_malformed_keys_are_refused_without_a_read(store: CountingStore) -> None:
    keys = _keys(store, Clock())
    for bad in ("", "sk-forge-", "sk-wrong", "x" * 52, new_api_key()[:-1], "Bearer x"):
        assert _refused(keys, bad)
    assert store.reads == 0


def test_unknown_keys_kept_are_bounded(
    store: CountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert UNKNOWN_KEYS_KEPT == 10_000
    monkeypatch.setattr(auth, "UNKNOWN_KEYS_KEPT", 50)  # the same rule, fewer keys to try
    clock = Clock()
    keys = _keys(store, clock)
    first = new_api_key()
    assert _refused(keys, first)
    for _ in range(50):
        clock.now += 1 / NEW_KEY_READS_PER_SECOND  # within the new-key read rate
        assert _refused(keys, new_api_key())
    assert len(keys._unknown) == 50
    reads = store.reads
    assert _refused(keys, first)  # the oldest was forgotten: read again
    assert store.reads == reads + 1


def test_a_busy_key_is_refreshed_in_the_background_never_before_the_answer(
    store: CountingStore,
) -> None:
    plaintext, _ = _issue(store)
    clock, later = Clock(), Later()
    keys = _keys(store, clock, later)
    _authenticate(keys, plaintext)
    assert store.reads == 1
    # Requests every 100 ms for a minute: none reads before answering.
    for _ in range(600):
        clock.now += 0.1
        reads = store.reads
        _authenticate(keys, plaintext)
        assert store.reads == reads  # answered from memory
        later.run()  # the pool gets to the refresh (at most one per fresh window)
    assert 60 / KEY_MAX_AGE_SECONDS <= store.reads - 1 <= 60 / KEY_FRESH_SECONDS + 1


def test_a_change_reaches_a_cached_key_within_its_max_age(store: CountingStore) -> None:
    plaintext, key = _issue(store)
    clock, later = Clock(), Later()
    keys = _keys(store, clock, later)
    _authenticate(keys, plaintext)
    store.update_api_key(key.account_id, key.key_id, status=KeyStatus.REVOKED)
    # Served from memory while fresh, and (no refresh ran yet) up to the max age...
    clock.now += KEY_MAX_AGE_SECONDS - 0.01
    _authenticate(keys, plaintext)
    # ...then read before answering: refused.
    clock.now += 0.01
    assert _refused(keys, plaintext)
    # With the background refresh running, a revoke is seen one refresh after the fresh window.
    plaintext, key = _issue(store)
    _authenticate(keys, plaintext)
    store.update_api_key(key.account_id, key.key_id, status=KeyStatus.PAUSED)
    clock.now += KEY_FRESH_SECONDS
    _authenticate(keys, plaintext)  # stale: served, refresh queued
    later.run()
    assert _refused(keys, plaintext)


def test_expiry_and_a_rotated_secrets_grace_need_no_read(store: CountingStore) -> None:
    plaintext, key = _issue(store)
    store.update_api_key(key.account_id, key.key_id, expires_at=utcnow() + timedelta(seconds=30))
    moment = [utcnow()]
    keys = Keys(store, Clock(), inline, now=lambda: moment[0])
    _authenticate(keys, plaintext)
    reads = store.reads
    moment[0] += timedelta(seconds=31)
    assert _refused(keys, plaintext)
    assert store.reads == reads  # the cached key says when it expires


def _use(keys: Keys, plaintext: str) -> None:
    """One call as the API makes it: authenticate, answer, then record the use."""
    keys.record_use(_authenticate(keys, plaintext))


def test_last_used_is_stamped_off_the_request_once_a_minute(store: CountingStore) -> None:
    plaintext, key = _issue(store)
    clock, later = Clock(), Later()
    keys = _keys(store, clock, later)
    for _ in range(100):
        _use(keys, plaintext)
        clock.now += 0.1  # 10 s in all
    assert store.touches == 0  # nothing written on a request's path: only queued
    later.run()  # the stamp, and a refresh of the key (it was used past its fresh window)
    assert store.touches == 1
    stamped = store.get_key(key.account_id, key.key_id)
    assert stamped is not None and stamped.last_used_at is not None
    clock.now += TOUCH_SECONDS
    _use(keys, plaintext)
    later.run()
    assert store.touches == 2
    # a second container stamps on its own
    other = _keys(store, clock, later)
    _use(other, plaintext)
    later.run()
    assert store.touches == 3


def test_no_background_work_without_a_pool(store: CountingStore) -> None:
    """The simulation's gateway: a key is read again past its max age, nothing stamped."""
    plaintext, _ = _issue(store)
    clock = Clock()
    keys = _keys(store, clock)
    _authenticate(keys, plaintext)
    clock.now += KEY_MAX_AGE_SECONDS - 0.01
    _authenticate(keys, plaintext)
    assert store.reads == 1
    clock.now += 0.01
    _authenticate(keys, plaintext)
    assert (store.reads, store.touches) == (2, 0)


def test_a_burst_on_one_new_key_never_meets_the_new_key_limit(store: CountingStore) -> None:
    """Requests arriving together on a key this container has not seen count once against
    the new-key read limit, however many they are."""
    clock = Clock()
    plaintext, key = _issue(store)
    gate = anyio.Event()

    async def slow(fn: Callable[[], Any]) -> Any:
        await gate.wait()  # the read is in flight while the others arrive
        return fn()

    keys = Keys(store, clock, slow)
    found: list[ApiKey] = []

    async def burst() -> None:
        async with anyio.create_task_group() as tasks:
            for _ in range(int(NEW_KEY_READS_PER_SECOND) * 5):
                tasks.start_soon(lambda: _append(found, keys.authenticate_key(plaintext)))
            await anyio.sleep(0.01)
            gate.set()

    anyio.run(burst)
    assert [k.key_id for k in found] == [key.key_id] * int(NEW_KEY_READS_PER_SECOND) * 5
    assert store.reads == int(NEW_KEY_READS_PER_SECOND) * 5  # each read for itself


async def _append(found: list[ApiKey], lookup: Any) -> None:
    found.append(await lookup)
