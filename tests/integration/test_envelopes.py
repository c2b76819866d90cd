"""Budget envelopes against the emulated store: each one stops spend at its limit, names
itself when it does, holds under concurrency, and resizes a worst case that does not fit."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from forge.domain.catalog import load_catalog
from forge.domain.envelopes import envelopes_for
from forge.domain.errors import BudgetExceeded
from forge.domain.ids import new_id
from forge.domain.money import Bucket
from forge.domain.records import ApiKey, Hold, KeyCaps, ProjectCaps, utcnow
from forge.domain.requests import ChatCompletionRequest
from forge.gateway import MIN_OUTPUT_TOKENS, Gateway, RequestLimits
from forge.ledger.reconcile import reconcile
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.providers.openai import OpenAICompatProvider
from forge.store.dynamo.store import DynamoStore
from forge.wiring import get_store
from forge_tools.emulator import Resources
from tests.integration.test_budget_store import container, receipt_for


@pytest.fixture
def aws_stack(aws_stack_or_twin: Resources) -> Resources:
    """Every test of this module runs on the emulator and on the in-memory twin."""
    return aws_stack_or_twin


NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def customer(store: DynamoStore, caps: KeyCaps | None = None, credit: str = "10") -> ApiKey:
    account_id = create_account(store, "envelope test")
    credit_wallet(store, account_id, Bucket.CREDIT, credit, source="test", memo="fund")
    return issue_key(store, account_id, caps={Bucket.CREDIT: caps} if caps else None)[1]


def hold_for(
    key: ApiKey,
    amount: int,
    *,
    project: ProjectCaps | None = None,
    run_id: str | None = None,
    run_budget: int | None = None,
    now: datetime = NOW,
) -> Hold:
    return Hold(
        request_id=new_id("req"),
        account_id=key.account_id,
        key_id=key.key_id,
        project_id=key.project_id,
        bucket=Bucket.CREDIT,
        amount=amount,
        expires_at=utcnow() + timedelta(minutes=16),
        envelopes=envelopes_for(
            key, project or ProjectCaps(), Bucket.CREDIT, now, run_id, run_budget
        ),
    )


def assert_reconciled(store: DynamoStore) -> None:
    report = reconcile(store, utcnow())
    assert report.ok, report.drifts


@pytest.mark.parametrize(
    ("caps", "envelope"),
    [
        (KeyCaps(daily=1000), "key:daily"),
        (KeyCaps(monthly=1000), "key:monthly"),
        (KeyCaps(total=1000), "key:total"),
    ],
)
def test_each_key_cap_stops_spend_at_its_limit_and_names_itself(
    aws_stack: Resources, caps: KeyCaps, envelope: str
) -> None:
    store = get_store()
    key = customer(store, caps)
    first = hold_for(key, 600)
    store.reserve(first)
    store.settle(first, 600, receipt_for(first))
    with pytest.raises(BudgetExceeded) as refused:
        store.reserve(hold_for(key, 401))
    assert refused.value.details["envelope"] == envelope
    assert refused.value.details["limit"] == "0.001000"
    assert refused.value.details["remaining"] == "0.000400"
    store.reserve(hold_for(key, 400))  # exactly what is left still fits
    assert_reconciled_except_pending(store, 1)


def assert_reconciled_except_pending(store: DynamoStore, pending: int) -> None:
    report = reconcile(store, utcnow())
    assert report.ok, report.drifts
    assert report.pending_holds == pending


def test_daily_window_rolls_over_by_itself(aws_stack: Resources) -> None:
    store = get_store()
    key = customer(store, KeyCaps(daily=1000))
    store.reserve(hold_for(key, 1000, now=NOW))
    with pytest.raises(BudgetExceeded):
        store.reserve(hold_for(key, 1, now=NOW))
    store.reserve(hold_for(key, 1000, now=NOW + timedelta(days=1)))  # a new day, a new item


def test_project_caps_are_shared_by_the_projects_keys(aws_stack: Resources) -> None:
    store = get_store()
    key_a = customer(store)
    key_b = issue_key(store, key_a.account_id, key_a.project_id)[1]
    project = ProjectCaps(daily=900)
    store.reserve(hold_for(key_a, 500, project=project))
    with pytest.raises(BudgetExceeded) as refused:
        store.reserve(hold_for(key_b, 500, project=project))
    assert refused.value.details["envelope"] == "project:daily"


def test_a_run_budget_header_lowers_but_never_raises_the_keys(aws_stack: Resources) -> None:
    store = get_store()
    key = customer(store, KeyCaps(run_budget=1000))
    raised = hold_for(key, 1500, run_id="run-1", run_budget=5000)  # asks for more: ignored
    with pytest.raises(BudgetExceeded) as refused:
        store.reserve(raised)
    assert refused.value.details == {
        "envelope": "run",
        "limit": "0.001000",
        "remaining": "0.001000",
        "requested": "0.001500",
    }
    store.reserve(hold_for(key, 300, run_id="run-1", run_budget=400))
    with pytest.raises(BudgetExceeded):  # lowered to 400 for this call: 300 + 200 > 400
        store.reserve(hold_for(key, 200, run_id="run-1", run_budget=400))
    store.reserve(hold_for(key, 200, run_id="run-2", run_budget=400))  # another run


def test_concurrent_holds_never_exceed_any_envelope(aws_stack: Resources) -> None:
    store = get_store()
    key = customer(store, KeyCaps(daily=5000, run_budget=3000))
    project = ProjectCaps(monthly=4000)

    def attempt(_: int) -> tuple[int, str | None]:
        store = container(get_store())  # every request from its own container
        hold = hold_for(key, 250, project=project, run_id="agent-run")
        try:
            store.reserve(hold)
        except BudgetExceeded as refused:
            return 0, refused.details["envelope"]
        store.settle(hold, 200, receipt_for(hold))
        return 200, None

    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(attempt, range(40)))
    charged = sum(amount for amount, _ in outcomes)
    refusals = {envelope for _, envelope in outcomes if envelope}
    assert refusals == {"run"}  # the tightest envelope stopped it, and only that one
    items = {(i["pk"], i["sk"]): i for i in store.scan_budget() if str(i["pk"]).startswith("ENV#")}
    for item in items.values():
        assert item["consumed"] == item["settled"] <= item["limit"]
        assert item["held"] == 0
    run = next(i for (pk, _), i in items.items() if pk.startswith("ENV#RUN#"))
    assert run["settled"] == charged
    assert 2750 - 12 * 250 < charged <= 3000
    assert_reconciled(store)


def test_a_worst_case_that_does_not_fit_is_resized_to_what_is_left(aws_stack: Resources) -> None:
    store = get_store()
    route = load_catalog().models[0].routes[0]
    output_price = route.effective_prices.output
    key = customer(store, KeyCaps(daily=output_price * 100 // 1_000_000 + 5_000))
    upstream_bodies: list[dict] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        import json

        upstream_bodies.append(json.loads(request.content))
        return httpx.Response(
            200, json={"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}
        )

    provider = OpenAICompatProvider(
        "http://up.test/v1", "k", transport=httpx.MockTransport(upstream)
    )
    gateway = Gateway(store, {"demo": provider}, load_catalog(), hold_ttl_seconds=960)
    request = ChatCompletionRequest.model_validate(
        {"model": "demo-official", "messages": [{"role": "user", "content": "hi"}]}
    )

    async def run() -> int:
        plan = await gateway.plan(key, request, new_id("req"), RequestLimits())
        assert plan.max_output == route.max_output_tokens  # no max_tokens: the route's maximum
        await gateway.reserve(plan)
        await gateway.complete(plan)
        return plan.max_output

    granted = asyncio.run(run())
    assert MIN_OUTPUT_TOKENS <= granted < route.max_output_tokens
    assert upstream_bodies[0]["max_tokens"] == granted  # the upstream cannot exceed the hold
    receipt_note = store.get_receipt(key.account_id, _last_request(store, key)).note or ""
    assert f"max_tokens lowered from {route.max_output_tokens} to {granted} by key:daily" in (
        receipt_note
    )
    assert_reconciled(store)


def test_too_little_left_for_a_useful_answer_is_refused(aws_stack: Resources) -> None:
    store = get_store()
    key = customer(store, KeyCaps(max_request_charge=3))
    gateway = Gateway(
        store,
        {"demo": OpenAICompatProvider("http://x/v1", "k")},
        load_catalog(),
        hold_ttl_seconds=960,
    )
    request = ChatCompletionRequest.model_validate(
        {"model": "demo-official", "messages": [{"role": "user", "content": "hi"}]}
    )
    with pytest.raises(BudgetExceeded) as refused:
        asyncio.run(gateway.plan(key, request, new_id("req"), RequestLimits()))
    assert refused.value.details["envelope"] == "request"
    assert refused.value.details["limit"] == "0.000003"


def _last_request(store: DynamoStore, key: ApiKey) -> str:
    entries = store.list_entries(key.account_id, Bucket.CREDIT)
    request_id = entries[-1].request_id
    assert request_id is not None
    return request_id
