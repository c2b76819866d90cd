"""The views' aggregates against the emulator. A run's totals and the hourly usage cells are
written by the transactions that write receipts and refunds, so they always equal the sum of
what those wrote: under a burst from many containers, through the sweeper, for refusals and
refunds, and when a write is replayed. Usage cut inside an hour is still the receipts' sum."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from boto3.dynamodb.types import TypeDeserializer

from forge.api import create_app
from forge.domain.errors import BudgetExceeded, HoldAlreadyResolved, RefundAlreadyIssued
from forge.domain.ids import new_id
from forge.domain.money import Bucket, Usage
from forge.domain.records import (
    Attempt,
    Hold,
    HoldOutcome,
    LedgerEntry,
    LedgerKind,
    Receipt,
    utcnow,
)
from forge.domain.views import TimeRange, UsageGroupBy, summarize_usage
from forge.ledger.sweeper import sweep
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.money_in.adjustments import refund_charge
from forge.store.dynamo.store import DynamoStore
from forge.store.dynamo.views import LedgerViews
from forge.wiring import get_archive, get_store
from forge_tools.emulator import Resources, load_template
from tests.ledger_history import Clock

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
_deserializer = TypeDeserializer()
Aggregates = dict[tuple[Any, ...], dict[str, int]]


# What the table holds, read raw, and what the receipts and refunds say it should hold ------
def _plain(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def _items(store: DynamoStore, account_id: str, prefix: str) -> list[dict[str, Any]]:
    """The account's table items of one kind, by their sort key prefix."""
    request: dict[str, Any] = {
        "TableName": store._ledger,
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
        "ExpressionAttributeValues": {
            ":pk": {"S": f"ACCT#{account_id}"},
            ":prefix": {"S": prefix},
        },
        "ConsistentRead": True,
    }
    items: list[dict[str, Any]] = []
    while True:
        page = store._db.query(**request)
        items += map(_plain, page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _aggregates(store: DynamoStore, account_id: str, record_type: str) -> list[dict[str, Any]]:
    """Every aggregate item of the account, wherever it is keyed (a scan: tests only)."""
    request: dict[str, Any] = {"TableName": store._ledger, "ConsistentRead": True}
    items: list[dict[str, Any]] = []
    while True:
        page = store._db.scan(**request)
        items += map(_plain, page["Items"])
        if "LastEvaluatedKey" not in page:
            break
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    mine = [i for i in items if i.get("record_type") == record_type]
    return [i for i in mine if i["account_id"] == account_id]


_COUNTERS = (
    "requests",
    "succeeded",
    "partial",
    "failed",
    "attempts",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "charge",
    "refunded",
)


def stored(store: DynamoStore, account_id: str) -> tuple[Aggregates, Aggregates]:
    """(usage cells by hour and combination, run totals by run and bucket), as stored."""
    cells: Aggregates = {}
    for item in _aggregates(store, account_id, "usage_cell"):
        dims = (item["hour"], item.get("bucket"), item["key_id"], item["project_id"])
        key = (*dims, item["requested_model"], item.get("final_route"))
        assert key not in cells, "one item per hour and combination"
        cells[key] = {c: int(item[c]) for c in _COUNTERS if item.get(c)}
    runs: Aggregates = {}
    for item in _aggregates(store, account_id, "run_total"):
        runs[(item["run_id"], item.get("bucket"))] = {
            c: int(item[c]) for c in _COUNTERS if item.get(c)
        }
    return cells, runs


def receipts_of(store: DynamoStore, account_id: str) -> list[Receipt]:
    return [Receipt.model_validate(item) for item in _items(store, account_id, "RCPT#")]


def refunds_of(store: DynamoStore, account_id: str) -> list[LedgerEntry]:
    return [
        e
        for bucket in Bucket
        for e in store.list_entries(account_id, bucket)
        if e.kind is LedgerKind.REFUND
    ]


def _hour(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H")


def expected(store: DynamoStore, account_id: str) -> tuple[Aggregates, Aggregates]:
    """The same aggregates, summed by hand from every receipt and refund in the table."""
    cells: dict[tuple[Any, ...], Counter[str]] = {}
    runs: dict[tuple[Any, ...], Counter[str]] = {}
    receipts = {r.request_id: r for r in receipts_of(store, account_id)}
    for r in receipts.values():
        bucket = r.bucket.value if r.bucket else None
        counts = Counter(
            requests=1,
            attempts=len(r.attempts),
            input_tokens=r.usage.input_tokens,
            cached_input_tokens=r.usage.cached_input_tokens,
            output_tokens=r.usage.output_tokens,
            charge=r.charge,
        )
        counts[r.status] += 1
        key = (_hour(r.created_at), bucket, r.key_id, r.project_id, r.requested_model)
        cells.setdefault((*key, r.final_route), Counter()).update(counts)
        if r.run_id:
            runs.setdefault((r.run_id, bucket), Counter()).update(counts)
    for e in refunds_of(store, account_id):
        r = receipts[str(e.request_id)]
        key = (_hour(e.created_at), e.bucket.value, r.key_id, r.project_id, r.requested_model)
        cells.setdefault((*key, r.final_route), Counter()).update(refunded=e.amount)
        if r.run_id:
            runs.setdefault((r.run_id, e.bucket.value), Counter()).update(refunded=e.amount)
    return (
        {k: {c: n for c, n in v.items() if n} for k, v in cells.items()},
        {k: {c: n for c, n in v.items() if n} for k, v in runs.items()},
    )


def assert_aggregates_are_the_receipts(store: DynamoStore, account_id: str) -> None:
    assert stored(store, account_id) == expected(store, account_id)


# Writing calls -----------------------------------------------------------------------------
def container(store: DynamoStore) -> DynamoStore:
    """Another store over the same tables, as another Lambda container would have."""
    return DynamoStore(store._db, store._budget, store._ledger)


def funded(store: DynamoStore, credit: str = "1", rmb: str = "1") -> str:
    account_id = create_account(store, "view totals")
    credit_wallet(store, account_id, Bucket.CREDIT, credit, source="test", memo="fund")
    credit_wallet(store, account_id, Bucket.RMB, rmb, source="test", memo="fund")
    return account_id


def hold_for(
    account_id: str,
    amount: int,
    *,
    bucket: Bucket = Bucket.CREDIT,
    run_id: str | None = None,
    key_id: str = "key_a",
    expires_at: datetime | None = None,
) -> Hold:
    return Hold(
        request_id=new_id("req"),
        account_id=account_id,
        key_id=key_id,
        project_id="proj#1",  # names may hold '#': cells key on a hash of them
        requested_model="demo-official" if bucket is Bucket.CREDIT else "demo-routed",
        run_id=run_id,
        bucket=bucket,
        amount=amount,
        expires_at=expires_at or utcnow() + timedelta(minutes=16),
    )


def receipt_for(
    hold: Hold,
    *,
    status: str = "succeeded",
    created_at: datetime | None = None,
    tokens: int = 100,
    attempts: int = 1,
) -> Receipt:
    tried = [
        Attempt(route="demo:x", upstream_model="x", status=503, latency_ms=5, outcome="error")
        for _ in range(attempts - 1)
    ]
    tried.append(
        Attempt(route="demo:x", upstream_model="x", status=200, latency_ms=9, outcome="ok")
    )
    return Receipt.model_validate(
        {
            "request_id": hold.request_id,
            "account_id": hold.account_id,
            "key_id": hold.key_id,
            "project_id": hold.project_id,
            "run_id": hold.run_id,
            "requested_model": hold.requested_model,
            "status": status,
            "attempts": tried,
            "final_route": "demo:x",
            "usage": Usage(
                input_tokens=tokens, cached_input_tokens=tokens // 4, output_tokens=tokens // 2
            ),
            "hold": hold.amount,
            "bucket": hold.bucket,
            "created_at": created_at or utcnow(),
        }
    )


# Tests -------------------------------------------------------------------------------------
def test_a_burst_from_many_containers_counts_every_call_exactly_once(
    aws_stack: Resources,
) -> None:
    store = get_store()
    account_id = funded(store, credit="0.002000")  # 2000 µ: some holds of 100 are refused
    base = utcnow().replace(minute=0, second=0, microsecond=0)
    outcomes: Counter[str] = Counter()

    def call(n: int) -> None:
        mine = container(store)  # every call from its own container
        bucket = Bucket.RMB if n % 4 == 0 else Bucket.CREDIT
        run_id = "burst" if n % 2 else None
        hold = hold_for(account_id, 100, bucket=bucket, run_id=run_id, key_id=f"key_{n % 3}")
        # Three hours of calls, so a burst spreads over several cells
        receipt = receipt_for(
            hold, created_at=base - timedelta(hours=n % 3), tokens=10 + n, attempts=1 + n % 2
        )
        try:
            mine.reserve(hold)
        except BudgetExceeded:
            refused = receipt.model_copy(update={"status": "failed", "hold": 0, "charge": 0})
            mine.put_receipt(refused)
            mine.put_receipt(refused)  # a retried write: counted once
            outcomes["refused"] += 1
            return
        if n % 5 == 0:
            mine.void(hold, receipt.model_copy(update={"status": "failed"}))
            outcomes["voided"] += 1
        else:
            mine.settle(hold, 60 + n % 7, receipt)
            outcomes["settled"] += 1
        with pytest.raises(HoldAlreadyResolved):  # a replay from another container
            container(store).settle(hold, 60, receipt)

    with ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(call, range(60)))

    assert sum(outcomes.values()) == 60 and outcomes["refused"] and outcomes["settled"]
    assert len(receipts_of(store, account_id)) == 60
    assert_aggregates_are_the_receipts(store, account_id)
    cells, runs = stored(store, account_id)
    assert len({key[0] for key in cells}) == 3  # three hours
    assert sum(t["requests"] for t in runs.values()) == 30
    # And the views say the same: the run's totals per bucket
    views = LedgerViews(store._db, store._ledger)
    lines = views.run_totals(account_id, "burst")
    assert {(line.bucket.value if line.bucket else None) for line in lines} == {
        bucket for _, bucket in runs
    }
    for line in lines:
        assert (
            line.totals.model_dump(exclude_defaults=True)
            == runs[("burst", line.bucket.value if line.bucket else None)]
        )


def test_refunds_count_in_the_hour_they_are_written_and_in_their_run(
    aws_stack: Resources,
) -> None:
    store = get_store()
    account_id = funded(store)
    holds = [hold_for(account_id, 5_000, run_id="refunded-run") for _ in range(3)]
    receipts = []
    for hold in holds:
        store.reserve(hold)
        receipts.append(store.settle(hold, 4_000, receipt_for(hold)))

    refund_charge(store, account_id, receipts[0].request_id, "0.001500", reason="partial")
    refund_charge(store, account_id, receipts[1].request_id)  # the whole charge
    with pytest.raises(RefundAlreadyIssued):
        refund_charge(store, account_id, receipts[1].request_id)

    assert_aggregates_are_the_receipts(store, account_id)
    views = LedgerViews(store._db, store._ledger)
    [line] = views.run_totals(account_id, "refunded-run")
    assert (line.totals.charge, line.totals.refunded) == (12_000, 1_500 + 4_000)
    [refund, _] = refunds_of(store, account_id)
    assert (refund.request_id, refund.key_id, refund.project_id, refund.route) == (
        receipts[0].request_id,
        "key_a",
        "proj#1",
        "demo:x",
    )


def test_the_sweepers_voids_and_settles_and_refusals_are_counted(aws_stack: Resources) -> None:
    store = get_store()
    account_id = funded(store)
    past = utcnow() - timedelta(minutes=1)
    dead = [hold_for(account_id, 700, run_id="swept", expires_at=past) for _ in range(3)]
    for hold in dead:
        store.reserve(hold)
    # The first one's upstream answered but settling failed: the sweeper settles it
    store.record_outcome(dead[0], HoldOutcome(charge=300, receipt=receipt_for(dead[0])))
    refusal = receipt_for(hold_for(account_id, 0, run_id="swept"), status="failed")
    store.put_receipt(refusal.model_copy(update={"charge": 0, "error_code": "budget_exceeded"}))

    report = sweep(store, utcnow())

    assert (len(report.settled), len(report.voided)) == (1, 2)
    assert sweep(store, utcnow()).model_dump() == {
        "settled": [],
        "voided": [],
        "already_resolved": [],
    }
    with pytest.raises(HoldAlreadyResolved):  # the request's own late settle changes nothing
        store.settle(dead[1], 100, receipt_for(dead[1]))
    assert_aggregates_are_the_receipts(store, account_id)
    [line] = LedgerViews(store._db, store._ledger).run_totals(account_id, "swept")
    assert line.totals.model_dump(exclude_defaults=True) == {
        "requests": 4,
        "succeeded": 1,
        "failed": 3,
        "attempts": 4 - 2,  # a swept void's receipt records no attempt
        "input_tokens": 100 + 100,
        "cached_input_tokens": 25 + 25,
        "output_tokens": 50 + 50,
        "charge": 300,
    }


def test_a_replayed_write_never_counts_twice(aws_stack: Resources) -> None:
    store = get_store()
    account_id = funded(store)
    settled, voided = (hold_for(account_id, 900, run_id="replays") for _ in range(2))
    for hold in (settled, voided):
        store.reserve(hold)
    first = store.settle(settled, 800, receipt_for(settled))
    store.void(voided, receipt_for(voided, status="failed"))
    refusal = receipt_for(hold_for(account_id, 0, run_id="replays"), status="failed")
    store.put_receipt(refusal)
    refund_charge(store, account_id, first.request_id, "0.000100")
    before = stored(store, account_id)

    def replay(n: int) -> None:
        mine = container(store)
        match n % 4:
            case 0:
                with pytest.raises(HoldAlreadyResolved):
                    mine.settle(settled, 800, receipt_for(settled))
            case 1:
                with pytest.raises(HoldAlreadyResolved):
                    mine.void(settled, receipt_for(settled, status="failed"))
            case 2:
                mine.put_receipt(refusal)
            case 3:
                with pytest.raises(RefundAlreadyIssued):
                    refund_charge(mine, account_id, first.request_id, "0.000100")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(replay, range(24)))

    assert stored(store, account_id) == before
    assert_aggregates_are_the_receipts(store, account_id)


def _matches(pattern: Any, value: Any) -> bool:
    """An event filter pattern (the subset the template uses: nested keys, lists of
    allowed values) against one stream record, as Lambda's event source mapping applies it."""
    if isinstance(pattern, list):
        return value in pattern
    return isinstance(value, dict) and all(
        key in value and _matches(sub, value[key]) for key, sub in pattern.items()
    )


def test_the_aggregates_stay_out_of_the_archive(
    aws_stack: Resources,
    load_handler: Callable[[str], Callable[..., Any]],
    lambda_context: Any,
    ledger_stream_event: Callable[[], dict[str, Any]],
) -> None:
    store = get_store()
    account_id = funded(store)
    hold = hold_for(account_id, 900, run_id="archived")
    store.reserve(hold)
    receipt = store.settle(hold, 800, receipt_for(hold))
    refund_charge(store, account_id, receipt.request_id)
    archiver = load_template(TEMPLATE)["Resources"]["ArchiverFunction"]["Properties"]
    [stream_filter] = archiver["Events"]["LedgerStream"]["Properties"]["FilterCriteria"]["Filters"]
    pattern = json.loads(stream_filter["Pattern"])

    records = ledger_stream_event()["Records"]

    def kind(record: dict[str, Any]) -> str:
        pk, sk = (record["dynamodb"]["Keys"][name]["S"] for name in ("pk", "sk"))
        return sk.split("#")[0] if pk.startswith("ACCT#") else pk.split("#")[0]

    kinds = Counter(map(kind, records))
    assert kinds["USAGE"] and kinds["RUNSUM"]  # the stream carries the aggregates...
    assert {kind(r) for r in records if _matches(pattern, r)} == {"ENTRY"}
    # ...that Lambda's filter keeps from the archiver; the local poller, which has no filter,
    # hands it everything, and the archiver still archives only the ledger
    event = {"Records": records}
    assert load_handler("archiver")(event, lambda_context) == {"batchItemFailures": []}
    archived = get_archive().entries(account_id)
    assert archived == [e for b in Bucket for e in store.list_entries(account_id, b)]


# Usage over ranges cut inside hours --------------------------------------------------------
DAY = datetime(2025, 3, 4, tzinfo=UTC)


def _write_day(store: DynamoStore, account_id: str) -> list[tuple[datetime, Receipt]]:
    """Calls at chosen instants over three hours, and refunds of two of them later on."""
    written = []
    for n, minutes in enumerate((0, 1, 29, 59, 60, 61, 95, 119, 120, 150, 179)):
        when = DAY + timedelta(hours=9, minutes=minutes, seconds=n % 2)
        hold = hold_for(account_id, 2_000, bucket=Bucket.RMB if n % 3 == 0 else Bucket.CREDIT)
        store.reserve(hold)
        receipt = receipt_for(hold, created_at=when, tokens=10 * (n + 1))
        written.append((when, store.settle(hold, 1_000 + n, receipt)))
    return written


def test_usage_cut_inside_hours_is_the_sum_of_the_receipts_in_the_range(
    aws_stack: Resources,
) -> None:
    clock = Clock()
    store = get_store()
    account_id = funded(store)
    writer = DynamoStore(store._db, store._budget, store._ledger, clock=clock)
    written = _write_day(writer, account_id)
    for (when, receipt), later in ((written[1], 30), (written[6], 5)):
        clock.now = when + timedelta(minutes=later)
        refund_charge(writer, account_id, receipt.request_id, "0.000500")
    refunds = refunds_of(store, account_id)
    views = LedgerViews(store._db, store._ledger)

    def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
        return DAY + timedelta(hours=hour, minutes=minute, seconds=second)

    ranges = [
        (at(0), at(24)),  # whole hours: cells only
        (at(9, 0, 1), at(12)),  # from just after the first call
        (at(9), at(10, 1)),  # to just after a call on the hour
        (at(9, 29), at(11, 0, 1)),
        (at(9, 30), at(9, 59, 1)),  # both inside one hour
        (at(10, 1, 1), at(11, 59)),
        (at(10, 35), at(10, 36)),  # an hour with a refund, cut around it
        (at(11, 59), at(12, 1)),
    ]
    for start, end in ranges:
        cells = views.usage(account_id, TimeRange(start, end))
        _, totals = summarize_usage(cells, UsageGroupBy.KEY)
        got = {t.bucket: t.totals for t in totals}
        for bucket in Bucket:
            inside = [r for w, r in written if start <= w < end and r.bucket is bucket]
            refunded = [e for e in refunds if start <= e.created_at < end and e.bucket is bucket]
            if not inside and not refunded:
                assert bucket not in got, (start, end)
                continue
            sums = got[bucket]
            assert sums.requests == len(inside), (start, end)
            assert sums.charge == sum(r.charge for r in inside), (start, end)
            assert sums.input_tokens == sum(r.usage.input_tokens for r in inside)
            assert sums.refunded == sum(e.amount for e in refunded), (start, end)


def test_usage_without_to_counts_the_current_hour_from_an_instant_inside_it(
    aws_stack: Resources,
) -> None:
    store = get_store()
    account_id = funded(store)
    plaintext, _ = issue_key(store, account_id)
    now = utcnow()
    hour = now.replace(minute=0, second=0, microsecond=0)
    charges = []
    for n, when in enumerate((hour, now - (now - hour) / 2, now)):
        hold = hold_for(account_id, 2_000)
        store.reserve(hold)
        charges.append((when, store.settle(hold, 100 + n, receipt_for(hold, created_at=when))))
    cut = charges[1][0]

    async def usage(**params: str) -> dict[str, Any]:
        transport = httpx.ASGITransport(app=create_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            got = await client.get(
                "/v1/usage", params=params, headers={"Authorization": f"Bearer {plaintext}"}
            )
        assert got.status_code == 200, got.text
        return dict(got.json())

    # From an instant inside the current hour, without `to`: from it until now, exactly
    body = asyncio.run(usage(**{"from": cut.isoformat()}))
    [total] = body["totals"]
    assert total["charge_micros"] == sum(r.charge for w, r in charges if w >= cut) == 101 + 102
    # With both bounds given, inside the hour
    body = asyncio.run(usage(**{"from": hour.isoformat(), "to": cut.isoformat()}))
    [total] = body["totals"]
    assert total["charge_micros"] == 100
