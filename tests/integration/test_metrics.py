"""The money path's metrics as Powertools writes them (CloudWatch EMF lines on stdout): paid
calls through the in-process app and the demo provider, over the emulated store. A charge, a
refusal, an upstream failure and its fallback, a settle the store failed and a sweep each
show up with their dimensions; a meter that fails never breaks a paid call."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import anyio
import httpx
import pytest

from forge import wiring
from forge.api import create_app
from forge.api.deps import get_gateway, get_keys
from forge.domain.catalog import load_catalog
from forge.domain.errors import BudgetStoreUnavailable
from forge.domain.ids import new_id
from forge.domain.metrics import Metric
from forge.domain.money import Bucket
from forge.domain.records import ApiKey, Hold, HoldStatus, KeyCaps, LedgerKind, Receipt, utcnow
from forge.domain.requests import ChatCompletionRequest
from forge.gateway import Gateway, RequestLimits
from forge.gateway.auth import Keys
from forge.ledger.reconcile import reconcile
from forge.ledger.sweeper import sweep
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.ports import Meter
from forge.providers.demo import create_demo_app
from forge.providers.openai import OpenAICompatProvider
from forge.store.dynamo.store import DynamoStore
from forge.telemetry import EmfMeter
from forge_tools.emulator import Resources
from forge_tools.lambda_local import LambdaContext

NAMESPACE, SERVICE = "TokensForge", "tokens-forge"


@pytest.fixture
def metrics_env(aws_stack: Resources, monkeypatch: pytest.MonkeyPatch) -> Resources:
    """The stack's environment with template.yaml's metric settings."""
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", SERVICE)
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)
    wiring.clear()
    return aws_stack


def emf_documents(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The EMF documents printed since the last read (other stdout lines are skipped)."""
    lines = capsys.readouterr().out.splitlines()
    return [json.loads(line) for line in lines if line.startswith("{") and '"_aws"' in line]


def metric(documents: list[dict[str, Any]], name: str, **dimensions: str) -> list[float]:
    """Every value of `name` emitted with exactly `dimensions` (and the service), each from a
    document whose EMF directive declares it in the namespace with that dimension set."""
    values: list[float] = []
    expected = {**dimensions, "service": SERVICE}
    for doc in documents:
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        (declared,) = directive["Dimensions"]
        if name not in names(doc) or {d: doc[d] for d in declared} != expected:
            continue
        assert directive["Namespace"] == NAMESPACE
        value = doc[name]
        values += value if isinstance(value, list) else [value]
    return values


def names(document: dict[str, Any]) -> set[str]:
    return {m["Name"] for m in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]}


def demo_provider() -> OpenAICompatProvider:
    return OpenAICompatProvider(
        "http://demo.test/v1", "k", transport=httpx.ASGITransport(app=create_demo_app())
    )


async def no_wait(_: float) -> None:
    return None


def gateway_over(store: Any, meter: Meter) -> Gateway:
    return Gateway(
        store,
        {"demo": demo_provider()},
        load_catalog(),
        hold_ttl_seconds=960,
        sleep=no_wait,
        meter=meter,
    )


def customer(store: DynamoStore, caps: dict[Bucket, KeyCaps] | None = None) -> tuple[str, ApiKey]:
    account_id = create_account(store, "metrics test")
    credit_wallet(store, account_id, Bucket.CREDIT, "1", source="test", memo="fund")
    return issue_key(store, account_id, caps=caps)


def post(
    gateway: Gateway, plaintext: str, body: dict[str, Any], keys: Keys | None = None
) -> httpx.Response:
    """One chat completion through the in-process app, served by `gateway` (and its key
    looked up by `keys`, else by the process's own)."""
    app = create_app()
    app.dependency_overrides[get_gateway] = lambda: gateway
    if keys is not None:
        app.dependency_overrides[get_keys] = lambda: keys

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gw",
            headers={"Authorization": f"Bearer {plaintext}"},
        ) as client:
            return await client.post("/v1/chat/completions", json=body)

    return asyncio.run(send())


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "count me"}], **extra}


def stored_receipt(store: DynamoStore, key: ApiKey, response: httpx.Response) -> Receipt:
    receipt = store.get_receipt(key.account_id, response.headers["x-request-id"])
    assert receipt is not None
    return receipt


def charges(store: DynamoStore, key: ApiKey, bucket: Bucket = Bucket.CREDIT) -> list[int]:
    entries = store.list_entries(key.account_id, bucket)
    return [-e.amount for e in entries if e.kind is LedgerKind.CHARGE]


def test_a_charge_is_counted_in_its_bucket_with_its_exact_micros(
    metrics_env: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    store = wiring.get_store()
    plaintext, key = customer(store)
    assert isinstance(wiring.get_meter(), EmfMeter)  # the namespace turns EMF on
    gateway = gateway_over(store, wiring.get_meter())
    capsys.readouterr()

    response = post(gateway, plaintext, chat("demo-official"))

    assert response.status_code == 200
    receipt = stored_receipt(store, key, response)
    assert receipt.charge > 0 and charges(store, key) == [receipt.charge]
    documents = emf_documents(capsys)
    assert metric(documents, "Charges", bucket="credit") == [1.0]
    assert metric(documents, "ChargedMicros", bucket="credit") == [float(receipt.charge)]
    (doc,) = [d for d in documents if "Charges" in d]
    units = {m["Name"]: m["Unit"] for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units == {"Charges": "Count", "ChargedMicros": "None"}
    # Nothing else happened to this call, and nothing about the caller is in the line.
    assert {name for d in documents for name in names(d)} == {"Charges", "ChargedMicros"}
    assert key.account_id not in json.dumps(documents) and plaintext not in json.dumps(documents)


def test_a_refused_reservation_is_counted_by_reason_and_envelope(
    metrics_env: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    store = wiring.get_store()
    plaintext, key = customer(store, caps={Bucket.CREDIT: KeyCaps(daily=1)})
    gateway = gateway_over(store, wiring.get_meter())
    capsys.readouterr()

    capped = post(gateway, plaintext, chat("demo-official"))
    unknown = post(gateway, plaintext, chat("no-such-model"))

    assert capped.status_code == 402 and capped.json()["error"]["code"] == "budget_exceeded"
    assert unknown.status_code == 404
    documents = emf_documents(capsys)
    assert metric(documents, "Refusals", reason="budget_exceeded", envelope="key:daily") == [1.0]
    assert metric(documents, "Refusals", reason="model_not_found", envelope="none") == [1.0]
    assert metric(documents, "Charges", bucket="credit") == []
    assert charges(store, key) == []


class KeysUnreadable:
    """The same store, except that looking up a key fails as an unreachable store does."""

    def __init__(self, store: DynamoStore) -> None:
        self._store = store

    def get_api_key(self, key_hash: str) -> ApiKey | None:
        raise BudgetStoreUnavailable("The budget store is unavailable")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_store_outage_at_authentication_is_counted_with_the_refusals(
    metrics_env: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    store = wiring.get_store()
    plaintext, _ = customer(store)
    gateway = gateway_over(store, wiring.get_meter())
    meter = wiring.get_meter()
    keys = Keys(KeysUnreadable(store), time.monotonic, anyio.to_thread.run_sync, meter)
    capsys.readouterr()

    response = post(gateway, plaintext, chat("demo-official"), keys)

    assert response.status_code == 503  # fails closed
    documents = emf_documents(capsys)
    refused = metric(documents, "Refusals", reason="budget_store_unavailable", envelope="none")
    assert refused == [1.0]


def test_an_upstream_failure_and_the_fallback_that_served_are_counted(
    metrics_env: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    store = wiring.get_store()
    plaintext, key = customer(store)
    gateway = gateway_over(store, wiring.get_meter())
    capsys.readouterr()

    response = post(gateway, plaintext, chat("demo-fallback"))  # demo-fail-503, then demo

    assert response.status_code == 200
    receipt = stored_receipt(store, key, response)
    failed = [a for a in receipt.attempts if a.outcome == "error"]
    assert [a.status for a in failed] == [503] * len(failed) and failed
    assert receipt.final_route == "demo:demo-official-1"
    documents = emf_documents(capsys)
    assert metric(documents, "UpstreamErrors", provider="demo") == [float(len(failed))]
    assert metric(documents, "Fallbacks") == [1.0]
    assert metric(documents, "ChargedMicros", bucket="credit") == [float(receipt.charge)]


def test_a_call_no_route_served_counts_its_upstream_errors_and_no_charge(
    metrics_env: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    store = wiring.get_store()
    plaintext, key = customer(store)
    gateway = gateway_over(store, wiring.get_meter())
    capsys.readouterr()

    response = post(gateway, plaintext, chat("demo-unavailable"))

    assert response.status_code == 502
    receipt = stored_receipt(store, key, response)
    documents = emf_documents(capsys)
    failed = [a for a in receipt.attempts if a.outcome == "error"]
    assert metric(documents, "UpstreamErrors", provider="demo") == [float(len(failed))]
    assert metric(documents, "Fallbacks") == []
    assert metric(documents, "Charges", bucket="credit") == []


def cut_stream(request: httpx.Request) -> httpx.Response:
    """Two chunks of an answer, then the connection ends: no finish, no usage, no [DONE]."""
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "half "}, "finish_reason": None}],
    }
    body = "".join(f"data: {json.dumps(chunk)}\n\n" for _ in range(2))
    return httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})


def test_a_stream_the_upstream_cut_counts_an_upstream_error_and_its_charge(
    metrics_env: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    store = wiring.get_store()
    plaintext, key = customer(store)
    cut = OpenAICompatProvider("http://up.test/v1", "k", transport=httpx.MockTransport(cut_stream))
    gateway = Gateway(
        store, {"demo": cut}, load_catalog(), hold_ttl_seconds=960, meter=wiring.get_meter()
    )
    capsys.readouterr()

    response = post(gateway, plaintext, chat("demo-official", stream=True))

    assert response.status_code == 200 and "upstream_stream_interrupted" in response.text
    receipt = stored_receipt(store, key, response)
    assert receipt.status == "partial" and receipt.charge > 0
    documents = emf_documents(capsys)
    assert metric(documents, "UpstreamErrors", provider="demo") == [1.0]
    assert metric(documents, "ChargedMicros", bucket="credit") == [float(receipt.charge)]
    assert metric(documents, "Fallbacks") == []


class SettleFails:
    """The same store, except that settling fails as an unreachable store does."""

    def __init__(self, store: DynamoStore) -> None:
        self._store = store

    def settle(self, hold: Hold, charge: int, receipt: Receipt) -> Receipt:
        raise BudgetStoreUnavailable("The budget store is unavailable")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_settle_the_store_failed_is_counted_then_charged_by_the_sweeper(
    metrics_env: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    store = wiring.get_store()
    plaintext, key = customer(store)
    gateway = gateway_over(SettleFails(store), wiring.get_meter())
    capsys.readouterr()

    response = post(gateway, plaintext, chat("demo-official"))

    assert response.status_code == 200
    hold = store.get_hold(response.headers["x-request-id"])  # pending, its outcome recorded
    assert hold is not None and hold.status is HoldStatus.PENDING and hold.outcome is not None
    receipt = hold.outcome.receipt
    assert receipt.settlement == "deferred" and receipt.charge > 0
    documents = emf_documents(capsys)
    assert metric(documents, "DeferredSettles") == [1.0]
    assert metric(documents, "Charges", bucket="credit") == []  # not charged yet...

    later = utcnow() + timedelta(seconds=961)
    report = sweep(store, later, wiring.get_meter())

    assert report.settled == [hold.request_id]
    documents = emf_documents(capsys)
    assert metric(documents, "HoldsSwept") == [1.0]
    assert metric(documents, "SweepFailures") == [0.0]
    # ...charged when the sweeper settles the known outcome, and counted then.
    assert metric(documents, "ChargedMicros", bucket="credit") == [float(receipt.charge)]
    assert charges(store, key) == [receipt.charge]
    assert reconcile(store, later).ok


def test_the_sweeper_function_counts_the_holds_it_swept(
    metrics_env: Resources,
    capsys: pytest.CaptureFixture[str],
    load_handler: Callable[[str], Callable[..., Any]],
    lambda_context: LambdaContext,
) -> None:
    store = wiring.get_store()
    _, key = customer(store)
    expired = Gateway(store, {"demo": demo_provider()}, load_catalog(), hold_ttl_seconds=-1)
    for _ in range(3):  # three requests that died holding money, already past their expiry
        asyncio.run(reserved(expired, key))
    capsys.readouterr()

    result = load_handler("sweeper")({}, lambda_context)

    assert len(result["voided"]) == 3
    documents = emf_documents(capsys)
    assert metric(documents, "HoldsSwept") == [3.0]
    assert metric(documents, "SweepFailures") == [0.0]

    load_handler("sweeper")({}, lambda_context)  # nothing left: still reports, with 0
    assert metric(emf_documents(capsys), "HoldsSwept") == [0.0]


async def reserved(gateway: Gateway, key: ApiKey) -> None:
    request = ChatCompletionRequest.model_validate(chat("demo-official", max_tokens=16))
    plan = await gateway.plan(key, request, new_id("req"), RequestLimits())
    await gateway.reserve(plan)


class ExpiredHoldsFail:
    """The same store, except that listing expired holds fails."""

    def __init__(self, store: DynamoStore) -> None:
        self._store = store

    def expired_holds(self, now: Any) -> list[Hold]:
        raise BudgetStoreUnavailable("The budget store is unavailable")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_sweep_the_store_failed_is_counted_and_still_raises(
    metrics_env: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()

    with pytest.raises(BudgetStoreUnavailable):
        sweep(ExpiredHoldsFail(wiring.get_store()), utcnow(), wiring.get_meter())

    documents = emf_documents(capsys)
    assert metric(documents, "SweepFailures") == [1.0]
    assert metric(documents, "HoldsSwept") == [0.0]


class BrokenMeter:
    """A meter whose every emit fails (stdout closed, a Powertools schema error...)."""

    def __init__(self) -> None:
        self.calls = 0

    def emit(self, metrics: Sequence[Metric]) -> None:
        self.calls += 1
        raise OSError("stdout is gone")


@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_meter_never_breaks_a_paid_call(
    aws_stack: Resources, caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    store = wiring.get_store()
    plaintext, key = customer(store)
    meter = BrokenMeter()
    gateway = gateway_over(store, meter)

    served = post(gateway, plaintext, chat("demo-fallback", stream=stream))
    refused = post(gateway, plaintext, chat("no-such-model"))

    assert served.status_code == 200 and refused.status_code == 404
    receipt = stored_receipt(store, key, served)
    assert receipt.status == "succeeded" and receipt.settlement == "settled"
    assert charges(store, key) == [receipt.charge] and receipt.charge > 0
    assert meter.calls == 2  # the served call's metrics, then the refusal's: both lost
    assert [r.message for r in caplog.records if r.name == "forge.ports"] == [
        "metrics_not_emitted",
        "metrics_not_emitted",
    ]
    assert reconcile(store, utcnow()).ok
