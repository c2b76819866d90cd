"""A stream that waits: keep-alive comments while the upstream thinks, and money kept whole
when the wait ends badly. The whole app under uvicorn on 127.0.0.1 (a client can hang up),
the demo route pointed at the fake OpenAI, the emulated store, a 0.2 s keep-alive interval.

A call that has not opened its upstream stream within one interval commits to 200 and keeps
the line alive; if every route then fails, the failure is an error event in the stream (no
[DONE]), nothing is charged and the hold is released. A client that leaves during the wait
cancels the call: the upstream is closed and the hold released."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest

from forge.api import create_app
from forge.domain.money import Bucket
from forge.domain.records import Receipt, utcnow
from forge.ledger.reconcile import reconcile
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.store.dynamo.store import DynamoStore
from forge.wiring import get_store
from forge_tools.emulator import Resources
from tests.fakes.base import Fault
from tests.fakes.openai_fake import FakeOpenAI
from tests.serving import serving

UPSTREAM_MODEL = "demo-official-1"
BODY = {
    "model": "demo-official",
    "messages": [{"role": "user", "content": "Think before you answer."}],
    "stream": True,
    "max_tokens": 8,
}


@dataclass
class Gateway:
    url: str
    key: str
    account_id: str
    store: DynamoStore
    upstream: FakeOpenAI

    def stream(self) -> tuple[int, str, list[str]]:
        """Status, request id and the non-empty lines of one streamed call."""
        with httpx.stream(
            "POST",
            f"{self.url}/v1/chat/completions",
            json=BODY,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=30,
        ) as response:
            lines = [line for line in response.iter_lines() if line]
            return response.status_code, response.headers["x-request-id"], lines

    def receipt(self, request_id: str) -> Receipt:
        deadline = time.monotonic() + 10
        while (receipt := self.store.get_receipt(self.account_id, request_id)) is None:
            assert time.monotonic() < deadline, f"no receipt for {request_id}"
            time.sleep(0.05)
        return receipt

    def assert_money_whole(self) -> None:
        wallet = self.store.get_wallet(self.account_id, Bucket.CREDIT)
        assert wallet.held == 0, wallet
        assert self.store.expired_holds(utcnow() + timedelta(days=1)) == []
        report = reconcile(self.store, utcnow())
        assert report.ok, report


@pytest.fixture
def gateway(aws_stack: Resources, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    upstream = FakeOpenAI(name="demo")
    upstream.api_key = "demo"
    upstream.start()
    monkeypatch.setenv("FORGE_DEMO_BASE_URL", f"{upstream.base_url}/v1")
    monkeypatch.setenv("FORGE_SSE_KEEPALIVE_SECONDS", "0.2")
    monkeypatch.setenv("FORGE_UPSTREAM_TIMEOUT", "0.5")
    monkeypatch.setenv("FORGE_RETRY_BASE_DELAY", "0.05")
    store = get_store()
    account_id = create_account(store, "keep-alive")
    credit_wallet(store, account_id, Bucket.CREDIT, "5.00", source="test", memo="top-up")
    plaintext, _ = issue_key(store, account_id)

    with serving(create_app()) as url:
        try:
            yield Gateway(url, plaintext, account_id, store, upstream)
        finally:
            upstream.stop()


def test_a_stream_that_opens_quickly_sends_no_comment_and_names_its_route(
    gateway: Gateway,
) -> None:
    status, request_id, lines = gateway.stream()

    assert status == 200
    assert ": keep-alive" not in lines, lines
    assert lines[-1] == "data: [DONE]"
    assert gateway.receipt(request_id).status == "succeeded"


def test_keep_alives_while_the_first_token_is_slow_and_between_slow_tokens(
    gateway: Gateway,
) -> None:
    gateway.upstream.always(UPSTREAM_MODEL, Fault("paced", seconds=0.45, gap=0.45))

    status, request_id, lines = gateway.stream()

    assert status == 200
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data:"))
    assert ": keep-alive" in lines[:first_data], lines
    data = [i for i, line in enumerate(lines) if line.startswith("data: {")]
    between = [lines[a + 1 : b] for a, b in itertools.pairwise(data)]
    assert sum(": keep-alive" in gap for gap in between) >= len(between) // 2, lines
    assert lines[-1] == "data: [DONE]"
    receipt = gateway.receipt(request_id)
    assert (receipt.status, receipt.usage.output_tokens) == ("succeeded", 8), receipt
    gateway.assert_money_whole()


def test_a_failure_after_the_stream_committed_is_an_error_event_and_charges_nothing(
    gateway: Gateway,
) -> None:
    # Given an upstream that never answers within the gateway's timeout (every attempt fails,
    # after the first keep-alive has committed the response)
    gateway.upstream.always(UPSTREAM_MODEL, Fault("timeout", seconds=3))
    before = gateway.store.get_wallet(gateway.account_id, Bucket.CREDIT)

    status, request_id, lines = gateway.stream()

    # Then the stream carries keep-alives, then one error event in OpenAI's shape, no [DONE]
    assert status == 200
    assert lines[0] == ": keep-alive", lines
    errors = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data:")]
    assert len(errors) == 1 and "error" in errors[0], lines
    assert errors[0]["error"]["code"] == "upstream_unavailable", errors
    assert "data: [DONE]" not in lines
    receipt = gateway.receipt(request_id)
    assert (receipt.status, receipt.charge) == ("failed", 0), receipt
    assert gateway.store.get_wallet(gateway.account_id, Bucket.CREDIT).balance == before.balance
    gateway.assert_money_whole()


def test_the_openai_sdk_raises_the_error_event(gateway: Gateway) -> None:
    from openai import APIError, OpenAI

    gateway.upstream.always(UPSTREAM_MODEL, Fault("timeout", seconds=3))
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key, max_retries=0)

    with pytest.raises(APIError, match="upstream"):
        for _ in client.chat.completions.create(**BODY):  # type: ignore[call-overload]
            pass


def test_a_client_gone_during_the_wait_cancels_the_call_and_releases_the_hold(
    gateway: Gateway,
) -> None:
    # Given a model that thinks for 3 s
    gateway.upstream.always(UPSTREAM_MODEL, Fault("paced", seconds=3.0, gap=0.05))
    before = gateway.store.get_wallet(gateway.account_id, Bucket.CREDIT)

    # When the client reads one keep-alive and hangs up
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST",
            f"{gateway.url}/v1/chat/completions",
            json=BODY,
            headers={"Authorization": f"Bearer {gateway.key}"},
        ) as response,
    ):
        request_id = response.headers["x-request-id"]
        assert next(line for line in response.iter_lines() if line) == ": keep-alive"

    # Then the call is abandoned: no charge, the hold released, the upstream closed
    receipt = gateway.receipt(request_id)
    assert (receipt.status, receipt.charge) == ("failed", 0), receipt
    assert receipt.error_code == "client_disconnected", receipt
    assert gateway.store.get_wallet(gateway.account_id, Bucket.CREDIT).balance == before.balance
    gateway.assert_money_whole()
    deadline = time.monotonic() + 5
    while not gateway.upstream.calls[-1].closed_early:
        assert time.monotonic() < deadline, "the upstream stream was never closed"
        time.sleep(0.05)
