"""A non-stream call whose client disconnects, wherever the disconnect lands: the hold is
resolved once, never above itself, with one ledger entry at most and a receipt that says
`client_disconnected`. On the in-memory twin, through `complete_unless_gone` (the API's
cancel-on-disconnect) with a scripted ASGI `receive`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from forge.api.calls import complete_unless_gone
from forge.domain.catalog import Catalog
from forge.domain.errors import HoldAlreadyResolved
from forge.domain.metrics import call_metrics
from forge.domain.money import Bucket, Usage, token_cost
from forge.domain.records import ApiKey, HoldStatus, LedgerKind, Receipt
from forge.domain.requests import ChatCompletionRequest
from forge.domain.upstream import Completion, UpstreamError
from forge.gateway import Completed, Gateway, RequestLimits
from forge.gateway.plan import estimated_input_tokens
from forge.store.dynamo.store import DynamoStore
from forge_tools.template import memory_stack

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
FUNDS = 10_000_000
PRICES = {"input": "2", "cached_input": "1", "output": "8"}  # per 1M tokens, in dollars
KEY = ApiKey(key_id="key_1", account_id="acct", project_id="default", prefix="sk-forge-x")
REQUEST = ChatCompletionRequest.model_validate(
    {
        "model": "m",
        "messages": [{"role": "user", "content": "A long question, answered slowly. " * 40}],
        "max_tokens": 500,
    }
)
USAGE = {"prompt_tokens": 300, "completion_tokens": 20, "total_tokens": 320}


@pytest.fixture
def store() -> DynamoStore:
    stack = memory_stack(TEMPLATE)
    store = DynamoStore(stack.client, stack.budget_table, stack.ledger_table)
    store.create_account("acct", "client gone")
    store.credit("acct", Bucket.CREDIT, FUNDS, kind=LedgerKind.TOPUP, entry_id="le_fund")
    return store


class Client:
    """The client's side of the connection: `leave()` makes `receive` answer the disconnect."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    def leave(self) -> None:
        self.gone.set()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}


class Upstream:
    """A provider whose answer comes after `answer_after` (an event), or fails first."""

    def __init__(self, client: Client, *, leave_in_flight: bool, fail_first: bool = False):
        self.client = client
        self.leave_in_flight = leave_in_flight
        self.fail_first = fail_first
        self.calls = 0
        self.cancelled = 0

    async def complete(self, body: dict[str, Any]) -> Completion:
        self.calls += 1
        if self.fail_first and self.calls == 1:
            raise UpstreamError("overloaded", 503)
        if self.leave_in_flight:
            self.client.leave()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled += 1  # an httpx call closes its connection here
                raise
        body = {"id": "c1", "choices": [], "usage": USAGE}
        return Completion(body, Usage(input_tokens=300, output_tokens=20))

    async def open_stream(self, body: dict[str, Any]) -> Any:
        raise AssertionError("not streamed")


def gateway(
    store: DynamoStore,
    upstream: Upstream,
    blocking: Callable[[Callable[[], Any]], Any] | None = None,
    sleep: Callable[[float], Any] | None = None,
) -> Gateway:
    route = {"provider": "slow", "route_type": "official", "prices": PRICES}
    catalog = Catalog.model_validate(
        {"models": [{"id": "m", "routes": [{**route, "upstream_model": "a"}]}]}
    )

    async def inline(fn: Callable[[], Any]) -> Any:
        return fn()

    return Gateway(
        store,
        {"slow": upstream},
        catalog,
        hold_ttl_seconds=960,
        blocking=blocking or inline,
        sleep=sleep or asyncio.sleep,
    )


def serve(gw: Gateway, client: Client) -> Completed[Any] | None:
    serving = gw.serve(KEY, REQUEST, "req_1", RequestLimits(), lambda c: c.body)
    result = asyncio.run(complete_unless_gone(serving, client.receive))
    assert result is None or isinstance(result, Completed)
    return result


def receipt(store: DynamoStore) -> Receipt:
    stored = store.get_receipt("acct", "req_1")
    assert stored is not None
    return stored


def charges(store: DynamoStore) -> list[int]:
    entries = store.list_entries("acct", Bucket.CREDIT)
    return [-e.amount for e in entries if e.kind is LedgerKind.CHARGE]


def assert_resolved(store: DynamoStore, charged: int) -> None:
    wallet = store.get_wallet("acct", Bucket.CREDIT)
    assert (wallet.held, wallet.balance, wallet.available) == (0, FUNDS - charged, FUNDS - charged)
    hold = store.get_hold("req_1")
    assert hold is None or hold.status is not HoldStatus.PENDING


def test_a_client_gone_while_the_upstream_answers_pays_the_input_estimate(
    store: DynamoStore,
) -> None:
    client = Client()
    upstream = Upstream(client, leave_in_flight=True)

    assert serve(gateway(store, upstream), client) is None

    # The upstream call was cancelled (closed), not left to finish
    assert (upstream.calls, upstream.cancelled) == (1, 1)
    # Charged the documented estimate: the request's bytes / 4 as input, no output
    estimate = estimated_input_tokens(REQUEST)
    told = receipt(store)
    assert told.status == "partial" and told.error_code == "client_disconnected", told
    assert told.usage == Usage(input_tokens=estimate), told.usage
    assert told.prices is not None
    assert told.charge == token_cost(estimate, told.prices.input) < told.hold
    assert f"{estimate} input tokens" in (told.note or ""), told.note
    assert [(a.outcome, a.reason) for a in told.attempts] == [("abandoned", "client_disconnected")]
    assert charges(store) == [told.charge]
    assert_resolved(store, told.charge)
    # A charge, not an upstream error: the route did nothing wrong
    assert [m.name for m in call_metrics(told, {})] == ["Charges", "ChargedMicros"]


def test_a_client_gone_between_two_attempts_pays_nothing(store: DynamoStore) -> None:
    client = Client()
    upstream = Upstream(client, leave_in_flight=False, fail_first=True)

    async def backoff(seconds: float) -> None:
        client.leave()  # the client gives up while the gateway waits to retry
        await asyncio.sleep(3600)

    assert serve(gateway(store, upstream, sleep=backoff), client) is None

    assert upstream.calls == 1  # no retry after the client left
    told = receipt(store)
    assert (told.status, told.charge, told.error_code) == ("failed", 0, "client_disconnected")
    assert [a.action for a in told.attempts] == ["retry"]
    assert charges(store) == []
    assert_resolved(store, 0)


def test_a_client_gone_after_the_upstream_answered_pays_what_it_reported(
    store: DynamoStore,
) -> None:
    client = Client()
    upstream = Upstream(client, leave_in_flight=False)

    async def slow_settle(fn: Callable[[], Any]) -> Any:
        if getattr(fn, "func", None) == store.settle:
            client.leave()  # the answer is on its way to the ledger when the client leaves
            await asyncio.sleep(0.05)
        return fn()

    served = serve(gateway(store, upstream, blocking=slow_settle), client)

    assert served is not None  # answered (to nobody): the provider produced and billed it
    told = receipt(store)
    assert (told.status, told.error_code) == ("succeeded", None)
    assert told.usage == Usage(input_tokens=300, output_tokens=20)
    assert charges(store) == [told.charge] and told.charge > 0
    assert_resolved(store, told.charge)


def test_a_client_gone_during_the_reservation_pays_nothing(store: DynamoStore) -> None:
    client = Client()
    upstream = Upstream(client, leave_in_flight=False)

    async def reserve_then_leave(fn: Callable[[], Any]) -> Any:
        result = fn()
        if getattr(fn, "func", None) == store.reserve:
            client.leave()  # the hold is written, but nobody awaits its answer any more
            await asyncio.sleep(0.05)
        return result

    assert serve(gateway(store, upstream, blocking=reserve_then_leave), client) is None

    assert upstream.calls == 0
    told = receipt(store)
    assert (told.status, told.charge, told.error_code) == ("failed", 0, "client_disconnected")
    assert charges(store) == []
    assert_resolved(store, 0)


def test_an_estimate_that_cannot_be_settled_releases_the_hold(store: DynamoStore) -> None:
    client = Client()
    upstream = Upstream(client, leave_in_flight=True)

    async def broken_settle(fn: Callable[[], Any]) -> Any:
        if getattr(fn, "func", None) == store.settle:
            raise RuntimeError("a defect in settling")
        return fn()

    assert serve(gateway(store, upstream, blocking=broken_settle), client) is None

    told = receipt(store)
    assert (told.status, told.charge, told.error_code) == ("failed", 0, "client_disconnected")
    assert charges(store) == []
    assert_resolved(store, 0)
    with pytest.raises(HoldAlreadyResolved):  # resolved once: the void stands
        store.void(store.get_hold("req_1"), told)  # type: ignore[arg-type]


def test_no_disconnect_no_cancellation(store: DynamoStore) -> None:
    client = Client()
    upstream = Upstream(client, leave_in_flight=False)

    served = serve(gateway(store, upstream), client)

    assert served is not None and served.receipt.status == "succeeded"
    assert charges(store) == [served.receipt.charge]
    assert_resolved(store, served.receipt.charge)
