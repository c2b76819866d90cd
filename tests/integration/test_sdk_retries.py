"""Retries that never pay twice: the official SDKs time out on a slow non-stream call, drop the
connection and retry (max_retries=1), over real HTTP (the whole app under uvicorn on
127.0.0.1, the demo route pointed at the fake OpenAI, the emulated store).

- With an Idempotency-Key (sent per request, so the SDK's own retry repeats it): the first
  call goes on after its client has gone, is charged once and stored; the retry waits for it
  and gets the replay. One upstream call, one ledger entry, one answer.
- Without a key: the gateway sees the disconnect, cancels the upstream call (the fake sees its
  connection close) and charges the documented estimate (input only, `partial`,
  `client_disconnected`); the retry is a new call, charged normally. Two receipts that say
  which was which.

The README's section "Retries that never pay twice" shows these calls."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from forge.api import create_app
from forge.domain.money import Bucket, Usage, token_cost
from forge.domain.records import LedgerEntry, LedgerKind, Receipt, utcnow
from forge.domain.requests import ChatCompletionRequest
from forge.gateway.plan import estimated_input_tokens
from forge.ledger.reconcile import reconcile
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.store.dynamo.store import DynamoStore
from forge.wiring import get_store
from forge_tools.emulator import Resources
from tests.fakes.base import Fault
from tests.fakes.openai_fake import FakeOpenAI
from tests.serving import serving

UPSTREAM_MODEL = "demo-official-1"
QUESTION = "Explain, slowly, why a ledger never forgets."
CHAT = {"model": "demo-official", "messages": [{"role": "user", "content": QUESTION}]}
# The client gives up after SDK_TIMEOUT; the first upstream call answers after SLOW seconds,
# so the retry (sent about 0.5 s after the timeout) finds it finished or nearly so.
SDK_TIMEOUT = 2.0
SLOW = 2.2


@dataclass
class Stack:
    url: str
    key: str
    account_id: str
    store: DynamoStore
    upstream: FakeOpenAI
    funds: int

    def charges(self, count: int) -> list[LedgerEntry]:
        """The account's charge entries, once there are `count` (a call whose client left
        settles after the client's retry may have been answered)."""
        deadline = time.monotonic() + 10
        while True:
            entries = self.store.list_entries(self.account_id, Bucket.CREDIT)
            found = [e for e in entries if e.kind is LedgerKind.CHARGE]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def receipt(self, request_id: str) -> Receipt:
        receipt = self.store.get_receipt(self.account_id, request_id)
        assert receipt is not None, request_id
        return receipt

    def assert_money_whole(self, charged: int) -> None:
        wallet = self.store.get_wallet(self.account_id, Bucket.CREDIT)
        assert (wallet.balance, wallet.held) == (self.funds - charged, 0), wallet
        assert self.store.expired_holds(utcnow() + timedelta(days=1)) == []
        report = reconcile(self.store, utcnow())
        assert report.ok, report


@pytest.fixture
def stack(aws_stack: Resources, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    upstream = FakeOpenAI(name="demo")
    upstream.api_key = "demo"
    upstream.start()
    monkeypatch.setenv("FORGE_DEMO_BASE_URL", f"{upstream.base_url}/v1")
    monkeypatch.setenv("FORGE_UPSTREAM_TIMEOUT", "20")  # the gateway itself never times out
    store = get_store()
    account_id = create_account(store, "sdk retries")
    credit_wallet(store, account_id, Bucket.CREDIT, "5.00", source="test", memo="top-up")
    plaintext, _ = issue_key(store, account_id)

    with serving(create_app()) as url:
        try:
            yield Stack(url, plaintext, account_id, store, upstream, 5_000_000)
        finally:
            upstream.stop()  # first: the gateway's pooled connections to it close with it


def openai_call(stack: Stack, **options: Any) -> tuple[dict[str, str], int]:
    """One chat completion through the openai SDK: its response headers, retries taken."""
    from openai import OpenAI

    client = OpenAI(
        base_url=f"{stack.url}/v1", api_key=stack.key, timeout=SDK_TIMEOUT, max_retries=1
    )
    raw = client.chat.completions.with_raw_response.create(**CHAT, max_tokens=16, **options)
    assert raw.parse().choices[0].message.content
    return dict(raw.headers), raw.retries_taken


def anthropic_call(stack: Stack, **options: Any) -> tuple[dict[str, str], int]:
    """One message through the anthropic SDK: its response headers, retries taken."""
    from anthropic import Anthropic

    client = Anthropic(base_url=stack.url, api_key=stack.key, timeout=SDK_TIMEOUT, max_retries=1)
    raw = client.messages.with_raw_response.create(**CHAT, max_tokens=16, **options)
    assert raw.parse().content[0].type == "text"
    return dict(raw.headers), raw.retries_taken


SDKS = {"openai": openai_call, "anthropic": anthropic_call}


@pytest.mark.parametrize("sdk", sorted(SDKS))
def test_an_sdk_retry_with_an_idempotency_key_is_paid_once_and_answered_by_the_replay(
    stack: Stack, sdk: str
) -> None:
    # Given a first upstream call slower than the client's timeout
    stack.upstream.fail(UPSTREAM_MODEL, Fault("timeout", seconds=SLOW))

    # When the SDK times out, drops the connection and retries with the same key
    headers, retries = SDKS[sdk](stack, extra_headers={"Idempotency-Key": str(uuid.uuid4())})

    # Then the retry's answer is the first call's, replayed: one upstream call, finished
    assert retries == 1
    assert headers["x-forge-idempotent-replay"] == "true"
    assert len(stack.upstream.calls) == 1
    assert not stack.upstream.calls[0].closed_early  # the gateway kept going
    # and paid once: one ledger entry, the receipt the headers name
    (charge,) = stack.charges(1)
    receipt = stack.receipt(headers["x-request-id"])
    assert charge.request_id == receipt.request_id
    assert (receipt.status, receipt.error_code) == ("succeeded", None)
    assert -charge.amount == receipt.charge == int(headers["x-forge-charge-micros"]) > 0
    assert receipt.usage.output_tokens > 0
    stack.assert_money_whole(receipt.charge)


@pytest.mark.parametrize("sdk", sorted(SDKS))
def test_without_a_key_the_abandoned_call_pays_the_input_estimate_and_the_retry_pays_its_own(
    stack: Stack, sdk: str
) -> None:
    # Given a first upstream call that would take far longer than the client waits
    stack.upstream.fail(UPSTREAM_MODEL, Fault("timeout", seconds=10))

    # When the SDK times out, drops the connection and retries (no key: a new call)
    headers, retries = SDKS[sdk](stack)

    # Then the retry was served afresh
    assert retries == 1
    assert "x-forge-idempotent-replay" not in headers
    retried = stack.receipt(headers["x-request-id"])
    assert (retried.status, retried.error_code) == ("succeeded", None)
    # and the first call was cancelled upstream: the fake saw its connection close
    assert len(stack.upstream.calls) == 2
    assert stack.upstream.calls[0].closed_early
    # Each call has its own charge; the receipts tell them apart
    entries = stack.charges(2)
    charged = {e.request_id: -e.amount for e in entries}
    assert len(entries) == len(charged) == 2
    assert charged[retried.request_id] == retried.charge
    (first_id,) = set(charged) - {retried.request_id}
    assert first_id is not None
    abandoned = stack.receipt(first_id)
    assert (abandoned.status, abandoned.error_code) == ("partial", "client_disconnected")
    assert [a.outcome for a in abandoned.attempts] == ["abandoned"]
    assert charged[first_id] == abandoned.charge
    # charged the documented estimate: the request's bytes / 4 as input, no output
    sent = ChatCompletionRequest.model_validate(stack.upstream.calls[0].body)
    estimate = estimated_input_tokens(sent)
    assert abandoned.usage == Usage(input_tokens=estimate)
    assert abandoned.prices is not None
    assert abandoned.charge == token_cost(estimate, abandoned.prices.input) < abandoned.hold
    assert f"{estimate} input tokens" in (abandoned.note or "")
    stack.assert_money_whole(abandoned.charge + retried.charge)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_retries_with_one_key_and_is_answered_by_the_replay(stack: Stack) -> None:
    stack.upstream.fail(UPSTREAM_MODEL, Fault("timeout", seconds=SLOW))
    key = str(uuid.uuid4())

    # The README's curl call: --max-time per attempt, --retry on a timeout, one key
    done = subprocess.run(
        [
            *("curl", "-sS", "--include", "--max-time", str(SDK_TIMEOUT), "--retry", "1"),
            f"{stack.url}/v1/chat/completions",
            *("-H", f"Authorization: Bearer {stack.key}"),
            *("-H", "Content-Type: application/json"),
            *("-H", f"Idempotency-Key: {key}"),
            *("-d", json.dumps({**CHAT, "max_tokens": 16})),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )

    # a replay: only a retry can be one (the first attempt was dropped at its --max-time)
    head, _, body = done.stdout.rpartition("\n\n")
    assert "x-forge-idempotent-replay: true" in head.lower()
    assert json.loads(body)["choices"][0]["message"]["content"]
    (charge,) = stack.charges(1)
    assert len(stack.upstream.calls) == 1
    stack.assert_money_whole(-charge.amount)


def test_a_key_fixed_on_the_client_replays_or_refuses_every_later_call(stack: Stack) -> None:
    """The trap the README warns of: `default_headers` sends one key with every request."""
    from openai import ConflictError, OpenAI

    client = OpenAI(
        base_url=f"{stack.url}/v1",
        api_key=stack.key,
        max_retries=0,
        default_headers={"Idempotency-Key": "one-key-for-the-client"},
    )
    client.chat.completions.create(**CHAT, max_tokens=16)

    # The same question again is not asked again: the first answer is replayed
    again = client.chat.completions.with_raw_response.create(**CHAT, max_tokens=16)
    assert again.headers["x-forge-idempotent-replay"] == "true"
    # Another question is refused
    other = {"role": "user", "content": "Another question."}
    with pytest.raises(ConflictError) as refused:
        client.chat.completions.create(model=CHAT["model"], messages=[other], max_tokens=16)
    assert refused.value.code == "idempotency_key_reused"
    assert len(stack.upstream.calls) == 1
