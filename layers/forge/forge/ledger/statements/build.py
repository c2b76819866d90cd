"""Building a statement from the archived ledger, and checking it against the ledger table."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from forge.domain.archive import ChainPoint, check_account_id
from forge.domain.calendar import Month, as_utc
from forge.domain.errors import LedgerChainBroken, StatementNotReady
from forge.domain.money import Bucket, format_micros
from forge.domain.records import LedgerEntry, LedgerKind
from forge.ledger.statements.model import (
    BucketStatement,
    ChargeGroup,
    ChargeGrouping,
    SeriesSpan,
    Statement,
)


class LedgerSource(Protocol):
    """The ledger table, read by sequence: what a statement is reconciled against."""

    def entries_by_seq(
        self, account_id: str, bucket: Bucket, first: int, last: int, shard: int = 0
    ) -> list[LedgerEntry]: ...


# Where each series' chain starts: keyed by (bucket, shard), or by a bare bucket for its
# shard 0 (a bucket that is not split is one series).
Starts = (
    Mapping[Bucket, ChainPoint]
    | Mapping[tuple[Bucket, int], ChainPoint]
    | Mapping[Bucket | tuple[Bucket, int], ChainPoint]
)


def _by_series(starts: Starts) -> dict[tuple[Bucket, int], ChainPoint]:
    return {(k, 0) if isinstance(k, Bucket) else k: point for k, point in starts.items()}


def parse_month(month: Month | str) -> Month:
    """A validated month; InvalidRequest for anything but a real 'YYYY-MM'."""
    return month if isinstance(month, Month) else Month.parse(month)


_FIRST = ChainPoint()  # before a series' first entry


def verify_chain(entries: Sequence[LedgerEntry], start: ChainPoint = _FIRST) -> None:
    """Check one bucket's entries (in seq order, from the one after `start`, seq 1 by
    default): gap-free, balances add up."""
    balance = start.balance
    for expected_seq, entry in enumerate(entries, start=start.seq + 1):
        if entry.seq != expected_seq:
            raise LedgerChainBroken(
                f"ledger {entry.bucket.value} sequence expected {expected_seq}, found {entry.seq}",
                account_id=entry.account_id,
                bucket=entry.bucket.value,
                seq=entry.seq,
            )
        if entry.balance_after != balance + entry.amount:
            raise LedgerChainBroken(
                f"ledger {entry.bucket.value} seq {entry.seq}: balance_after"
                f" {format_micros(entry.balance_after)} != {format_micros(balance)}"
                f" + {format_micros(entry.amount)}",
                account_id=entry.account_id,
                bucket=entry.bucket.value,
                seq=entry.seq,
            )
        balance = entry.balance_after


def _groups(named_amounts: Iterable[tuple[str, int]]) -> list[ChargeGroup]:
    """(name, amount) pairs summed per name, sorted by name."""
    sums: dict[str, tuple[int, int]] = {}
    for name, amount in named_amounts:
        count, total = sums.get(name, (0, 0))
        sums[name] = (count + 1, total + amount)
    return [ChargeGroup(name=n, count=c, amount=a) for n, (c, a) in sorted(sums.items())]


def _series_span(
    bucket: Bucket, shard: int, month: Month, entries: Sequence[LedgerEntry], start: ChainPoint
) -> SeriesSpan:
    """One series' month from its entries after `start` (any order, any months), verified."""
    chain = sorted(entries, key=lambda e: e.seq)
    months = [Month.of(e.created_at) for e in chain]
    cut = next((i for i, m in enumerate(months) if m > month), len(chain))
    # Entries written on different Lambdas carry different clocks: if a later seq fell in an
    # earlier month, splitting by month would not reconcile, so refuse to guess.
    if months[:cut] != sorted(months[:cut]) or any(m <= month for m in months[cut:]):
        raise LedgerChainBroken(
            f"ledger {bucket.value} entries are out of time order around {month}",
            bucket=bucket.value,
        )
    through = chain[:cut]
    verify_chain(through, start)
    before = [e for e in through if Month.of(e.created_at) < month]
    rows = [e for e in through if Month.of(e.created_at) == month]
    opening = ChainPoint(before[-1].seq, before[-1].balance_after) if before else start
    closing = ChainPoint(through[-1].seq, through[-1].balance_after) if through else start
    if opening.balance + sum(r.amount for r in rows) != closing.balance:  # checked above
        raise LedgerChainBroken(f"{bucket.value} statement for {month} does not reconcile")
    return SeriesSpan(shard=shard, opening=opening, closing=closing, rows=rows)


def build_bucket_statement(
    bucket: Bucket, month: Month, entries: Sequence[LedgerEntry], starts: Starts | None = None
) -> BucketStatement:
    """One bucket's statement from its entries after `starts` (any order, any months): all
    of them by default, or those after a compacted month's closing points. A split bucket's
    series are each verified, and their rows merged by time (each series in seq order)."""
    points = _by_series(starts or {})
    by_shard: dict[int, list[LedgerEntry]] = {0: []}
    for entry in entries:
        by_shard.setdefault(entry.shard, []).append(entry)
    shards = by_shard.keys() | {shard for b, shard in points if b is bucket}
    spans = [
        _series_span(
            bucket, shard, month, by_shard.get(shard, []), points.get((bucket, shard), _FIRST)
        )
        for shard in sorted(shards)
    ]
    rows = list(heapq.merge(*(s.rows for s in spans), key=lambda e: as_utc(e.created_at)))
    opening = sum(s.opening.balance for s in spans)
    closing = sum(s.closing.balance for s in spans)
    charges = [r for r in rows if r.kind is LedgerKind.CHARGE]
    kinds = [k for k in LedgerKind if k is not LedgerKind.TRANSFER or k in {r.kind for r in rows}]
    return BucketStatement(
        bucket=bucket,
        opening_balance=opening,
        closing_balance=closing,
        rows=rows,
        balances=list(itertools.accumulate((r.amount for r in rows), initial=opening))[1:],
        series=spans,
        totals={kind: sum(r.amount for r in rows if r.kind is kind) for kind in kinds},
        counts={kind: sum(1 for r in rows if r.kind is kind) for kind in kinds},
        charges_by={
            grouping: _groups((grouping.name_of(r), r.amount) for r in charges)
            for grouping in ChargeGrouping
        },
        daily_charges=_groups((as_utc(r.created_at).date().isoformat(), r.amount) for r in charges),
    )


def build_statement(
    account_id: str,
    month: Month | str,
    entries: Iterable[LedgerEntry],
    *,
    final: bool = True,
    starts: Starts | None = None,
) -> Statement:
    """An account's statement for `month` from its ledger entries (after `starts`, per
    series, or from the first); LedgerChainBroken if the entries do not reconcile."""
    starts = starts or {}
    month = parse_month(month)
    check_account_id(account_id)
    by_bucket: dict[Bucket, list[LedgerEntry]] = {bucket: [] for bucket in Bucket}
    for entry in entries:
        if entry.account_id != account_id:
            raise ValueError(f"entry {entry.entry_id} belongs to another account")
        by_bucket[entry.bucket].append(entry)
    return Statement(
        account_id=account_id,
        month=str(month),
        final=final,
        buckets=[build_bucket_statement(b, month, es, starts) for b, es in by_bucket.items()],
    )


def check_against_ledger(
    statement: Statement, entries: Iterable[LedgerEntry], ledger: LedgerSource
) -> None:
    """Refuse a statement whose closing balances are not the ledger's at the month's end.

    Per series (a bucket, or each shard of a split one), the last archived entry in or
    before the month must be the ledger table's entry of that seq (same id, amount, balance,
    time), and the ledger's next entry, if any, must fall after the month; if it falls
    inside, the archive is behind (StatementNotReady). With no entry after its start, a
    series closes on its start, which must be the ledger's."""
    month = Month.parse(statement.month)
    archived = {(e.bucket, e.shard, e.seq): e for e in entries}
    for part in statement.buckets:
        for span in part.series:
            last = archived.get((part.bucket, span.shard, span.closing.seq))
            _check_series(statement.account_id, part.bucket, span, last, month, ledger)


def _check_series(
    account_id: str,
    bucket: Bucket,
    span: SeriesSpan,
    last: LedgerEntry | None,
    month: Month,
    ledger: LedgerSource,
) -> None:
    last_seq = span.closing.seq
    found = {
        e.seq: e
        for e in ledger.entries_by_seq(
            account_id, bucket, max(last_seq, 1), last_seq + 1, span.shard
        )
    }
    where = {"account_id": account_id, "bucket": bucket.value}
    if (last is not None and found.get(last_seq) != last) or (last_seq and last_seq not in found):
        raise LedgerChainBroken(
            f"archived {bucket.value} entry seq {last_seq} is not the ledger's",
            seq=last_seq,
            **where,
        )
    following = found.get(last_seq + 1)
    if following is not None and as_utc(following.created_at) < month.end:
        raise StatementNotReady(
            f"The {bucket.value} ledger has entries for {month} that are not archived"
            " yet; try again in a minute",
            seq=following.seq,
            **where,
        )
    ledger_closing = found[last_seq].balance_after if last_seq else 0
    if span.closing.balance != ledger_closing:
        raise LedgerChainBroken(
            f"the {bucket.value} closing balance {format_micros(span.closing.balance)}"
            f" is not the ledger's {format_micros(ledger_closing)} at the end of {month}",
            **where,
        )
