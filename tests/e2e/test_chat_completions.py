"""The official openai SDK against the running local stack: every charge explained three ways
(balance decrease == receipt charge == ledger entry)."""

from __future__ import annotations

from typing import Any

import httpx

from forge.domain.money import Bucket
from tests.e2e.conftest import LocalStack
from tests.e2e.helpers import expected_reply_and_charge, new_customer, sdk

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Explain my balance, please."},
]


def test_non_stream_charge_matches_balance_and_ledger(local_stack: LocalStack) -> None:
    account_id, key = new_customer(local_stack)
    store = local_stack.store()
    before = store.get_wallet(account_id, Bucket.CREDIT)

    raw = sdk(local_stack, key).chat.completions.with_raw_response.create(
        model="demo-official",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    completion = raw.parse()

    text, expected_charge = expected_reply_and_charge("demo-official", MESSAGES)
    assert completion.choices[0].message.content == text
    assert completion.model == "demo-official-1"  # what actually served the call
    assert raw.headers["x-forge-route"] == "demo:demo-official-1"
    assert raw.headers["x-forge-attempts"] == "1"
    assert raw.headers["x-forge-bucket"] == "credit"
    charge = int(raw.headers["x-forge-charge-micros"])
    assert charge == expected_charge > 0

    after = store.get_wallet(account_id, Bucket.CREDIT)
    assert before.balance - after.balance == charge
    assert after.held == 0 and after.available == after.balance
    entry = store.list_entries(account_id, Bucket.CREDIT)[-1]
    assert entry.entry_id == raw.headers["x-forge-ledger-entry"]
    assert entry.amount == -charge
    assert entry.balance_after == after.balance
    assert entry.request_id == raw.headers["x-request-id"]

    receipt = httpx.get(
        f"{local_stack.base_url}/requests/{raw.headers['x-request-id']}",
        headers={"Authorization": f"Bearer {key}"},
    ).json()
    assert receipt["charge"] == charge
    assert receipt["status"] == "succeeded"
    assert receipt["attempts"][0]["route"] == "demo:demo-official-1"


def test_stream_charge_matches_balance_and_ledger(local_stack: LocalStack) -> None:
    account_id, key = new_customer(local_stack)
    store = local_stack.store()
    before = store.get_wallet(account_id, Bucket.RMB)

    stream = sdk(local_stack, key).chat.completions.create(
        model="demo-routed",
        messages=MESSAGES,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    text, expected_charge = expected_reply_and_charge("demo-routed", MESSAGES)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    receipt = (final.model_extra or {})["receipt"]
    assert receipt["bucket"] == "rmb"
    assert receipt["charge_micros"] == expected_charge > 0

    after = store.get_wallet(account_id, Bucket.RMB)
    assert before.balance - after.balance == expected_charge
    assert after.held == 0
    entry = store.list_entries(account_id, Bucket.RMB)[-1]
    assert (entry.entry_id, entry.amount) == (receipt["ledger_entry_id"], -expected_charge)
    assert entry.balance_after == after.balance


def test_stream_sse_is_framed_like_openai(local_stack: LocalStack) -> None:
    _, key = new_customer(local_stack)
    with httpx.stream(
        "POST",
        f"{local_stack.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "demo-official", "messages": MESSAGES, "stream": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-forge-route"] == "demo:demo-official-1"
        body = response.read().decode()
    events = body.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert events[-3].startswith(": receipt {")  # a comment: SSE parsers skip it
    assert all(e.startswith("data: ") for e in events[:-3])
    assert '"usage"' not in body  # not asked for, not sent


def test_usage_chunk_is_omitted_when_the_client_declines_it(local_stack: LocalStack) -> None:
    _, key = new_customer(local_stack)
    chunks = list(
        sdk(local_stack, key).chat.completions.create(
            model="demo-official",
            messages=MESSAGES,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": False},
        )
    )
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_models_lists_prices_route_type_and_bucket(local_stack: LocalStack) -> None:
    _, key = new_customer(local_stack)
    models = {m.id: m for m in sdk(local_stack, key).models.list()}
    official, routed = models["demo-official"], models["demo-routed"]
    assert (official.model_extra or {})["bucket"] == "credit"
    assert (routed.model_extra or {})["route_type"] == "routed"
    assert (routed.model_extra or {})["prices"]["currency"] == "CNY"
    assert (official.model_extra or {})["prices"]["output"] == "1.500000"
    # one model is retrieved as the list shows it
    assert sdk(local_stack, key).models.retrieve("demo-routed") == routed
