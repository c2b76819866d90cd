"""Account views over HTTP (in process) on a month of record: statements, ledger pages, usage,
runs and balance each tell the story the ledger tells, through keys and indexes only."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from forge.api import create_app
from forge.domain.calendar import Month
from forge.domain.money import Bucket, format_micros
from forge.domain.records import Hold, LedgerEntry, LedgerKind, Receipt
from forge.domain.views import UsageGroupBy
from forge_tools.emulator import Emulator, Resources
from tests.ledger_history import History, MonthStory, simulate_month
from tests.statement_check import assert_csv_tells, assert_html_tells, ledger_month

MARCH = Month(2025, 3)
Handler = Callable[..., Any]


@pytest.fixture
def history(emulator: Emulator, aws_stack: Resources) -> History:
    return History(
        emulator.client("dynamodb"),
        aws_stack.tables["BudgetTable"],
        aws_stack.tables["LedgerTable"],
    )


@pytest.fixture
def story(
    history: History,
    load_handler: Callable[[str], Handler],
    lambda_context: Any,
    ledger_stream_event: Callable[[], dict[str, Any]],
) -> MonthStory:
    """March 2025 of one customer, written through the store and archived by the archiver
    from the table's own stream."""
    told = simulate_month(history, MARCH)
    assert load_handler("archiver")(ledger_stream_event(), lambda_context) == {
        "batchItemFailures": []
    }
    return told


def get(path: str, key: str, **params: Any) -> httpx.Response:
    """One GET against the app in process, as the key's owner."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.get(path, params=params, headers={"Authorization": f"Bearer {key}"})

    return asyncio.run(send())


def ledger_of(history: History, account_id: str) -> list[LedgerEntry]:
    return [e for b in Bucket for e in history.store.list_entries(account_id, b)]


def key_of(story: MonthStory, project: str = "alpha") -> str:
    return story.keys[project][1]


# Statements ---------------------------------------------------------------------------------
def test_the_month_statement_tells_the_ledger_story_in_csv_and_html(
    history: History, story: MonthStory
) -> None:
    key = key_of(story)
    # Given the months listed for the account: from its first entry (February) to now
    listed = get("/v1/statements", key)
    assert listed.status_code == 200, listed.text
    months = [m["month"] for m in listed.json()["data"]]
    assert months[-2:] == ["2025-03", "2025-02"] and months == sorted(months, reverse=True)
    assert {m["status"] for m in listed.json()["data"] if m["month"] <= "2025-03"} == {"final"}

    # When March is downloaded in both formats through the presigned links
    bodies = {}
    for fmt in ("csv", "html"):
        link = get("/v1/statements/2025-03", key, format=fmt)
        assert link.status_code == 200, link.text
        assert (link.json()["format"], link.json()["status"]) == (fmt, "final")
        download = httpx.get(link.json()["url"])
        assert download.status_code == 200
        assert download.headers["content-disposition"] == (
            f'attachment; filename="tokens-forge-{story.account_id}-2025-03.{fmt}"'
        )
        bodies[fmt] = download.content

    # Then, per bucket, both say what the ledger says; the closing is the ledger balance
    ledger = ledger_of(history, story.account_id)
    for bucket in Bucket:
        expected = ledger_month([e for e in ledger if e.bucket is bucket], MARCH)
        assert_csv_tells(bodies["csv"], bucket, expected, final=True)
        page = assert_html_tells(bodies["html"], bucket, expected, final=True)
        assert expected.closing == history.store.get_wallet(story.account_id, bucket).balance
        assert len([e for e in page.section(bucket) if e.tag == "rect"]) == len(expected.daily)
    credit = ledger_month([e for e in ledger if e.bucket is Bucket.CREDIT], MARCH)
    assert credit.opening == 20_000_000  # February's payment
    assert set(credit.daily) == {"2025-03-03", "2025-03-08", "2025-03-13", "2025-03-28"}
    rmb = ledger_month([e for e in ledger if e.bucket is Bucket.RMB], MARCH)
    assert rmb.totals["refund"] == story.refund.amount > 0
    assert set(rmb.daily) == {"2025-03-03", "2025-03-05", "2025-03-21"}

    # And a month before the first entry has no statement
    assert get("/v1/statements/2025-01", key).status_code == 404
    assert get("/v1/statements/2025-13", key).status_code == 400
    assert get("/v1/statements/2025-03", key, format="pdf").status_code == 400


# Ledger pages -------------------------------------------------------------------------------
def pages(key: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of /v1/ledger with these filters, following next_cursor."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = get("/v1/ledger", key, **params, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        body = response.json()
        found.append(body)
        cursor = body["next_cursor"]
        assert body["has_more"] is (cursor is not None)
        if cursor is None:
            return found


def test_the_ledger_pages_through_every_entry_once(history: History, story: MonthStory) -> None:
    ledger = ledger_of(history, story.account_id)
    newest_first = sorted(ledger, key=lambda e: (e.created_at, e.bucket.value, e.seq), reverse=True)

    # When the whole ledger is read 4 entries at a time
    read = pages(key_of(story), limit=4)

    # Then every entry comes exactly once, newest first, as the store has it
    entries = [e for page in read for e in page["data"]]
    assert len(read) == -(-len(ledger) // 4)
    assert [e["entry_id"] for e in entries] == [e.entry_id for e in newest_first]
    by_id = {e.entry_id: e for e in ledger}
    for view in entries:
        entry = by_id[view["entry_id"]]
        assert view["amount_micros"] == entry.amount
        assert view["amount"] == format_micros(entry.amount)
        assert view["balance_after_micros"] == entry.balance_after
        assert (view["kind"], view["source"]) == (entry.kind.value, entry.source)


def test_the_ledger_filters_by_bucket_and_date(history: History, story: MonthStory) -> None:
    ledger = ledger_of(history, story.account_id)
    # RMB entries of March 1..9 (to is exclusive), oldest first, in pages of 2
    read = pages(
        key_of(story),
        bucket="rmb",
        limit=2,
        order="asc",
        **{"from": "2025-03-01", "to": "2025-03-10"},
    )
    wanted = [
        e.entry_id
        for e in sorted(ledger, key=lambda e: e.created_at)
        if e.bucket is Bucket.RMB and "2025-03-01" <= e.created_at.date().isoformat() < "2025-03-10"
    ]
    assert [e["entry_id"] for p in read for e in p["data"]] == wanted
    assert len(wanted) >= 3 and len(read) == 2

    # An instant bound is exact: from the refund's own instant, the refund comes first
    after = get(
        "/v1/ledger",
        key_of(story),
        order="asc",
        **{"from": story.refund.created_at.isoformat()},
    ).json()["data"]
    assert after[0]["entry_id"] == story.refund.entry_id


def cursor_of(response: httpx.Response) -> str:
    cursor = response.json()["next_cursor"]
    assert cursor
    return str(cursor)


def test_a_cursor_works_only_for_its_own_account_and_query(
    history: History, story: MonthStory
) -> None:
    key = key_of(story)
    cursor = cursor_of(get("/v1/ledger", key, limit=2, bucket="credit"))
    assert get("/v1/ledger", key, limit=2, bucket="credit", cursor=cursor).status_code == 200

    # Tampered, truncated or garbage cursors are refused, never guessed at
    raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    for bad in (
        cursor[:-3],
        "not-a-cursor!",
        cursor[:10] + ("A" if cursor[10] != "A" else "B") + cursor[11:],
        base64.urlsafe_b64encode(json.dumps({**raw, "v": 2}).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps({"v": 1, "k": {"pk": 1}}).encode()).decode(),
    ):
        refused = get("/v1/ledger", key, limit=2, bucket="credit", cursor=bad)
        assert refused.status_code == 400, (bad, refused.text)
        assert refused.json()["error"]["code"] in ("invalid_cursor", "invalid_request")

    # A cursor reused with other filters is refused
    for other in ({"bucket": "rmb"}, {}, {"bucket": "credit", "to": "2025-02-01"}):
        refused = get("/v1/ledger", key, limit=2, cursor=cursor, **other)
        assert refused.status_code == 400, (other, refused.text)
        assert refused.json()["error"]["code"] == "invalid_cursor"

    # And another account's cursor finds nothing of it
    stranger = simulate_month(history, Month(2025, 4))
    foreign = get("/v1/ledger", key_of(stranger), limit=2, bucket="credit")
    refused = get("/v1/ledger", key, limit=2, bucket="credit", cursor=cursor_of(foreign))
    assert refused.status_code == 404
    assert stranger.account_id not in refused.text


# Usage and runs -----------------------------------------------------------------------------
def usage_group(receipt: Receipt, group_by: UsageGroupBy, day: str | None = None) -> str:
    """The group a receipt's usage (or, on `day`, a refund of it) counts in."""
    match group_by:
        case UsageGroupBy.KEY:
            return receipt.key_id
        case UsageGroupBy.PROJECT:
            return receipt.project_id
        case UsageGroupBy.MODEL:
            return receipt.requested_model
        case UsageGroupBy.ROUTE:
            return receipt.final_route or ""
        case UsageGroupBy.DAY:
            return day or receipt.created_at.date().isoformat()


@pytest.mark.parametrize("group_by", list(UsageGroupBy))
def test_usage_totals_are_the_receipts_and_the_ledgers_charges(
    history: History, story: MonthStory, group_by: UsageGroupBy
) -> None:
    response = get(
        "/v1/usage",
        key_of(story, "beta"),  # any key of the account sees the account's usage
        group_by=group_by.value,
        **{"from": "2025-03-01", "to": "2025-04-01"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["from"], body["to"]) == ("2025-03-01T00:00:00Z", "2025-04-01T00:00:00Z")

    expected: dict[tuple[str, str], list[Receipt]] = {}
    for receipt in story.receipts:
        assert receipt.bucket is not None
        expected.setdefault((usage_group(receipt, group_by), receipt.bucket.value), []).append(
            receipt
        )
    # The refund counts with its request's key, project, model and route, on its own day
    [refunded] = [r for r in story.receipts if r.request_id == story.refund.request_id]
    refund_day = story.refund.created_at.date().isoformat()
    refunds = {
        (usage_group(refunded, group_by, refund_day), story.refund.bucket.value): (
            story.refund.amount
        )
    }
    assert {(line["group"], line["bucket"]) for line in body["data"]} == set(expected) | set(
        refunds
    )
    for line in body["data"]:
        receipts = expected.get((line["group"], line["bucket"]), [])
        assert line["refunded_micros"] == refunds.get((line["group"], line["bucket"]), 0)
        assert line["refunded"] == format_micros(line["refunded_micros"])
        assert line["requests"] == line["succeeded"] == len(receipts)
        assert line["charge_micros"] == sum(r.charge for r in receipts)
        assert line["input_tokens"] == sum(r.usage.input_tokens for r in receipts)
        assert line["cached_input_tokens"] == sum(r.usage.cached_input_tokens for r in receipts)
        assert line["output_tokens"] == sum(r.usage.output_tokens for r in receipts)
        assert line["attempts"] == sum(len(r.attempts) for r in receipts)

    # The totals per bucket are the ledger's charges and refunds, to the micro-unit
    ledger = ledger_of(history, story.account_id)
    for total in body["totals"]:
        charged = [
            e for e in ledger if e.kind is LedgerKind.CHARGE and e.bucket.value == total["bucket"]
        ]
        assert total["charge_micros"] == -sum(e.amount for e in charged) > 0
        assert total["charge"] == format_micros(total["charge_micros"])
        assert total["requests"] == len(charged)
        refunded = [
            e for e in ledger if e.kind is LedgerKind.REFUND and e.bucket.value == total["bucket"]
        ]
        assert total["refunded_micros"] == sum(e.amount for e in refunded)
    assert sum(t["refunded_micros"] for t in body["totals"]) == story.refund.amount > 0


def test_usage_ranges_are_bounded(story: MonthStory) -> None:
    key = key_of(story)
    too_long = get("/v1/usage", key, **{"from": "2024-01-01", "to": "2025-03-01"})
    assert too_long.status_code == 400
    backwards = get("/v1/usage", key, **{"from": "2025-03-02", "to": "2025-03-01"})
    assert backwards.status_code == 400
    assert get("/v1/usage", key, group_by="colour").status_code == 400
    # A number is not a date-time (pydantic alone would read it as seconds since 1970)
    for path in ("/v1/usage", "/v1/ledger", "/v1/requests"):
        numeric = get(path, key, to="-6.871565834475655e-06")
        assert numeric.status_code == 400, path
        assert numeric.json()["error"]["type"] == "invalid_request_error"
    # No range: this month so far, which has nothing of 2025 in it
    assert get("/v1/usage", key).json()["data"] == []


def test_a_run_lists_its_calls_attempts_tokens_and_spend(
    history: History, story: MonthStory
) -> None:
    requests = story.runs["run-beta"]
    receipts = {r.request_id: r for r in story.receipts}

    first = get("/v1/runs/run-beta", key_of(story), limit=2)
    assert first.status_code == 200, first.text
    rest = get("/v1/runs/run-beta", key_of(story), limit=2, cursor=cursor_of(first))
    calls = first.json()["calls"] + rest.json()["calls"]
    assert rest.json()["has_more"] is False

    assert [c["request_id"] for c in calls] == requests
    assert [len(c["attempts"]) for c in calls] == [1, 1, 3]
    assert [a["outcome"] for a in calls[2]["attempts"]] == ["error", "error", "ok"]
    for call in calls:
        receipt = receipts[call["request_id"]]
        assert call["charge_micros"] == receipt.charge
        assert call["output_tokens"] == receipt.usage.output_tokens
    [totals] = first.json()["totals"]
    charges = {
        e.request_id: -e.amount
        for e in ledger_of(history, story.account_id)
        if e.kind is LedgerKind.CHARGE
    }
    assert totals["bucket"] == "credit"
    assert (totals["requests"], totals["attempts"]) == (3, 5)
    assert totals["charge_micros"] == sum(charges[r] for r in requests)
    assert totals["input_tokens"] == sum(receipts[r].usage.input_tokens for r in requests)
    assert totals["refunded_micros"] == 0  # March's refund is of a call outside any run

    missing = get("/v1/runs/run-gamma", key_of(story))
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")


def test_balance_shows_both_buckets_with_what_is_held(history: History, story: MonthStory) -> None:
    hold = Hold(
        request_id="req_in_flight",
        account_id=story.account_id,
        key_id=story.keys["alpha"][0],
        bucket=Bucket.RMB,
        amount=1_234_567,
        expires_at=MARCH.end,
    )
    history.store.reserve(hold)
    body = get("/v1/balance", key_of(story)).json()
    buckets = {b["bucket"]: b for b in body["buckets"]}
    for bucket in Bucket:
        wallet = history.store.get_wallet(story.account_id, bucket)
        view = buckets[bucket.value]
        assert (view["balance_micros"], view["held_micros"], view["available_micros"]) == (
            wallet.balance,
            wallet.held,
            wallet.available,
        )
        assert view["balance_micros"] == sum(
            e.amount for e in history.store.list_entries(story.account_id, bucket)
        )
    assert buckets["rmb"]["held_micros"] == 1_234_567
    assert buckets["rmb"]["available_micros"] == buckets["rmb"]["balance_micros"] - 1_234_567


def test_usage_and_runs_filter_by_project(story: MonthStory) -> None:
    march = {"from": "2025-03-01", "to": "2025-04-01"}
    everything = get("/v1/usage", key_of(story), group_by="project", **march).json()
    beta = get("/v1/usage", key_of(story), group_by="project", project_id="beta", **march).json()
    assert {line["group"] for line in everything["data"]} == {"alpha", "beta"}
    assert beta["data"] == [line for line in everything["data"] if line["group"] == "beta"]
    assert sum(t["charge_micros"] for t in beta["totals"]) == sum(
        r.charge for r in story.receipts if r.project_id == "beta"
    )
    none = get("/v1/usage", key_of(story), project_id="nope", **march).json()
    assert none["data"] == none["totals"] == []

    calls = get("/v1/runs/run-beta", key_of(story), project_id="beta").json()["calls"]
    assert [c["request_id"] for c in calls] == story.runs["run-beta"]
    other = get("/v1/runs/run-beta", key_of(story), project_id="alpha").json()
    assert other["calls"] == [] and other["totals"]  # the run's totals stay whole
