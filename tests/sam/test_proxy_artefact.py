"""The proxy as it runs on Lambda: the built artefact's run.sh, started as the Lambda Web Adapter
starts it (its code and the layer only, python3.12, the template's environment; the adapter
waits for the port to open, then relays each request and streams the answer back). Driven by
the official openai SDK and raw HTTP against an upstream that paces its tokens.

What the adapter and API Gateway add on AWS (event translation, the 5-minute idle timeout)
cannot run here; the bytes and their timing leaving uvicorn are what this file checks."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from forge.domain.ids import hash_api_key
from forge.domain.money import Bucket
from forge.domain.records import Receipt
from forge.money_in.accounts import credit_wallet
from forge.store.dynamo.store import DynamoStore
from forge_tools.emulator import Emulator, Resources, load_template
from tests.fakes.base import Fault
from tests.fakes.openai_fake import FakeOpenAI
from tests.sam.built import LAYER_ID, literal_environment, seed_api_key

pytestmark = pytest.mark.sam

KEEPALIVE_SECONDS = 0.25
UPSTREAM_MODEL = "demo-official-1"  # what the catalog's demo-official route calls


@dataclass
class Proxy:
    base_url: str
    api_key: str
    account_id: str
    store: DynamoStore
    upstream: FakeOpenAI

    def receipt(self, request_id: str, timeout: float = 10.0) -> Receipt:
        """The request's receipt, once written (a cut stream settles after the client left)."""
        deadline = time.monotonic() + timeout
        while (receipt := self.store.get_receipt(self.account_id, request_id)) is None:
            assert time.monotonic() < deadline, f"no receipt for {request_id}"
            time.sleep(0.05)
        return receipt


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """The adapter's readiness check (AWS_LWA_READINESS_CHECK_PROTOCOL=tcp)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"run.sh exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"run.sh did not open port {port}:\n{log.read_text()[-4000:]}")


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(name="demo")
    fake.api_key = "demo"  # the key the gateway's demo provider sends
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def proxy(
    lambda_build: Path,
    python312: str,
    emulator: Emulator,
    backend: Resources,
    upstream: FakeOpenAI,
    tmp_path: Path,
) -> Iterator[Proxy]:
    template = load_template(lambda_build / "template.yaml")
    props = template["Resources"]["ProxyFunction"]["Properties"]
    code_dir = lambda_build / props["CodeUri"]
    layer = template["Resources"][LAYER_ID]["Properties"]["ContentUri"]
    layer_dir = lambda_build / layer / "python"
    entry = code_dir / props["Handler"]
    assert props["Handler"] == "run.sh" and os.access(entry, os.X_OK), f"{entry} not executable"

    # `python` as Lambda's runtime has it: python3.12 without this machine's site-packages.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{python312}" -S -B "$@"\n')
    (bin_dir / "python").chmod(0o755)

    port = _free_port()
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "LAMBDA_TASK_ROOT": str(code_dir),
        "PYTHONPATH": str(layer_dir),  # stands for /opt/python, which run.sh also names
        "AWS_LAMBDA_FUNCTION_NAME": "ProxyFunction",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        **literal_environment(template, "ProxyFunction"),
        **backend.environment(),
        "AWS_LWA_PORT": str(port),
        "FORGE_DEMO_BASE_URL": f"{upstream.base_url}/v1",
        "FORGE_SSE_KEEPALIVE_SECONDS": str(KEEPALIVE_SECONDS),
    }
    assert env["AWS_LWA_INVOKE_MODE"] == "response_stream", env

    store = DynamoStore(
        emulator.client("dynamodb"), backend.tables["BudgetTable"], backend.tables["LedgerTable"]
    )
    plaintext = seed_api_key(emulator, backend)
    key = store.get_api_key(hash_api_key(plaintext))
    assert key is not None
    credit_wallet(store, key.account_id, Bucket.CREDIT, "5.00", source="test", memo="top-up")

    log = tmp_path / "run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(entry)], cwd=code_dir, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_for_port(port, process, log)
        yield Proxy(f"http://127.0.0.1:{port}", plaintext, key.account_id, store, upstream)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _chat(stream: bool = True, max_tokens: int = 8) -> dict[str, object]:
    return {
        "model": "demo-official",
        "messages": [{"role": "user", "content": "Tell me about the ledger."}],
        "stream": stream,
        "max_tokens": max_tokens,
    }


def _content(line: str) -> str:
    """The text a `data:` line of a chat stream carries ('' for any other line)."""
    if not line.startswith("data: {"):
        return ""
    choices = json.loads(line.removeprefix("data: ")).get("choices") or [{}]
    return str((choices[0].get("delta") or {}).get("content") or "")


def test_the_built_proxy_streams_tokens_as_the_upstream_paces_them(proxy: Proxy) -> None:
    # Given an upstream that writes one token every 0.3 s
    gap = 0.3
    proxy.upstream.always(UPSTREAM_MODEL, Fault("paced", seconds=0.0, gap=gap))
    client = OpenAI(base_url=f"{proxy.base_url}/v1", api_key=proxy.api_key, max_retries=0)

    # When the official SDK streams a chat completion of 8 tokens through the artefact
    started = time.monotonic()
    arrivals = [
        time.monotonic() - started
        for chunk in client.chat.completions.create(**_chat())  # type: ignore[call-overload]
        if chunk.choices and chunk.choices[0].delta.content
    ]

    # Then each token arrives as it is written, not all at once at the end
    assert len(arrivals) == 8, arrivals
    produced_last = 8 * gap  # when the upstream wrote its last token, at the earliest
    assert arrivals[0] < produced_last / 2, arrivals
    assert arrivals[-1] - arrivals[0] >= 0.8 * 7 * gap, arrivals
    gaps = sorted(b - a for a, b in itertools.pairwise(arrivals))
    assert gaps[len(gaps) // 2] >= gap / 2, gaps  # the median gap follows the upstream's


def test_a_slow_first_token_gets_keep_alive_comments(proxy: Proxy) -> None:
    # Given a model that thinks 1.5 s before its first event (6 keep-alive intervals)
    proxy.upstream.always(UPSTREAM_MODEL, Fault("paced", seconds=1.5, gap=0.01))

    # When a client streams through the artefact
    lines: list[str] = []
    with httpx.stream(
        "POST",
        f"{proxy.base_url}/v1/chat/completions",
        json=_chat(),
        headers={"Authorization": f"Bearer {proxy.api_key}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        lines = [line for line in response.iter_lines() if line]

    # Then comments kept the connection busy while it waited, and the answer followed in full
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data:"))
    assert lines[:first_data].count(": keep-alive") >= 3, lines[:first_data]
    assert "".join(_content(line) for line in lines).strip(), lines
    assert lines[-1] == "data: [DONE]", lines[-3:]
    receipt = proxy.receipt(request_id)
    assert (receipt.status, receipt.settlement) == ("succeeded", "settled"), receipt
    assert receipt.usage.output_tokens == 8, receipt.usage


def test_the_openai_sdk_reads_through_keep_alives(proxy: Proxy) -> None:
    proxy.upstream.always(UPSTREAM_MODEL, Fault("paced", seconds=1.0, gap=0.4))
    client = OpenAI(base_url=f"{proxy.base_url}/v1", api_key=proxy.api_key, max_retries=0)

    stream = client.chat.completions.create(**_chat(max_tokens=4))  # type: ignore[call-overload]
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert len(text.split()) == 4, text


def test_a_mid_stream_disconnect_charges_what_was_delivered_and_releases_the_hold(
    proxy: Proxy,
) -> None:
    # Given an upstream writing a token every 0.4 s, and the wallet before the call
    proxy.upstream.always(UPSTREAM_MODEL, Fault("paced", seconds=0.0, gap=0.4))
    before = proxy.store.get_wallet(proxy.account_id, Bucket.CREDIT)

    # When the client reads three tokens and hangs up
    delivered: list[str] = []
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST",
            f"{proxy.base_url}/v1/chat/completions",
            json=_chat(max_tokens=12),
            headers={"Authorization": f"Bearer {proxy.api_key}"},
        ) as response,
    ):
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if text := _content(line):
                delivered.append(text)
            if len(delivered) == 3:
                break

    # Then the upstream is closed, the three tokens are charged and the hold released
    receipt = proxy.receipt(request_id)
    assert receipt.status == "partial", receipt
    assert receipt.usage.output_tokens == len(delivered) == 3, receipt.usage
    after = proxy.store.get_wallet(proxy.account_id, Bucket.CREDIT)
    assert after.held == 0, after
    assert before.balance - after.balance == receipt.charge > 0, (before, after, receipt)
    entries = proxy.store.list_entries(proxy.account_id, Bucket.CREDIT)
    assert entries[-1].amount == -receipt.charge, entries[-1]
    deadline = time.monotonic() + 5
    while not proxy.upstream.calls[-1].closed_early:
        assert time.monotonic() < deadline, "the upstream stream was never closed"
        time.sleep(0.05)
