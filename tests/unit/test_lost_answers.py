"""A write whose answer is lost is retried by botocore (standard mode, forge.store.aws), and the
retry meets the write's own effect. Found by the money-path simulation (tests/sim) once its
store links retry as botocore does; each case on the in-memory twin, one answer lost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError

from forge.domain.catalog import Catalog
from forge.domain.errors import UpstreamUnavailable
from forge.domain.money import Bucket, Usage
from forge.domain.records import ApiKey, Hold, HoldStatus, LedgerKind
from forge.domain.requests import ChatCompletionRequest
from forge.domain.upstream import Completion, UpstreamError
from forge.gateway import Completed, Gateway, RequestLimits
from forge.store.dynamo.store import DynamoStore
from forge.store.memory import FaultKind, MemoryDynamoDB
from forge_tools.template import memory_stack

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


KEY = ApiKey(key_id="key_1", account_id="acct", project_id="default", prefix="sk-forge-x")
REQUEST = ChatCompletionRequest.model_validate(
    {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
)
CATALOG = Catalog.model_validate(
    {
        "models": [
            {
                "id": "m",
                "routes": [
                    {
                        "provider": "p",
                        "upstream_model": "m",
                        "route_type": "official",
                        "prices": {"input": "1", "cached_input": "1", "output": "1"},
                    }
                ],
            }
        ]
    }
)


class RetryingClient:
    """The twin behind botocore's retry of a lost answer: the same call, sent once more."""

    def __init__(self, twin: MemoryDynamoDB) -> None:
        self._twin = twin

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._twin, name)
        if not callable(target):
            return target

        def call(**params: Any) -> Any:
            try:
                return target(**params)
            except ReadTimeoutError:
                return target(**params)

        return call


@pytest.fixture
def twin() -> MemoryDynamoDB:
    return memory_stack(TEMPLATE).client


@pytest.fixture
def store(twin: MemoryDynamoDB) -> DynamoStore:
    store = DynamoStore(RetryingClient(twin), "twin-BudgetTable", "twin-LedgerTable")
    store.create_account("acct", "lost answers")
    store.credit("acct", Bucket.CREDIT, 100_000, kind=LedgerKind.TOPUP, entry_id="le_fund")
    return store


def lose_next_answer(twin: MemoryDynamoDB, **match: Any) -> None:
    twin.faults.inject(FaultKind.LOST_RESPONSE, operation="TransactWriteItems", **match)


def hold(amount: int, bucket: Bucket = Bucket.CREDIT) -> Hold:
    return Hold(
        request_id="req_1",
        account_id="acct",
        key_id="key_1",
        bucket=bucket,
        amount=amount,
        expires_at=datetime.now(UTC) + timedelta(minutes=16),
    )


def test_a_top_up_whose_answer_was_lost_is_credited_once(
    twin: MemoryDynamoDB, store: DynamoStore
) -> None:
    """The retry's `seq` condition fails (the first attempt moved it); the store used to take
    that for a concurrent writer, re-read, and credit again under the next seq."""
    lose_next_answer(twin)

    entry = store.credit("acct", Bucket.CREDIT, 5_000, kind=LedgerKind.TOPUP, entry_id="le_top")

    entries = store.list_entries("acct", Bucket.CREDIT)
    assert [e.entry_id for e in entries] == ["le_fund", "le_top"]
    assert entry == entries[-1]
    assert store.get_wallet("acct", Bucket.CREDIT).balance == 105_000


def test_a_reservation_whose_answer_was_lost_is_kept_not_refused(
    twin: MemoryDynamoDB, store: DynamoStore
) -> None:
    """The retry finds its own hold: that is the reservation, not a 402."""
    lose_next_answer(twin)

    store.reserve(hold(4_000))

    assert store.get_hold("req_1").status is HoldStatus.PENDING  # type: ignore[union-attr]
    assert store.get_wallet("acct", Bucket.CREDIT).held == 4_000


def test_a_rehold_whose_answer_was_lost_is_kept(twin: MemoryDynamoDB, store: DynamoStore) -> None:
    first, moved = hold(3_000), hold(4_500)
    store.reserve(first)
    lose_next_answer(twin)

    store.rehold(first, moved)

    assert store.get_hold("req_1").amount == 4_500  # type: ignore[union-attr]
    assert store.get_wallet("acct", Bucket.CREDIT).held == 4_500


class FailingProvider:
    async def complete(self, body: dict[str, Any]) -> Any:
        raise UpstreamError("http_503", 503)

    async def open_stream(self, body: dict[str, Any]) -> Any:
        raise UpstreamError("http_503", 503)


async def inline(fn: Callable[[], Any]) -> Any:
    return fn()


async def no_wait(seconds: float) -> None:
    return None


def test_a_call_no_route_served_answers_upstream_unavailable_when_its_void_answer_is_lost(
    twin: MemoryDynamoDB, store: DynamoStore
) -> None:
    """The void's retry finds the hold voided by its first attempt: the call still answers
    the failure it had (502, nothing charged), not an internal error."""
    gateway = Gateway(
        store,
        {"p": FailingProvider()},
        CATALOG,
        hold_ttl_seconds=960,
        sleep=no_wait,
        blocking=inline,
    )
    # The reservation is the first transaction naming the hold, the void the second.
    lose_next_answer(twin, key={"pk": "HOLD#req_1"}, skip=1)

    with pytest.raises(UpstreamUnavailable):
        asyncio.run(gateway.serve(KEY, REQUEST, "req_1", RequestLimits(), lambda c: c.body))

    assert store.get_hold("req_1").status is HoldStatus.VOIDED  # type: ignore[union-attr]
    wallet = store.get_wallet("acct", Bucket.CREDIT)
    assert (wallet.held, wallet.available) == (0, 100_000)


class AnsweringProvider:
    async def complete(self, body: dict[str, Any]) -> Any:
        answer = {"id": "c", "object": "chat.completion", "choices": []}
        return Completion(body=answer, usage=Usage(input_tokens=10, output_tokens=5))

    async def open_stream(self, body: dict[str, Any]) -> Any:
        raise AssertionError("not streamed")


def test_a_served_call_whose_settle_answer_and_receipt_read_are_lost_still_gets_its_answer(
    twin: MemoryDynamoDB, store: DynamoStore
) -> None:
    """The settle landed, its answer was lost, its retry met the settled hold, and the receipt
    could not be read back: the call was charged, so the client gets what it paid for, the
    charge marked deferred (unconfirmed); it used to get a 503 saying nothing was charged."""
    gateway = Gateway(
        store, {"p": AnsweringProvider()}, CATALOG, hold_ttl_seconds=960, blocking=inline
    )
    receipt_key = {"table": "twin-LedgerTable", "key": {"sk": "RCPT#req_1"}}
    lose_next_answer(twin, **receipt_key)  # the settle: the first write of the receipt
    twin.faults.inject(FaultKind.TIMEOUT, operation="GetItem", **receipt_key)

    served = asyncio.run(gateway.serve(KEY, REQUEST, "req_1", RequestLimits(), lambda c: c.body))

    assert isinstance(served, Completed)
    assert served.answer["id"] == "c"
    assert served.receipt.settlement == "deferred"
    stored = store.get_receipt("acct", "req_1")
    assert stored is not None
    assert (stored.charge, stored.settlement) == (served.receipt.charge, "settled")
