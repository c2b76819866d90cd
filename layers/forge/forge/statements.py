"""Monthly statements, built from the archived ledger and refused unless they reconcile.

Per bucket a statement shows the opening balance (balance_after of the last entry before the
month, or 0), every entry of the month in sequence order, totals by kind and the closing
balance (balance_after of the last entry in or before the month). The chain is verified
first: seq gap-free from 1 and balance_after == previous balance_after + amount. The CSV is a
pure function of the entries, so rebuilding a statement yields identical bytes.

A month still open (or closed less than ARCHIVE_SETTLE_TIME ago) gets a *provisional*
statement, rebuilt on every request; only a final statement is stored for reuse.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forge.archive import LedgerArchive, Month, as_utc, check_account_id, statement_key
from forge.errors import ForgeError, InvalidRequest
from forge.money import Bucket, format_micros
from forge.records import LedgerEntry, LedgerKind, utcnow

# The archive trails the ledger by the stream's delay (seconds, minutes when it retries): a
# statement built the instant a month closes could miss its last entries, so it stays
# provisional until then.
ARCHIVE_SETTLE_TIME = timedelta(hours=1)

CSV_COLUMNS = (
    "row_type",
    "account_id",
    "date",
    "entry_id",
    "bucket",
    "currency",
    "seq",
    "kind",
    "amount",
    "balance_after",
    "request_id",
    "key_id",
    "project_id",
    "model",
    "route",
)
# Spreadsheets run cells that start with these as formulas; model names come from clients.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class LedgerChainBroken(ForgeError):
    """The archived ledger does not reconcile; no statement is published from it."""

    status = 500
    type = "api_error"
    code = "ledger_chain_broken"


class StatementRow(BaseModel):
    """One ledger entry as a statement line."""

    model_config = ConfigDict(frozen=True)

    date: datetime
    entry_id: str
    bucket: Bucket
    seq: int
    kind: LedgerKind
    amount: int
    balance_after: int
    request_id: str | None = None
    key_id: str | None = None
    project_id: str | None = None
    model: str | None = None
    route: str | None = None

    @classmethod
    def of(cls, entry: LedgerEntry) -> StatementRow:
        return cls(
            date=as_utc(entry.created_at),
            entry_id=entry.entry_id,
            bucket=entry.bucket,
            seq=entry.seq,
            kind=entry.kind,
            amount=entry.amount,
            balance_after=entry.balance_after,
            request_id=entry.request_id,
            key_id=entry.key_id,
            project_id=entry.project_id,
            model=entry.model,
            route=entry.route,
        )


class BucketStatement(BaseModel):
    """One bucket's month: opening + sum(rows) == closing, always."""

    model_config = ConfigDict(frozen=True)

    bucket: Bucket
    opening_balance: int
    closing_balance: int
    rows: list[StatementRow] = Field(default_factory=list)
    totals: dict[LedgerKind, int]  # every kind, zeros included, so layouts never shift

    @property
    def currency(self) -> str:
        return self.bucket.currency


class Statement(BaseModel):
    """An account's statement for one month, both buckets."""

    model_config = ConfigDict(frozen=True)

    account_id: str
    month: str  # YYYY-MM
    final: bool = True  # False while the month (and the archive's settle time) is not over
    buckets: list[BucketStatement]


class MonthlyRun(BaseModel):
    """What the scheduled build did: statement keys, and accounts that failed (with codes)."""

    month: str
    statements: list[str] = Field(default_factory=list)
    failed: dict[str, str] = Field(default_factory=dict)


class StatementRequest(BaseModel):
    """What the statement function is asked: one account's month, or every account's month
    (a schedule tick names no month: it means the month before its `time`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    account_id: str | None = None
    month: str | None = None
    rebuild: bool = False
    time: datetime | None = None  # set by EventBridge on scheduled events

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> StatementRequest:
        try:
            return cls.model_validate(event)
        except ValidationError as exc:
            raise InvalidRequest(f"not a statement request ({exc.error_count()} errors)") from exc


class StatementBuilt(BaseModel):
    """One account's statement is in the archive under `key`."""

    account_id: str
    month: str
    key: str


def parse_month(month: Month | str) -> Month:
    """A validated month; InvalidRequest for anything but a real 'YYYY-MM'."""
    return month if isinstance(month, Month) else Month.parse(month)


def verify_chain(entries: Sequence[LedgerEntry]) -> None:
    """Check one bucket's entries (in seq order, from seq 1): gap-free, balances add up."""
    balance = 0
    for expected_seq, entry in enumerate(entries, start=1):
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


def build_bucket_statement(
    bucket: Bucket, month: Month, entries: Sequence[LedgerEntry]
) -> BucketStatement:
    """One bucket's statement from all of its entries (any order, any months)."""
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
    verify_chain(through)
    before = [e for e in through if Month.of(e.created_at) < month]
    rows = [StatementRow.of(e) for e in through if Month.of(e.created_at) == month]
    opening = before[-1].balance_after if before else 0
    closing = through[-1].balance_after if through else 0
    if opening + sum(r.amount for r in rows) != closing:  # guaranteed by the checks above
        raise LedgerChainBroken(f"{bucket.value} statement for {month} does not reconcile")
    totals = {kind: sum(r.amount for r in rows if r.kind is kind) for kind in LedgerKind}
    return BucketStatement(
        bucket=bucket, opening_balance=opening, closing_balance=closing, rows=rows, totals=totals
    )


def build_statement(
    account_id: str, month: Month | str, entries: Iterable[LedgerEntry], *, final: bool = True
) -> Statement:
    """An account's statement for `month` from its ledger entries; LedgerChainBroken if the
    entries do not reconcile."""
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
        buckets=[build_bucket_statement(b, month, es) for b, es in by_bucket.items()],
    )


def _text(value: str | None) -> str:
    if value is None:
        return ""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _when(moment: datetime) -> str:
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_csv(statement: Statement) -> bytes:
    """The statement as CSV bytes (UTF-8, RFC 4180 line ends). Same statement, same bytes."""
    month = Month.parse(statement.month)
    account = _text(statement.account_id)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for part in statement.buckets:
        common = {"account_id": account, "bucket": part.bucket.value, "currency": part.currency}
        rows: list[dict[str, str]] = [
            {
                "row_type": "opening",
                "date": _when(month.start),
                "balance_after": format_micros(part.opening_balance),
            }
        ]
        rows += [
            {
                "row_type": "entry",
                "date": _when(line.date),
                "entry_id": _text(line.entry_id),
                "seq": str(line.seq),
                "kind": line.kind.value,
                "amount": format_micros(line.amount),
                "balance_after": format_micros(line.balance_after),
                "request_id": _text(line.request_id),
                "key_id": _text(line.key_id),
                "project_id": _text(line.project_id),
                "model": _text(line.model),
                "route": _text(line.route),
            }
            for line in part.rows
        ]
        rows += [
            {
                "row_type": "total",
                "kind": kind.value,
                "amount": format_micros(part.totals.get(kind, 0)),
            }
            for kind in LedgerKind
        ]
        rows.append(
            {
                "row_type": "closing" if statement.final else "closing_provisional",
                "date": _when(month.end),
                "balance_after": format_micros(part.closing_balance),
            }
        )
        for cells in rows:
            values = {**common, **cells}
            writer.writerow([values.get(column, "") for column in CSV_COLUMNS])
    return out.getvalue().encode("utf-8")


def ensure_statement(
    archive: LedgerArchive,
    account_id: str,
    month: Month | str,
    *,
    rebuild: bool = False,
    now: datetime | None = None,
) -> str:
    """Make sure an account's statement for `month` is in the archive; return its key.

    A stored final statement is reused unless `rebuild`. A month not yet over (plus
    ARCHIVE_SETTLE_TIME) gets a provisional statement, rebuilt each time, which never
    counts as existing, so the final one replaces it once the month has settled."""
    month = parse_month(month)
    check_account_id(account_id)
    now = as_utc(now or utcnow())
    if month.start > now:
        raise InvalidRequest(f"There is no statement for {month} yet", param="month")
    final = month.end + ARCHIVE_SETTLE_TIME <= now
    if final and not rebuild and archive.statement_exists(account_id, month):
        return statement_key(account_id, month)
    entries = archive.entries(account_id, through=month)
    statement = build_statement(account_id, month, entries, final=final)
    return archive.put_statement(account_id, month, render_csv(statement), final=final)


def build_month_for_all(
    archive: LedgerArchive,
    month: Month | str,
    *,
    rebuild: bool = False,
    now: datetime | None = None,
) -> MonthlyRun:
    """Ensure the statement of every account with activity in `month`; one account's failure
    is recorded and does not stop the others."""
    month = parse_month(month)
    run = MonthlyRun(month=str(month))
    for account_id in archive.accounts_with_activity(month):
        try:
            run.statements.append(
                ensure_statement(archive, account_id, month, rebuild=rebuild, now=now)
            )
        except ForgeError as exc:
            run.failed[account_id] = exc.code
    return run


def run_statements(
    archive: LedgerArchive, request: StatementRequest, *, now: datetime | None = None
) -> StatementBuilt | MonthlyRun:
    """Serve a statement request: one account's statement, or a whole month's."""
    if request.account_id is not None:
        if request.month is None:
            raise InvalidRequest("month is required with account_id", param="month")
        key = ensure_statement(
            archive, request.account_id, request.month, rebuild=request.rebuild, now=now
        )
        return StatementBuilt(account_id=request.account_id, month=request.month, key=key)
    if request.month is not None:
        month = parse_month(request.month)
    else:
        month = Month.of(request.time or now or utcnow()).previous()
    return build_month_for_all(archive, month, rebuild=request.rebuild, now=now)
