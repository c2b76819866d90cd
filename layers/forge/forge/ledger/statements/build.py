"""Building a statement from the archived ledger, and checking it against the ledger table."""

from __future__ import annotations

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
    Statement,
)


class LedgerSource(Protocol):
    """The ledger table, read by sequence: what a statement is reconciled against."""

    def entries_by_seq(
        self, account_id: str, bucket: Bucket, first: int, last: int
    ) -> list[LedgerEntry]: ...


def parse_month(month: Month | str) -> Month:
    """A validated month; InvalidRequest for anything but a real 'YYYY-MM'."""
    return month if isinstance(month, Month) else Month.parse(month)


_FIRST = ChainPoint()  # before a bucket's first entry


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


def build_bucket_statement(
    bucket: Bucket, month: Month, entries: Sequence[LedgerEntry], start: ChainPoint = _FIRST
) -> BucketStatement:
    """One bucket's statement from its entries after `start` (any order, any months): all of
    them by default, or those after a compacted month's closing point."""
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
    opening = before[-1].balance_after if before else start.balance
    closing = through[-1].balance_after if through else start.balance
    if opening + sum(r.amount for r in rows) != closing:  # guaranteed by the checks above
        raise LedgerChainBroken(f"{bucket.value} statement for {month} does not reconcile")
    charges = [r for r in rows if r.kind is LedgerKind.CHARGE]
    return BucketStatement(
        bucket=bucket,
        opening_balance=opening,
        closing_balance=closing,
        rows=rows,
        totals={kind: sum(r.amount for r in rows if r.kind is kind) for kind in LedgerKind},
        counts={kind: sum(1 for r in rows if r.kind is kind) for kind in LedgerKind},
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
    starts: Mapping[Bucket, ChainPoint] | None = None,
) -> Statement:
    """An account's statement for `month` from its ledger entries (after `starts`, per
    bucket, or from the first); LedgerChainBroken if the entries do not reconcile."""
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
        buckets=[
            build_bucket_statement(b, month, es, starts.get(b, _FIRST))
            for b, es in by_bucket.items()
        ],
    )


def check_against_ledger(
    statement: Statement,
    entries: Iterable[LedgerEntry],
    ledger: LedgerSource,
    starts: Mapping[Bucket, ChainPoint] | None = None,
) -> None:
    """Refuse a statement whose closing balances are not the ledger's at the month's end.

    Per bucket, the last archived entry in or before the month must be the ledger table's
    entry of that seq (same id, amount, balance, time), and the ledger's next entry, if any,
    must fall after the month; if it falls inside, the archive is behind (StatementNotReady).
    With no entry after its start, a bucket closes on its start, which must be the ledger's."""
    month = Month.parse(statement.month)
    entries = list(entries)
    for part in statement.buckets:
        archived = sorted(
            (e for e in entries if e.bucket is part.bucket and Month.of(e.created_at) <= month),
            key=lambda e: e.seq,
        )
        last = archived[-1] if archived else None
        last_seq = last.seq if last else (starts or {}).get(part.bucket, _FIRST).seq
        found = {
            e.seq: e
            for e in ledger.entries_by_seq(
                statement.account_id, part.bucket, max(last_seq, 1), last_seq + 1
            )
        }
        where = {"account_id": statement.account_id, "bucket": part.bucket.value}
        if (last is not None and found.get(last_seq) != last) or (
            last_seq and last_seq not in found
        ):
            raise LedgerChainBroken(
                f"archived {part.bucket.value} entry seq {last_seq} is not the ledger's",
                seq=last_seq,
                **where,
            )
        following = found.get(last_seq + 1)
        if following is not None and as_utc(following.created_at) < month.end:
            raise StatementNotReady(
                f"The {part.bucket.value} ledger has entries for {month} that are not archived"
                " yet; try again in a minute",
                seq=following.seq,
                **where,
            )
        ledger_closing = found[last_seq].balance_after if last_seq else 0
        if part.closing_balance != ledger_closing:
            raise LedgerChainBroken(
                f"the {part.bucket.value} closing balance {format_micros(part.closing_balance)}"
                f" is not the ledger's {format_micros(ledger_closing)} at the end of {month}",
                **where,
            )
