"""The listings the web console reads (GET /v1/requests, GET /v1/runs), over HTTP in process on
a month of record: filters, paging, cursors and tenancy as the other views have them; and a
budget refusal's receipt names its envelope."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from forge.api import create_app
from forge.api.deps import get_gateway
from forge.domain.calendar import Month
from forge.domain.catalog import load_catalog
from forge.domain.money import Bucket
from forge.gateway import Gateway
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.providers.openai import OpenAICompatProvider
from forge.store.dynamo.items import to_item
from forge.wiring import get_store
from forge_tools.emulator import Resources
from tests.integration import test_account_views as views
from tests.ledger_history import History, MonthStory, simulate_month

# The month of record the account views are tested on (fixtures), and their GET helper.
history, story = views.history, views.story
get, key_of = views.get, views.key_of


def every_page(key: str, path: str, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = get(path, key, **params, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        body = response.json()
        found += body["data"]
        cursor = body["next_cursor"]
        assert body["has_more"] is (cursor is not None)
        if cursor is None:
            return found


def test_requests_list_newest_first_and_filters(story: MonthStory) -> None:
    key = key_of(story)
    newest_first = sorted(story.receipts, key=lambda r: r.created_at, reverse=True)

    # Every receipt once, newest first, 3 at a time
    listed = every_page(key, "/v1/requests", limit=3)
    assert [r["request_id"] for r in listed] == [r.request_id for r in newest_first]
    first = listed[0]
    assert first["object"] == "request" and first["attempts"] and first["key_id"]

    # Each filter keeps exactly its receipts, across pages
    beta = [r.request_id for r in newest_first if r.project_id == "beta"]
    assert [
        r["request_id"] for r in every_page(key, "/v1/requests", limit=2, project_id="beta")
    ] == beta
    routed = [r.request_id for r in newest_first if r.requested_model == "demo-routed"]
    assert [r["request_id"] for r in every_page(key, "/v1/requests", model="demo-routed")] == routed
    alpha_key = story.keys["alpha"][0]
    assert {r["key_id"] for r in every_page(key, "/v1/requests", key_id=alpha_key)} == {alpha_key}
    window = every_page(key, "/v1/requests", **{"from": "2025-03-08", "to": "2025-03-14"})
    assert [r["request_id"] for r in window] == [
        r.request_id
        for r in newest_first
        if "2025-03-08" <= r.created_at.date().isoformat() < "2025-03-14"
    ]
    assert every_page(key, "/v1/requests", status="partial", project_id="nobody") == []


def test_requests_list_refuses_bad_filters_and_foreign_cursors(
    history: History, story: MonthStory
) -> None:
    key = key_of(story)
    for params in ({"status": "done"}, {"limit": 0}, {"limit": 201}, {"from": "yesterday"}):
        refused = get("/v1/requests", key, **params)
        assert refused.status_code == 400, (params, refused.text)
        assert set(refused.json()["error"]) >= {"message", "type", "param", "code"}
    backwards = get("/v1/requests", key, **{"from": "2025-03-02", "to": "2025-03-01"})
    assert backwards.status_code == 400

    cursor = get("/v1/requests", key, limit=2, project_id="beta").json()["next_cursor"]
    assert cursor
    for bad in (cursor[:-3], "garbage!"):
        refused = get("/v1/requests", key, limit=2, cursor=bad)
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid_cursor")
    # A cursor is a position in this listing's time range: another range refuses it
    refused = get("/v1/requests", key, limit=2, cursor=cursor, to="2025-03-01")
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid_cursor")

    # Another account sees none of these requests, and none of its cursors work here
    stranger = simulate_month(history, Month(2025, 4))
    mine = {r.request_id for r in story.receipts}
    theirs = every_page(key_of(stranger), "/v1/requests")
    assert theirs and not mine & {r["request_id"] for r in theirs}
    foreign = get("/v1/requests", key_of(stranger), limit=1).json()["next_cursor"]
    refused = get("/v1/requests", key, limit=1, cursor=foreign)
    assert refused.status_code == 404
    assert stranger.account_id not in refused.text


def test_runs_list_each_run_against_its_budget(
    history: History, story: MonthStory, aws_stack: Resources
) -> None:
    key = key_of(story)
    # Given run-beta had a run budget of 5.00 (its envelope, as the gateway leaves it)
    history.store._db.put_item(  # type: ignore[attr-defined]
        TableName=aws_stack.tables["BudgetTable"],
        Item=to_item(
            {"pk": f"ENV#RUN#{story.account_id}#run-beta", "sk": "credit", "limit": 5_000_000}
        ),
    )

    runs = every_page(key, "/v1/runs", limit=1)

    # Then both runs, newest first by their first call, with the totals the run view has
    assert [r["run_id"] for r in runs] == ["run-beta", "run-alpha"]
    for run in runs:
        [totals] = get(f"/v1/runs/{run['run_id']}", key).json()["totals"]
        assert {k: run[k] for k in totals} == totals
    beta, alpha = runs
    assert (beta["budget"], beta["budget_micros"]) == ("5.000000", 5_000_000)
    assert (alpha["budget"], alpha["budget_micros"]) == (None, None)
    assert beta["first_call_at"].startswith("2025-03-08T10:")
    assert beta["requests"] == len(story.runs["run-beta"])

    # A range before them lists none; another account lists only its own
    assert every_page(key, "/v1/runs", to="2025-03-01") == []
    stranger = simulate_month(history, Month(2025, 4))
    assert {r["run_id"] for r in every_page(key_of(stranger), "/v1/runs")} == {
        "run-alpha",
        "run-beta",
    }
    assert all(
        r["first_call_at"].startswith("2025-04") for r in every_page(key_of(stranger), "/v1/runs")
    )
    foreign = get("/v1/runs", key_of(stranger), limit=1).json()["next_cursor"]
    assert get("/v1/runs", key, limit=1, cursor=foreign).status_code == 404
    assert get("/v1/runs", key, limit=1, cursor="x").json()["error"]["code"] == "invalid_cursor"


def _upstream(request: httpx.Request) -> httpx.Response:
    usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
    return httpx.Response(
        200,
        json={
            "id": "c",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
            "usage": usage,
        },
    )


@pytest.mark.parametrize(("header", "envelope"), [("X-Max-Request-Charge", "request")])
def test_a_budget_refusal_lists_with_its_envelope(
    aws_stack: Resources, header: str, envelope: str
) -> None:
    # Given a funded key, and one call refused by its per-request maximum
    store = get_store()
    account_id = create_account(store, "refusals")
    credit_wallet(store, account_id, Bucket.CREDIT, "1", source="test", memo="fund")
    plaintext, _ = issue_key(store, account_id)
    provider = OpenAICompatProvider(
        "http://up.test/v1", "k", transport=httpx.MockTransport(_upstream)
    )
    app = create_app()
    gateway = Gateway(store, {"demo": provider}, load_catalog(), hold_ttl_seconds=960)
    app.dependency_overrides[get_gateway] = lambda: gateway
    body = {"model": "demo-official", "messages": [{"role": "user", "content": "hi"}]}

    async def calls() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        auth = {"Authorization": f"Bearer {plaintext}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            served = await client.post("/v1/chat/completions", json=body, headers=auth)
            refused = await client.post(
                "/v1/chat/completions", json=body, headers={**auth, header: "0.000001"}
            )
            listed = await client.get(
                "/v1/requests", params={"error_code": "budget_exceeded"}, headers=auth
            )
            return served, refused, listed

    served, refused, listed = asyncio.run(calls())
    assert served.status_code == 200, served.text
    assert refused.status_code == 402, refused.text
    error = refused.json()["error"]

    # Then the refusals listing holds that one call, naming what the 402 named
    [row] = listed.json()["data"]
    assert row["request_id"] == refused.headers["x-request-id"]
    assert row["refusal"] == {k: error[k] for k in ("envelope", "limit", "remaining", "requested")}
    assert row["refusal"]["envelope"] == envelope
    assert row["status"] == "failed" and row["charge_micros"] == 0
    assert json.dumps(row).count(served.headers["x-request-id"]) == 0
