"""Fallback between routes, against the fake providers and the emulated store: the hold moves
to the fallback route's price and bucket before it is called, a key never crosses into a
bucket it may not use, the retry ceiling and route health bound the calls, and every attempt
is on the receipt."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from forge.domain.catalog import Catalog
from forge.domain.errors import BudgetExceeded, FallbackNotAllowed, UpstreamUnavailable
from forge.domain.ids import new_id
from forge.domain.money import Bucket, RouteType, Usage
from forge.domain.records import KeyCaps, utcnow
from forge.domain.routing import RouteHealth
from forge.ledger.reconcile import reconcile
from forge.providers.openai import OpenAICompatProvider
from forge.store.dynamo.store import DynamoStore
from forge.wiring import get_store
from forge_tools.emulator import Resources
from tests.fakes import Fault
from tests.integration.providers_kit import (
    Fakes,
    Sleeps,
    balances,
    call,
    catalog_for_tests,
    chat,
    cost,
    customer,
    gateway,
    reported_usage,
    route,
    run,
    start_fakes,
    stream,
    text_of,
)

# "mixed": an official OpenAI route first, then a cheaper routed Claude channel (RMB wallet),
# priced differently so the charge shows which one served.
MIXED = {
    "id": "mixed",
    "routes": [
        route("openai", "primary"),
        route("anthropic", "secondary", "routed", input="2", cached_input="0.2", output="7"),
    ],
}
# "same-bucket": two official routes; the second is dearer, so its hold is larger.
SAME_BUCKET = {
    "id": "same-bucket",
    "routes": [route("gemini", "flash"), route("openai", "dear", input="3", output="20")],
}


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    yield from start_fakes()


@pytest.fixture
def store(aws_stack: Resources, fakes: Fakes) -> DynamoStore:
    fakes.reset()
    return get_store()


def catalog() -> Catalog:
    return catalog_for_tests(MIXED, SAME_BUCKET)


def assert_conserved(store: DynamoStore) -> None:
    report = reconcile(store, utcnow())
    assert report.ok, report.drifts
    assert report.pending_holds == 0


def test_the_secondary_serves_when_the_primary_fails_charged_at_its_price_in_its_bucket(
    store: DynamoStore, fakes: Fakes
) -> None:
    key = customer(store)
    fakes.openai.always("primary", Fault("status", 500))
    gw = gateway(store, fakes, catalog())

    body, receipt = run(call(gw, key, chat("mixed", max_tokens=30)))

    assert body["model"].startswith("secondary")  # the model field says who served
    assert [(a.route, a.status, a.action) for a in receipt.attempts] == [
        ("openai:primary", 500, "retry"),
        ("openai:primary", 500, "fallback"),
        ("anthropic:secondary", 200, None),
    ]
    assert [a.bucket for a in receipt.attempts] == [Bucket.CREDIT, Bucket.CREDIT, Bucket.RMB]
    assert receipt.final_route == "anthropic:secondary" and receipt.bucket is Bucket.RMB
    usage = reported_usage("anthropic", fakes.anthropic.calls[-1].usage or {})
    assert receipt.prices is not None and receipt.prices.output == 7_000_000
    assert receipt.charge == cost(usage, receipt.prices) > 0
    assert balances(store, key) == {
        Bucket.CREDIT: (1_000_000, 0),  # the failed official route charged nothing
        Bucket.RMB: (1_000_000 - receipt.charge, 0),
    }
    assert "fell back to anthropic:secondary" in (receipt.note or "")
    assert_conserved(store)


def test_a_stream_that_fails_before_its_first_byte_falls_back(
    store: DynamoStore, fakes: Fakes
) -> None:
    key = customer(store)
    fakes.openai.fail("primary", Fault("status", 503), Fault("malformed"))
    gw = gateway(store, fakes, catalog())

    items = run(stream(gw, key, chat("mixed", stream=True)))

    assert text_of(items) == fakes.anthropic.calls[-1].text
    end = items[-1]
    assert end.kind == "end" and end.receipt is not None
    assert [a.reason for a in end.receipt.attempts[:2]] == ["overloaded", "malformed_stream_chunk"]
    assert end.payload["receipt"]["route"] == "anthropic:secondary"
    assert end.payload["receipt"]["bucket"] == "rmb"
    usage = reported_usage("anthropic", fakes.anthropic.calls[-1].usage or {})
    assert end.receipt.charge == cost(usage, end.receipt.prices)  # type: ignore[arg-type]
    assert balances(store, key)[Bucket.RMB] == (1_000_000 - end.receipt.charge, 0)
    assert_conserved(store)


def test_a_fallback_into_a_bucket_the_key_may_not_use_is_refused_clearly(
    store: DynamoStore, fakes: Fakes
) -> None:
    key = customer(store, route_types=frozenset({RouteType.OFFICIAL}))
    fakes.openai.always("primary", Fault("status", 500))
    gw = gateway(store, fakes, catalog())
    request_id = new_id("req")

    with pytest.raises(FallbackNotAllowed) as refused:
        run(call(gw, key, chat("mixed"), request_id))

    error = refused.value
    assert error.status == 403 and error.code == "fallback_route_type_not_allowed"
    assert error.details == {
        "failed_route": "openai:primary",
        "refused_route": "anthropic:secondary",
        "refused_route_type": "routed",
        "refused_bucket": "rmb",
    }
    assert "may not use" in error.message and "nothing was charged" in error.message
    assert fakes.anthropic.calls == []  # never called
    receipt = store.get_receipt(key.account_id, request_id)
    assert receipt is not None and receipt.status == "failed" and receipt.charge == 0
    assert receipt.error_code == "fallback_route_type_not_allowed"
    assert balances(store, key) == {Bucket.CREDIT: (1_000_000, 0), Bucket.RMB: (1_000_000, 0)}
    assert_conserved(store)


def test_a_fallback_its_bucket_cannot_pay_for_is_refused_and_releases_the_first_hold(
    store: DynamoStore, fakes: Fakes
) -> None:
    key = customer(store, rmb="0")
    fakes.openai.always("primary", Fault("status", 500))
    gw = gateway(store, fakes, catalog())
    request_id = new_id("req")

    with pytest.raises(BudgetExceeded) as refused:
        run(call(gw, key, chat("mixed"), request_id))

    assert refused.value.details["envelope"] == "bucket:rmb"
    assert fakes.anthropic.calls == []
    receipt = store.get_receipt(key.account_id, request_id)
    assert (
        receipt is not None and receipt.charge == 0 and "fallback refused" in (receipt.note or "")
    )
    assert balances(store, key)[Bucket.CREDIT] == (1_000_000, 0)
    assert_conserved(store)


def test_a_dearer_fallback_in_the_same_bucket_grows_the_hold_within_the_keys_caps(
    store: DynamoStore, fakes: Fakes
) -> None:
    key = customer(store)
    key = store.update_api_key(
        key.account_id, key.key_id, caps={Bucket.CREDIT: KeyCaps(daily=900_000)}
    )
    fakes.gemini.always("flash", Fault("status", 503))
    gw = gateway(store, fakes, catalog())

    _, receipt = run(call(gw, key, chat("same-bucket", max_tokens=100)))

    assert receipt.final_route == "openai:dear" and receipt.bucket is Bucket.CREDIT
    assert receipt.hold > 100 * 5  # sized at the dearer route's output price (20 a token)
    usage = reported_usage("openai", fakes.openai.calls[-1].usage or {})
    assert receipt.charge == cost(usage, receipt.prices)  # type: ignore[arg-type]
    assert balances(store, key)[Bucket.CREDIT] == (1_000_000 - receipt.charge, 0)
    envelopes = [i for i in store.scan_budget() if str(i["pk"]).startswith("ENV#KEY#")]
    assert [(e["consumed"], e["held"], e["settled"]) for e in envelopes] == [
        (receipt.charge, 0, receipt.charge)
    ]
    assert_conserved(store)


def test_a_retry_after_too_long_to_wait_for_falls_back_at_once(
    store: DynamoStore, fakes: Fakes
) -> None:
    key = customer(store)
    sleeps = Sleeps()
    fakes.openai.fail("primary", Fault("status", 429, retry_after="120"))
    gw = gateway(store, fakes, catalog(), sleeps=sleeps)

    _, receipt = run(call(gw, key, chat("mixed")))

    assert sleeps.waits == []
    assert [(a.status, a.action) for a in receipt.attempts] == [(429, "fallback"), (200, None)]


def test_the_keys_retry_ceiling_bounds_every_call_of_a_request(
    store: DynamoStore, fakes: Fakes
) -> None:
    key = customer(store)
    key = store.update_api_key(key.account_id, key.key_id, max_upstream_attempts=2)
    fakes.openai.always("primary", Fault("status", 500))
    gw = gateway(store, fakes, catalog())
    request_id = new_id("req")

    with pytest.raises(UpstreamUnavailable):
        run(call(gw, key, chat("mixed"), request_id))

    assert len(fakes.openai.calls) == 2 and fakes.anthropic.calls == []
    receipt = store.get_receipt(key.account_id, request_id)
    assert receipt is not None
    assert [a.action for a in receipt.attempts] == ["retry", "give_up"]
    assert "ceiling" in (receipt.note or "")
    assert balances(store, key)[Bucket.CREDIT] == (1_000_000, 0)


def test_a_route_that_keeps_failing_is_skipped_for_a_while(
    store: DynamoStore, fakes: Fakes
) -> None:
    key = customer(store)
    now = [1000.0]
    health = RouteHealth(threshold=2, cooldown=60, clock=lambda: now[0])
    fakes.openai.always("primary", Fault("status", 500))
    gw = gateway(store, fakes, catalog(), health=health)

    run(call(gw, key, chat("mixed")))  # two failed calls mark the primary unhealthy
    assert len(fakes.openai.calls) == 2

    _, receipt = run(call(gw, key, chat("mixed")))
    assert len(fakes.openai.calls) == 2  # not called again
    assert [(a.route, a.outcome) for a in receipt.attempts] == [
        ("openai:primary", "skipped"),
        ("anthropic:secondary", "ok"),
    ]

    now[0] += 61  # the cooldown is over: the primary is tried again
    run(call(gw, key, chat("mixed")))
    assert len(fakes.openai.calls) == 4


def test_a_cut_stream_after_the_first_byte_does_not_fall_back(
    store: DynamoStore, fakes: Fakes
) -> None:
    key = customer(store)
    fakes.openai.fail("primary", Fault("cut", after=3))
    gw = gateway(store, fakes, catalog())

    items = run(stream(gw, key, chat("mixed", stream=True)))

    assert items[-1].kind == "error" and fakes.anthropic.calls == []
    receipt = items[-1].receipt
    assert receipt is not None and receipt.final_route == "openai:primary"
    assert receipt.usage.output_tokens == 2 and receipt.charge > 0
    expected = cost(Usage(input_tokens=receipt.usage.input_tokens, output_tokens=2), receipt.prices)  # type: ignore[arg-type]
    assert receipt.charge == expected
    assert_conserved(store)


def test_a_connect_error_is_retried_then_the_next_route_serves(
    store: DynamoStore, fakes: Fakes
) -> None:
    key = customer(store)
    sleeps = Sleeps()
    gw = gateway(store, fakes, catalog(), sleeps=sleeps)
    # Nothing listens on port 9 (discard): the official route cannot even connect.
    gw._providers["openai"] = OpenAICompatProvider("http://127.0.0.1:9/v1", "k", timeout=2)  # type: ignore[index]

    _, receipt = run(call(gw, key, chat("mixed")))

    assert [(a.status, a.reason, a.action) for a in receipt.attempts] == [
        (None, "connect_error", "retry"),
        (None, "connect_error", "fallback"),
        (200, None, None),
    ]
    assert len(sleeps.waits) == 1 and receipt.bucket is Bucket.RMB
