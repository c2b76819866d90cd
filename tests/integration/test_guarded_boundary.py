"""One guarded boundary around every paid call: an exception at any step between reserve and
settle resolves the hold, leaves a receipt and frees the Idempotency-Key before the answer
goes out. Each step is broken once, for streamed and non-streamed calls, through the HTTP app
over the emulated store; then the same request is retried with the same key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

import forge.api.routes.chat as chat_routes
import forge.api.sse as sse_module
from forge.api import create_app
from forge.api.deps import get_gateway
from forge.domain.catalog import load_catalog
from forge.domain.errors import BudgetStoreUnavailable
from forge.domain.money import Bucket
from forge.domain.records import LedgerKind, utcnow
from forge.domain.upstream import ChatStream
from forge.gateway import Gateway
from forge.ledger.reconcile import reconcile
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.providers.openai import OpenAICompatProvider
from forge.store.dynamo.store import DynamoStore
from forge.wiring import get_store
from forge_tools.emulator import Resources
from tests.fakes.mock_upstream import answer

BODY = {"model": "demo-official", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 32}


class Injected(RuntimeError):
    """The fault a step raises once."""


@dataclass
class Faults:
    """Which step fails (once): the test arms it, the seams below fire it."""

    step: str | None = None

    def fire(self, step: str) -> None:
        if self.step == step:
            self.step = None
            raise Injected(step)


class FaultyStream:
    def __init__(self, inner: ChatStream, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults
        self.state = inner.state
        self.status = inner.status

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        self._faults.fire("first_chunk")
        sent = 0
        async for chunk in self._inner.chunks():
            if sent == 1:
                self._faults.fire("mid_stream")
            sent += 1
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class FaultyProvider:
    """The demo route's provider, with a fault seam before each of its steps."""

    def __init__(self, inner: OpenAICompatProvider, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults

    async def complete(self, body: dict[str, Any]) -> Any:
        self._faults.fire("call")
        return await self._inner.complete(body)

    async def open_stream(self, body: dict[str, Any]) -> Any:
        self._faults.fire("open_stream")
        return FaultyStream(await self._inner.open_stream(body), self._faults)


@dataclass
class Api:
    client: httpx.AsyncClient
    store: DynamoStore
    account_id: str
    faults: Faults

    def post(self, body: dict[str, Any], key: str) -> httpx.Response:
        async def run() -> httpx.Response:
            return await self.client.post(
                "/v1/chat/completions", json=body, headers={"Idempotency-Key": key}
            )

        return asyncio.run(run())

    def receipt(self, request_id: str) -> httpx.Response:
        return asyncio.run(self.client.get(f"/v1/requests/{request_id}"))

    def charges(self) -> list[int]:
        entries = self.store.list_entries(self.account_id, Bucket.CREDIT)
        return [e.amount for e in entries if e.kind is LedgerKind.CHARGE]


@pytest.fixture
def api(aws_stack: Resources, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    store = get_store()
    account_id = create_account(store, "boundary")
    credit_wallet(store, account_id, Bucket.CREDIT, "5", source="test", memo="fund")
    plaintext, _ = issue_key(store, account_id)
    faults = Faults()
    demo = OpenAICompatProvider("http://up.test/v1", "k", transport=httpx.MockTransport(answer))
    gateway = Gateway(
        store, {"demo": FaultyProvider(demo, faults)}, load_catalog(), hold_ttl_seconds=960
    )
    real_settle = store.settle

    def settle(*args: Any) -> Any:
        faults.fire("settle")
        if faults.step == "settle_answer_lost":  # the write lands, its answer does not
            faults.step = None
            real_settle(*args)
            raise BudgetStoreUnavailable("read timeout")
        return real_settle(*args)

    monkeypatch.setattr(store, "settle", settle)
    real_json, real_sse = chat_routes._json, sse_module.openai_frame

    def render(completion: Any) -> bytes:
        faults.fire("render")
        return real_json(completion)

    frames = {"n": 0}

    def frame(payload: dict[str, Any]) -> bytes:
        frames["n"] += 1
        if frames["n"] == 2:
            faults.fire("sse_framing")
        return real_sse(payload)

    monkeypatch.setattr(chat_routes, "_json", render)
    monkeypatch.setattr(sse_module, "openai_frame", frame)
    app = create_app()
    app.dependency_overrides[get_gateway] = lambda: gateway
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://gw",
        headers={"Authorization": f"Bearer {plaintext}"},
    )
    yield Api(client, store, account_id, faults)
    asyncio.run(client.aclose())


def _assert_money_is_whole(api: Api) -> None:
    """No hold left pending, and every conservation check holds."""
    assert api.store.expired_holds(utcnow() + timedelta(days=1)) == []
    report = reconcile(api.store, utcnow())
    assert report.ok, report


# step -> (status of the broken call, receipt status, charges after it)
NON_STREAM: dict[str, tuple[int, str, int]] = {
    "call": (500, "failed", 0),
    "render": (500, "failed", 0),
    "settle": (500, "failed", 0),
    "settle_answer_lost": (200, "succeeded", 1),
}
STREAM: dict[str, tuple[int, str, int]] = {
    "open_stream": (500, "failed", 0),
    "first_chunk": (500, "failed", 0),
    "mid_stream": (200, "partial", 1),
    "sse_framing": (200, "partial", 1),
    "settle": (200, "partial", 1),  # settled again from the finally: all was delivered
}
CASES = [(False, step, *want) for step, want in NON_STREAM.items()] + [
    (True, step, *want) for step, want in STREAM.items()
]


@pytest.mark.parametrize(
    ("stream", "step", "status", "receipt_status", "charged"),
    CASES,
    ids=[f"{'stream' if c[0] else 'plain'}-{c[1]}" for c in CASES],
)
def test_an_exception_at_any_step_resolves_the_hold_and_frees_the_key(
    api: Api, stream: bool, step: str, status: int, receipt_status: str, charged: int
) -> None:
    # Given a paid call whose step `step` raises once
    body = {**BODY, "stream": stream}
    api.faults.step = step

    # When it is sent with an Idempotency-Key
    broken = api.post(body, f"key-{step}")

    # Then the fault fired, and the answer went out with the hold resolved and a receipt
    assert api.faults.step is None, "the fault never fired"
    assert broken.status_code == status
    if status == 500:
        assert broken.json()["error"]["code"] == "internal_error"
    if stream and status == 200:
        assert b"data: [DONE]" not in broken.content
    receipt = api.receipt(broken.headers["x-request-id"])
    assert receipt.status_code == 200
    assert receipt.json()["status"] == receipt_status
    assert len(api.charges()) == charged
    _assert_money_is_whole(api)

    # And a retry with the same key succeeds: afresh, or (answer lost) replayed, never twice
    retry = api.post(body, f"key-{step}")
    assert retry.status_code == 200
    replayed = retry.headers.get("x-forge-idempotent-replay") == "true"
    assert replayed == (step == "settle_answer_lost")
    if stream:
        assert retry.content.rstrip().endswith(b"data: [DONE]")
    else:
        assert retry.json()["choices"][0]["message"]["content"] == "hey"
    assert len(api.charges()) == (charged if replayed else charged + 1)
    _assert_money_is_whole(api)


def test_a_refusal_during_planning_leaves_a_receipt(api: Api) -> None:
    # Given a per-request maximum below any useful answer
    async def run() -> httpx.Response:
        return await api.client.post(
            "/v1/chat/completions",
            json={**BODY, "model": "demo-official"},
            headers={"X-Max-Request-Charge": "0.000001", "X-Run-Id": "tiny"},
        )

    refused = asyncio.run(run())

    # Then it is a 402 that says what it needed, and its receipt joins the run
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert error["envelope"] == "request"
    assert {"limit", "remaining", "requested"} <= set(error)
    receipt = api.receipt(refused.headers["x-request-id"]).json()
    assert receipt["status"] == "failed"
    assert receipt["error_code"] == "budget_exceeded"
    assert receipt["run_id"] == "tiny"
    assert api.charges() == []
    _assert_money_is_whole(api)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({**BODY, "model": "no-such-model"}, "model_not_found"),
        ({**BODY, "model": "demo-embedding"}, "invalid_request"),
    ],
)
def test_a_call_refused_before_its_route_is_known_leaves_a_receipt(
    api: Api, body: dict[str, Any], code: str
) -> None:
    refused = api.post(body, "refused")
    assert refused.json()["error"]["code"] == code
    receipt = api.receipt(refused.headers["x-request-id"]).json()
    assert (receipt["status"], receipt["error_code"]) == ("failed", code)
    assert receipt["charge"] == 0
