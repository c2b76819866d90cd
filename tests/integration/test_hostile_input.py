"""Inputs that once crashed the gateway or were served loosely: each is refused at the edge with
a 4xx in the route's own error shape, and nothing is held, charged or left pending."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from forge.domain.money import Bucket
from forge.domain.records import LedgerKind, utcnow
from forge.ledger.reconcile import reconcile
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.store.dynamo.store import DynamoStore
from forge.wiring import get_store
from forge_tools.emulator import Resources
from tests.fakes.mock_upstream import answer, gateway_app

CHAT = {"model": "demo-official", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
MESSAGES = {
    "model": "demo-official",
    "max_tokens": 8,
    "messages": [{"role": "user", "content": "hi"}],
}


@dataclass
class Caller:
    client: httpx.AsyncClient
    store: DynamoStore
    account_id: str

    def post(
        self, path: str, content: bytes, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        sent = {"content-type": "application/json", **(headers or {})}
        return asyncio.run(self.client.post(path, content=content, headers=sent))


@pytest.fixture
def caller(aws_stack: Resources) -> Iterator[Caller]:
    store = get_store()
    account_id = create_account(store, "hostile")
    credit_wallet(store, account_id, Bucket.CREDIT, "5", source="test", memo="fund")
    plaintext, _ = issue_key(store, account_id)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway_app(store, httpx.MockTransport(answer))),
        base_url="http://gw",
        headers={"Authorization": f"Bearer {plaintext}"},
    )
    yield Caller(client, store, account_id)
    asyncio.run(client.aclose())


def _json(value: dict[str, Any], **raw: str) -> bytes:
    """`value` as JSON, with some fields spelled as raw JSON text (NaN, 1e309, escapes)."""
    text = json.dumps(value)
    for name, literal in raw.items():
        text = text[:-1] + f', "{name}": {literal}' + "}"
    return text.encode()


NOT_JSON = [
    pytest.param(_json(CHAT, temperature="NaN"), id="NaN"),
    pytest.param(_json(CHAT, temperature="Infinity"), id="Infinity"),
    pytest.param(_json(CHAT, temperature="-Infinity"), id="-Infinity"),
    pytest.param(_json(CHAT, temperature="1e309"), id="1e309"),
    pytest.param(
        b'{"model": "demo-official", "max_tokens": 8, "messages": [{"role": "user",'
        b' "content": "\\ud800"}]}',
        id="lone-surrogate-in-content",
    ),
    pytest.param(_json(CHAT, extra='"x\\udfff"'), id="lone-surrogate-in-extra"),
    pytest.param(b'{"model": "\xff\xfe"}', id="invalid-utf8"),
    pytest.param(b"[" * 5000 + b"]" * 5000, id="deep-nesting"),
    pytest.param(b'{"a": ' * 3000 + b"1" + b"}" * 3000, id="deep-objects"),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("body", NOT_JSON)
@pytest.mark.parametrize(
    "path",
    ["/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/messages", "/v1/embeddings"],
)
def test_what_json_does_not_allow_is_invalid_json(
    caller: Caller, path: str, body: bytes, stream: bool
) -> None:
    if stream:
        body = body.replace(b'"max_tokens": 8', b'"max_tokens": 8, "stream": true')
    answer = caller.post(path, body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    if path == "/v1/messages":
        assert answer.json()["type"] == "error"
        assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_json"
    _nothing_charged(caller.store, caller.account_id)


LOOSE_CHAT = [
    {"max_tokens": "10"},
    {"max_tokens": True},
    {"max_tokens": 1e30},
    {"max_tokens": 10.0},
    {"max_completion_tokens": "10"},
    {"stream": "yes"},
    {"stream": 1},
    {"n": 0},
    {"n": -1},
    {"n": 1000},
    {"n": "x"},
    {"n": 2},
    {"temperature": "0.5"},
    {"temperature": 3},
    {"top_p": 2},
    {"messages": [{"role": "wizard", "content": "hi"}]},
    {"messages": [{"role": "user", "content": 5}]},
    {"messages": []},
    {"stream_options": {"include_usage": "yes"}, "stream": True},
    {"stop": ["a", "b", "c", "d", "e"]},
    {"logit_bias": {"50256": 101}},
    {"seed": 2**64},
]


@pytest.mark.parametrize(
    "change", LOOSE_CHAT, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items())[:40]
)
def test_loose_chat_fields_are_refused_not_coerced(caller: Caller, change: dict[str, Any]) -> None:
    answer = caller.post("/v1/chat/completions", json.dumps({**CHAT, **change}).encode())
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["param"] is not None
    _nothing_charged(caller.store, caller.account_id)


LOOSE_MESSAGES = [
    {"messages": [{"role": "wizard", "content": "hi"}]},
    {"messages": [{"role": "user", "content": 5}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
    {"messages": [{"role": "user", "content": [{"type": "bogus"}]}]},
    {"max_tokens": "10"},
    {"max_tokens": True},
    {"stream": "yes"},
    {"temperature": 1.5},
    {"system": 7},
    {"tool_choice": {"type": "sometimes"}},
]


@pytest.mark.parametrize("change", LOOSE_MESSAGES, ids=lambda c: str(c)[:40])
def test_loose_messages_fields_are_refused_in_anthropic_shape(
    caller: Caller, change: dict[str, Any]
) -> None:
    answer = caller.post("/v1/messages", json.dumps({**MESSAGES, **change}).encode())
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["type"] == "error"
    assert body["error"]["code"] == "invalid_request"
    _nothing_charged(caller.store, caller.account_id)


def test_n_of_one_is_served(caller: Caller) -> None:
    answer = caller.post("/v1/chat/completions", json.dumps({**CHAT, "n": 1}).encode())
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["choices"]) == 1


def test_a_wrong_method_says_which_are_allowed(caller: Caller) -> None:
    answer = asyncio.run(caller.client.get("/v1/chat/completions"))
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    assert answer.json()["error"]["code"] == "method_not_allowed"


def _nothing_charged(store: DynamoStore, account_id: str) -> None:
    entries = store.list_entries(account_id, Bucket.CREDIT)
    assert [e.kind for e in entries] == [LedgerKind.TOPUP]
    assert store.expired_holds(utcnow() + timedelta(days=1)) == []
    assert reconcile(store, utcnow()).ok


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("poison", [b"NaN", b"1e309", b'"\\ud800"'])
def test_an_upstream_answer_json_does_not_allow_is_a_failed_call_not_a_charge(
    aws_stack: Resources, poison: bytes, stream: bool
) -> None:
    # Given an upstream whose answer holds a value JSON does not allow
    def poisoned(request: httpx.Request) -> httpx.Response:
        if stream:
            chunk = b'{"id": "c", "object": "chat.completion.chunk", "choices": [], "x": '
            return httpx.Response(
                200,
                content=b"data: " + chunk + poison + b"}\n\ndata: [DONE]\n\n",
                headers={"content-type": "text/event-stream"},
            )
        return httpx.Response(200, content=b'{"choices": [], "x": ' + poison + b"}")

    store = get_store()
    account_id = create_account(store, "poisoned")
    credit_wallet(store, account_id, Bucket.CREDIT, "5", source="test", memo="fund")
    plaintext, _ = issue_key(store, account_id)
    app = gateway_app(store, httpx.MockTransport(poisoned))

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gw",
        ) as client:
            return await client.post(
                "/v1/chat/completions",
                json={**CHAT, "stream": stream},
                headers={"Authorization": f"Bearer {plaintext}"},
            )

    # Then the call failed upstream: no charge, no hold, a failed receipt
    answer = asyncio.run(call())
    assert answer.status_code == 502, answer.text
    assert answer.json()["error"]["code"] == "upstream_unavailable"
    _nothing_charged(store, account_id)
    assert store.get_receipt(account_id, answer.headers["x-request-id"]) is not None
