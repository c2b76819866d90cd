"""A hold resolves once, with the terms it holds, whatever was written around it: cases the
money-path simulation found (tests/sim), on the in-memory twin."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from forge.domain.catalog import Catalog
from forge.domain.errors import HoldAlreadyResolved, UpstreamUnavailable
from forge.domain.money import Bucket
from forge.domain.records import ApiKey, Hold, HoldStatus, LedgerKind, Receipt
from forge.domain.requests import ChatCompletionRequest
from forge.domain.upstream import UpstreamError
from forge.gateway import Gateway, RequestLimits
from forge.ledger.sweeper import sweep
from forge.store.dynamo.store import DynamoStore
from forge_tools.template import memory_stack

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


@pytest.fixture
def store() -> DynamoStore:
    stack = memory_stack(TEMPLATE)
    store = DynamoStore(stack.client, stack.budget_table, stack.ledger_table)
    store.create_account("acct", "hold resolution")
    store.credit("acct", Bucket.CREDIT, 100_000, kind=LedgerKind.TOPUP, entry_id="le_fund")
    return store


def hold(amount: int) -> Hold:
    return Hold(
        request_id="req_1",
        account_id="acct",
        key_id="key_1",
        bucket=Bucket.CREDIT,
        amount=amount,
        expires_at=datetime.now(UTC) + timedelta(minutes=16),
    )


def failed(note: str) -> Receipt:
    return Receipt(
        request_id="req_1",
        account_id="acct",
        key_id="key_1",
        project_id="default",
        requested_model="m",
        status="failed",
        note=note,
    )


def test_a_hold_whose_request_already_has_its_receipt_is_still_voided(store: DynamoStore) -> None:
    """Given a reservation whose answer was lost (so the gateway refused the call and wrote its
    refusal receipt, unable to void what it could not see), when the sweeper voids the hold,
    then the hold is released and the refusal receipt stands: no livelock on the receipt."""
    held = hold(4_000)
    store.reserve(held)
    store.put_receipt(failed("refused: the budget store is unavailable"))

    started = time.monotonic()
    store.void(held, failed("the sweeper released its hold"))

    assert time.monotonic() - started < 1  # not ten seconds of retries, then a 503
    assert store.get_hold("req_1").status is HoldStatus.VOIDED  # type: ignore[union-attr]
    wallet = store.get_wallet("acct", Bucket.CREDIT)
    assert (wallet.held, wallet.available, wallet.balance) == (0, 100_000, 100_000)
    receipt = store.get_receipt("acct", "req_1")
    assert receipt is not None
    assert receipt.note == "refused: the budget store is unavailable"


def test_a_hold_is_resolved_only_with_the_terms_it_holds(store: DynamoStore) -> None:
    """Given a hold moved to a fallback route's price by a rehold whose answer was lost, when the
    gateway voids the hold it knew (the old amount), then nothing moves: releasing the old amount
    would leave `held` short of the pending hold. The hold as stored is voided later."""
    first, moved = hold(3_000), hold(4_500)
    store.reserve(first)
    store.rehold(first, moved)

    with pytest.raises(HoldAlreadyResolved):
        store.void(first, failed("fallback refused"))

    assert store.get_wallet("acct", Bucket.CREDIT).held == 4_500
    store.void(moved, failed("the sweeper released its hold"))
    wallet = store.get_wallet("acct", Bucket.CREDIT)
    assert (wallet.held, wallet.available) == (0, 100_000)


class SweptThenFailing:
    """An upstream so slow that the request outlives its hold: the sweeper voids the hold
    while it runs, then it fails as a route (so the gateway would fall back)."""

    def __init__(self, store: DynamoStore) -> None:
        self._store = store

    async def complete(self, body: dict[str, Any]) -> Any:
        sweep(self._store, datetime.now(UTC) + timedelta(hours=1))
        raise UpstreamError("invalid_api_key", 401)

    async def open_stream(self, body: dict[str, Any]) -> Any:
        raise AssertionError("not streamed")


async def inline(fn: Callable[[], Any]) -> Any:
    return fn()


def test_a_call_whose_hold_the_sweeper_voided_answers_its_failure(store: DynamoStore) -> None:
    """Given a call that outlived its hold (the sweeper voided it), when its route fails and a
    fallback route is next, then no fallback is called without a hold: the call answers the
    upstream failure (nothing charged), not an internal error."""
    route = {"route_type": "official", "prices": {"input": "1", "cached_input": "1", "output": "1"}}
    catalog = Catalog.model_validate(
        {
            "models": [
                {
                    "id": "m",
                    "routes": [
                        {"provider": "slow", "upstream_model": "a", **route},
                        {"provider": "slow", "upstream_model": "b", **route},
                    ],
                }
            ]
        }
    )
    gateway = Gateway(
        store, {"slow": SweptThenFailing(store)}, catalog, hold_ttl_seconds=960, blocking=inline
    )
    key = ApiKey(key_id="key_1", account_id="acct", project_id="default", prefix="sk-forge-x")
    request = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    )

    with pytest.raises(UpstreamUnavailable):
        asyncio.run(gateway.serve(key, request, "req_1", RequestLimits(), lambda c: c.body))

    assert store.get_hold("req_1").status is HoldStatus.VOIDED  # type: ignore[union-attr]
    wallet = store.get_wallet("acct", Bucket.CREDIT)
    assert (wallet.held, wallet.available) == (0, 100_000)
