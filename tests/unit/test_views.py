"""Account views, pure: usage totals per group and bucket, time ranges, and page cursors that
only ever continue the listing they were issued for."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta

import pytest
from boto3.dynamodb.types import TypeSerializer

from forge.domain.errors import InvalidCursor, InvalidRequest, NotFound
from forge.domain.money import Bucket, Usage
from forge.domain.records import Attempt, LedgerEntry, LedgerKind, Receipt
from forge.domain.views import (
    TimeRange,
    UsageCell,
    UsageGroupBy,
    UsageRead,
    hour_of,
    summarize_usage,
)
from forge.store.dynamo.schema import (
    BY_SCOPE_INDEX,
    BY_TIME_INDEX,
    entry_index_attributes,
    hour_key,
    receipt_index_attributes,
    time_key,
)
from forge.store.dynamo.totals import receipt_updates, usage_cell_key
from forge.store.dynamo.views import _Query

_serializer = TypeSerializer()


def receipt(n: int, *, bucket: Bucket, key: str, day: int, charge: int, tokens: int) -> Receipt:
    return Receipt(
        request_id=f"req_{n}",
        account_id="acct_v",
        key_id=key,
        project_id="p1" if key == "k1" else "p2",
        requested_model="demo-official" if bucket is Bucket.CREDIT else "demo-routed",
        status="succeeded" if charge else "failed",
        attempts=[
            Attempt(route="demo:x", upstream_model="x", status=200, latency_ms=1, outcome="ok")
        ],
        final_route="demo:x",
        usage=Usage(input_tokens=tokens, output_tokens=tokens // 2),
        charge=charge,
        bucket=bucket,
        created_at=datetime(2025, 3, day, 23, 59, tzinfo=UTC),
    )


RECEIPTS = [
    receipt(1, bucket=Bucket.CREDIT, key="k1", day=1, charge=100, tokens=10),
    receipt(2, bucket=Bucket.CREDIT, key="k2", day=1, charge=250, tokens=30),
    receipt(3, bucket=Bucket.RMB, key="k1", day=2, charge=7_000, tokens=90),
    receipt(4, bucket=Bucket.CREDIT, key="k1", day=2, charge=0, tokens=0),
]
CELLS = [UsageCell.of_receipt(r) for r in RECEIPTS]


def test_usage_is_totalled_per_group_and_bucket_never_across_currencies() -> None:
    lines, totals = summarize_usage(CELLS, UsageGroupBy.KEY)
    assert [(x.group, x.bucket, x.totals.charge, x.totals.requests) for x in lines] == [
        ("k1", Bucket.CREDIT, 100, 2),
        ("k1", Bucket.RMB, 7_000, 1),
        ("k2", Bucket.CREDIT, 250, 1),
    ]
    assert [(t.bucket, t.totals.charge, t.totals.failed) for t in totals] == [
        (Bucket.CREDIT, 350, 1),
        (Bucket.RMB, 7_000, 0),
    ]
    days, _ = summarize_usage(CELLS, UsageGroupBy.DAY)
    assert [(x.group, x.totals.input_tokens) for x in days] == [
        ("2025-03-01", 40),
        ("2025-03-02", 0),
        ("2025-03-02", 90),
    ]


def test_a_refund_counts_in_its_requests_combination_in_the_hour_it_was_written() -> None:
    refunded = RECEIPTS[2]
    refund = LedgerEntry(
        entry_id="le_refund_req_3",
        account_id="acct_v",
        bucket=Bucket.RMB,
        seq=9,
        kind=LedgerKind.REFUND,
        amount=3_000,
        balance_after=3_000,
        created_at=datetime(2025, 3, 5, 7, 30, tzinfo=UTC),
        request_id=refunded.request_id,
        key_id=refunded.key_id,
        project_id=refunded.project_id,
        model=refunded.requested_model,
        route=refunded.final_route,
    )
    cells = [*CELLS, UsageCell.of_refund(refund)]
    models, totals = summarize_usage(cells, UsageGroupBy.MODEL)
    assert [(x.group, x.bucket, x.totals.charge, x.totals.refunded) for x in models] == [
        ("demo-official", Bucket.CREDIT, 350, 0),
        ("demo-routed", Bucket.RMB, 7_000, 3_000),
    ]
    assert [(t.bucket, t.totals.requests, t.totals.refunded) for t in totals] == [
        (Bucket.CREDIT, 3, 0),
        (Bucket.RMB, 1, 3_000),
    ]
    days, _ = summarize_usage(cells, UsageGroupBy.DAY)
    assert ("2025-03-05", Bucket.RMB, 0, 3_000) in [
        (x.group, x.bucket, x.totals.requests, x.totals.refunded) for x in days
    ]


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 3, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "hours", "edges"),
    [
        # Whole hours: cells only
        (at(1, 0), at(2, 0), (at(1, 0), at(2, 0)), []),
        # A start inside an hour: that hour's part is read from receipts
        (at(1, 9, 15), at(1, 12), (at(1, 9), at(1, 12)), [(at(1, 9, 15), at(1, 10))]),
        # An end inside an hour
        (at(1, 9), at(1, 12, 5), (at(1, 9), at(1, 13)), [(at(1, 12), at(1, 12, 5))]),
        # Both, in different hours
        (
            at(1, 9, 15),
            at(3, 2, 45),
            (at(1, 9), at(3, 3)),
            [(at(1, 9, 15), at(1, 10)), (at(3, 2), at(3, 2, 45))],
        ),
        # Both inside the same hour: one part
        (at(1, 9, 15), at(1, 9, 45), (at(1, 9), at(1, 10)), [(at(1, 9, 15), at(1, 9, 45))]),
        # Inside adjacent hours
        (
            at(1, 9, 15),
            at(1, 10, 1),
            (at(1, 9), at(1, 11)),
            [(at(1, 9, 15), at(1, 10)), (at(1, 10), at(1, 10, 1))],
        ),
    ],
)
def test_a_usage_range_reads_whole_hours_as_cells_and_cut_hours_as_receipts(
    start: datetime,
    end: datetime,
    hours: tuple[datetime, datetime],
    edges: list[tuple[datetime, datetime]],
) -> None:
    read = UsageRead.of(TimeRange(start, end))
    assert read.hours == TimeRange(*hours)
    assert read.edges == tuple(TimeRange(*edge) for edge in edges)
    for edge in read.edges:
        assert edge.start is not None and read.edge_at(hour_of(edge.start)) == edge
    # Every instant of [start, end) is counted once: by a whole hour's cell or by one edge
    assert read.hours.start is not None and read.hours.end is not None
    hour = read.hours.start
    while hour < read.hours.end:
        edge = read.edge_at(hour)
        if edge is None:
            assert start <= hour and hour + timedelta(hours=1) <= end
        else:
            assert (edge.start, edge.end) == (max(start, hour), min(end, hour + timedelta(hours=1)))
        hour += timedelta(hours=1)


def test_usage_cells_have_one_key_per_combination_whatever_the_names_hold() -> None:
    base = CELLS[0]
    twins = [
        base.model_copy(update={"key_id": "a#b", "project_id": "c"}),
        base.model_copy(update={"key_id": "a", "project_id": "b#c"}),
        base.model_copy(update={"final_route": None}),
        base.model_copy(update={"final_route": ""}),
        base.model_copy(update={"bucket": None}),
    ]
    keys = [usage_cell_key("acct_v", cell)["sk"] for cell in [base, *twins]]
    assert len(set(keys)) == len(keys)
    assert usage_cell_key("acct_v", base) == usage_cell_key("acct_v", CELLS[0])
    assert usage_cell_key("acct_v", base)["pk"] == "USAGE#acct_v"  # the caller's partition
    # A cell's key sorts inside its hour: after the bare hour, before the next one
    assert hour_key(base.hour) < keys[0] < hour_key(base.hour + timedelta(hours=1))


def test_a_receipt_adds_to_its_cell_and_to_its_runs_total_only_with_a_run() -> None:
    plain = receipt_updates("ledger", RECEIPTS[0])
    assert [u["Update"]["Key"]["pk"]["S"] for u in plain] == ["USAGE#acct_v"]
    in_run = receipt_updates("ledger", RECEIPTS[0].model_copy(update={"run_id": "r-1"}))
    assert in_run[1]["Update"]["Key"] == {"pk": {"S": "RUNSUM#acct_v#r-1"}, "sk": {"S": "credit"}}
    update = in_run[0]["Update"]
    names, values = update["ExpressionAttributeNames"], update["ExpressionAttributeValues"]
    added = {
        names[name]: int(values[value]["N"])
        for name, value in (
            part.split() for part in update["UpdateExpression"].split(" ADD ")[1].split(", ")
        )
    }
    assert added == {
        "requests": 1,
        "succeeded": 1,
        "attempts": 1,
        "input_tokens": 10,
        "output_tokens": 5,
        "charge": 100,
    }


def test_time_ranges_are_utc_half_open_and_bounded() -> None:
    window = TimeRange.of(date(2025, 3, 1), datetime(2025, 3, 2, 1, tzinfo=UTC))
    assert window.start == datetime(2025, 3, 1, tzinfo=UTC)
    with pytest.raises(InvalidRequest):
        TimeRange.of(date(2025, 3, 2), date(2025, 3, 2))
    now = datetime(2025, 3, 17, 8, tzinfo=UTC)
    assert TimeRange().bounded(now, timedelta(days=31)) == TimeRange(
        datetime(2025, 3, 1, tzinfo=UTC), now
    )
    with pytest.raises(InvalidRequest, match="at most 31 days"):
        TimeRange.of(date(2025, 1, 1), None).bounded(now, timedelta(days=31))


def test_time_keys_sort_like_time() -> None:
    moments = [
        datetime(2025, 3, 1, 0, 0, 1, tzinfo=UTC),
        datetime(2025, 3, 1, 0, 0, 1, 500_000, tzinfo=UTC),  # pydantic would write "01.5Z"
        datetime(2025, 3, 1, 2, 0, 2, tzinfo=UTC).astimezone(),  # another zone, same order
    ]
    keys = [time_key(m) for m in moments]
    assert keys == sorted(keys)
    assert keys[0] == "2025-03-01T00:00:01.000000Z"


def test_items_carry_the_index_keys_of_their_views() -> None:
    entry = LedgerEntry(
        entry_id="le_1",
        account_id="acct_v",
        bucket=Bucket.RMB,
        seq=7,
        kind=LedgerKind.GRANT,
        amount=5,
        balance_after=5,
        created_at=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),
    )
    assert entry_index_attributes(entry) == {
        "time_pk": "ENTRIES#acct_v",
        "time_sk": "2025-03-04T05:06:07.000000Z#rmb#000000000007",
        "scope_pk": "ENTRIES#acct_v#rmb",
        "scope_sk": "2025-03-04T05:06:07.000000Z#000000000007",
    }
    plain = receipt_index_attributes(RECEIPTS[0])
    assert set(plain) == {"time_pk", "time_sk"}  # no run: not in the run index (sparse)
    in_run = receipt_index_attributes(RECEIPTS[0].model_copy(update={"run_id": "r-1"}))
    assert in_run["scope_pk"] == "RUN#acct_v#r-1"


# Cursors -----------------------------------------------------------------------------------
def query(account: str = "acct_v", **changes: object) -> _Query:
    base = {
        "account_id": account,
        "index": BY_SCOPE_INDEX,
        "partition": f"ENTRIES#{account}#credit",
        "sk_prefix": "ENTRY#",
        "window": TimeRange.of(date(2025, 3, 1), date(2025, 4, 1)),
    }
    return _Query(**{**base, **changes})  # type: ignore[arg-type]


def item(account: str = "acct_v", when: str = "2025-03-09T00:00:00.000000Z") -> dict[str, object]:
    values = {
        "pk": f"ACCT#{account}",
        "sk": "ENTRY#credit#000000000003",
        "scope_pk": f"ENTRIES#{account}#credit",
        "scope_sk": f"{when}#000000000003",
    }
    return {k: _serializer.serialize(v) for k, v in values.items()}


def encode(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def test_a_cursor_is_the_last_key_and_continues_its_own_query() -> None:
    cursor = query().cursor_of(item())
    assert query().start_key(cursor) == item()


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "%%%",
        "x" * 3000,
        encode([1, 2]),
        encode({"v": 2, "k": {}}),
        encode({"v": 1, "k": {"pk": "ACCT#acct_v"}}),
        encode({"v": 1, "k": {"pk": 1, "sk": 2, "scope_pk": 3, "scope_sk": 4}}),
        encode({"v": 1, "k": {"pk": "ACCT#acct_v", "sk": "x", "time_pk": "y", "time_sk": "z"}}),
    ],
)
def test_malformed_cursors_are_invalid(cursor: str) -> None:
    with pytest.raises(InvalidCursor) as caught:
        query().start_key(cursor)
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        400,
        "invalid_cursor",
        "cursor",
    )


def test_a_cursor_of_another_query_is_invalid_and_of_another_account_not_found() -> None:
    cursor = query().cursor_of(item())
    for other in (
        query(partition="ENTRIES#acct_v#rmb"),
        query(index=BY_TIME_INDEX, partition="ENTRIES#acct_v"),
        query(sk_prefix="RCPT#"),
        query(window=TimeRange.of(date(2025, 3, 10), None)),
        query(window=TimeRange.of(None, date(2025, 3, 9))),
    ):
        with pytest.raises(InvalidCursor):
            other.start_key(cursor)
    with pytest.raises(NotFound):
        query("acct_w", partition="ENTRIES#acct_w#credit").start_key(cursor)
    # A forged cursor claiming the caller's account but another's partition is no way in
    forged = query().cursor_of(
        {**item(), "scope_pk": _serializer.serialize("ENTRIES#acct_w#credit")}
    )
    with pytest.raises(InvalidCursor):
        query().start_key(forged)
