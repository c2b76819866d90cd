"""Monthly statements, built from the archived ledger and refused unless they reconcile.

Per bucket a statement shows the opening balance (balance_after of the last entry before the
month, or 0), every entry of the month in sequence order, totals by kind, charges grouped by
key, project, model, route and day, and the closing balance (balance_after of the last entry
in or before the month). Before anything is published the archived chain is verified (seq
gap-free from 1, balance_after == previous balance_after + amount) and the closing balance is
checked against the ledger table itself: the month's last entry must be the ledger's, and the
ledger must hold no later entry of that month the archive has not caught up with.

Two renderings, CSV (one row per entry plus the summary) and HTML (a readable page with an
inline SVG chart of daily spend), are pure functions of the statement, so rebuilding a
statement yields identical bytes. A closed month's statement is final and immutable: it is
written once, and a rebuild that would differ is refused instead of replacing it.

A month still open (or closed less than ARCHIVE_SETTLE_TIME ago) gets a *provisional*
statement, rebuilt on every request; only a final statement is stored for reuse.
"""

from __future__ import annotations

import csv
import enum
import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from html import escape
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forge.domain.calendar import Month, as_utc
from forge.domain.errors import (
    ForgeError,
    InvalidRequest,
    LedgerChainBroken,
    NotFound,
    StatementMismatch,
    StatementNotReady,
)
from forge.domain.money import Bucket, format_micros
from forge.domain.records import LedgerEntry, LedgerKind, utcnow
from forge.ledger.archive import LedgerArchive, StatementFormat, check_account_id, statement_key

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
    "source",
    "memo",
    "count",
)
# Spreadsheets run cells that start with these as formulas; model names come from clients.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class LedgerSource(Protocol):
    """The ledger table, read by sequence: what a statement is reconciled against."""

    def entries_by_seq(
        self, account_id: str, bucket: Bucket, first: int, last: int
    ) -> list[LedgerEntry]: ...


class ChargeGrouping(enum.StrEnum):
    """How charges are summed on a statement; the value names the CSV row type's suffix."""

    KEY = "key"
    PROJECT = "project"
    MODEL = "model"
    ROUTE = "route"

    @property
    def column(self) -> str:
        """The CSV column (and StatementRow field) that holds the group's name."""
        return {"key": "key_id", "project": "project_id"}.get(self.value, self.value)

    @property
    def heading(self) -> str:
        return {"key": "API key"}.get(self.value, self.value.capitalize())


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
    source: str | None = None
    memo: str | None = None

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
            source=entry.source,
            memo=entry.memo,
        )

    def group_name(self, grouping: ChargeGrouping) -> str:
        return str(getattr(self, grouping.column) or "")


class ChargeGroup(BaseModel):
    """The charges of one key, project, model, route or day: how many, and their sum
    (negative, as on the ledger)."""

    model_config = ConfigDict(frozen=True)

    name: str
    count: int
    amount: int


class BucketStatement(BaseModel):
    """One bucket's month: opening + sum(rows) == closing, always."""

    model_config = ConfigDict(frozen=True)

    bucket: Bucket
    opening_balance: int
    closing_balance: int
    rows: list[StatementRow] = Field(default_factory=list)
    totals: dict[LedgerKind, int]  # every kind, zeros included, so layouts never shift
    counts: dict[LedgerKind, int] = Field(default_factory=dict)
    charges_by: dict[ChargeGrouping, list[ChargeGroup]] = Field(default_factory=dict)
    daily_charges: list[ChargeGroup] = Field(default_factory=list)  # name: YYYY-MM-DD

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


class StatementMonth(BaseModel):
    """A month an account has a statement for."""

    month: str
    final: bool


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
    """One account's statement is in the archive under `key` (CSV; the HTML page beside it)."""

    account_id: str
    month: str
    key: str


def parse_month(month: Month | str) -> Month:
    """A validated month; InvalidRequest for anything but a real 'YYYY-MM'."""
    return month if isinstance(month, Month) else Month.parse(month)


def is_final(month: Month, now: datetime) -> bool:
    """A month's statement is final once the month is over and the archive has settled."""
    return month.end + ARCHIVE_SETTLE_TIME <= as_utc(now)


def available_months(first_activity: datetime | None, now: datetime) -> list[StatementMonth]:
    """Every month from the account's first ledger entry to `now`'s, newest first."""
    if first_activity is None:
        return []
    first, month = Month.of(first_activity), Month.of(now)
    months = []
    while month >= first:
        months.append(StatementMonth(month=str(month), final=is_final(month, now)))
        month = month.previous()
    return months


def statement_month(
    account_id: str, first_activity: datetime | None, month: Month | str, now: datetime
) -> StatementMonth:
    """`month` among the account's statement months, or NotFound: a month before its first
    ledger entry, or after now, has no statement (as the API lists and serves them)."""
    month = parse_month(month)
    for listed in available_months(first_activity, now):
        if listed.month == str(month):
            return listed
    span = (
        "it has no ledger entries"
        if first_activity is None
        else f"it has statements from {Month.of(first_activity)} to {Month.of(now)}"
    )
    raise NotFound(f"No statement for {month} in account {account_id}: {span}", param="month")


# Building --------------------------------------------------------------------------------------
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


def _groups(named_amounts: Iterable[tuple[str, int]]) -> list[ChargeGroup]:
    """(name, amount) pairs summed per name, sorted by name."""
    sums: dict[str, tuple[int, int]] = {}
    for name, amount in named_amounts:
        count, total = sums.get(name, (0, 0))
        sums[name] = (count + 1, total + amount)
    return [ChargeGroup(name=n, count=c, amount=a) for n, (c, a) in sorted(sums.items())]


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
    charges = [r for r in rows if r.kind is LedgerKind.CHARGE]
    return BucketStatement(
        bucket=bucket,
        opening_balance=opening,
        closing_balance=closing,
        rows=rows,
        totals={kind: sum(r.amount for r in rows if r.kind is kind) for kind in LedgerKind},
        counts={kind: sum(1 for r in rows if r.kind is kind) for kind in LedgerKind},
        charges_by={
            grouping: _groups((r.group_name(grouping), r.amount) for r in charges)
            for grouping in ChargeGrouping
        },
        daily_charges=_groups((r.date.date().isoformat(), r.amount) for r in charges),
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


def check_against_ledger(
    statement: Statement, entries: Iterable[LedgerEntry], ledger: LedgerSource
) -> None:
    """Refuse a statement whose closing balances are not the ledger's at the month's end.

    Per bucket, the last archived entry in or before the month must be the ledger table's
    entry of that seq (same id, amount, balance, time), and the ledger's next entry, if any,
    must fall after the month; if it falls inside, the archive is behind (StatementNotReady)."""
    month = Month.parse(statement.month)
    for part in statement.buckets:
        archived = sorted(
            (e for e in entries if e.bucket is part.bucket and Month.of(e.created_at) <= month),
            key=lambda e: e.seq,
        )
        last = archived[-1] if archived else None
        last_seq = last.seq if last else 0
        found = {
            e.seq: e
            for e in ledger.entries_by_seq(
                statement.account_id, part.bucket, max(last_seq, 1), last_seq + 1
            )
        }
        where = {"account_id": statement.account_id, "bucket": part.bucket.value}
        if last is not None and found.get(last_seq) != last:
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


# CSV -------------------------------------------------------------------------------------------
def _text(value: str | None) -> str:
    if value is None:
        return ""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _when(moment: datetime) -> str:
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bucket_csv_rows(statement: Statement, part: BucketStatement) -> list[dict[str, str]]:
    month = Month.parse(statement.month)
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
            "source": _text(line.source),
            "memo": _text(line.memo),
        }
        for line in part.rows
    ]
    rows += [
        {
            "row_type": "total",
            "kind": kind.value,
            "amount": format_micros(part.totals.get(kind, 0)),
            "count": str(part.counts.get(kind, 0)),
        }
        for kind in LedgerKind
    ]
    for grouping in ChargeGrouping:
        rows += [
            {
                "row_type": f"charges_by_{grouping.value}",
                "kind": LedgerKind.CHARGE.value,
                grouping.column: _text(group.name),
                "amount": format_micros(group.amount),
                "count": str(group.count),
            }
            for group in part.charges_by.get(grouping, [])
        ]
    rows += [
        {
            "row_type": "charges_by_day",
            "kind": LedgerKind.CHARGE.value,
            "date": day.name,
            "amount": format_micros(day.amount),
            "count": str(day.count),
        }
        for day in part.daily_charges
    ]
    rows.append(
        {
            "row_type": "closing" if statement.final else "closing_provisional",
            "date": _when(month.end),
            "balance_after": format_micros(part.closing_balance),
        }
    )
    return rows


def render_csv(statement: Statement) -> bytes:
    """The statement as CSV bytes (UTF-8, RFC 4180 line ends). Same statement, same bytes.

    Per bucket: `opening`, one `entry` row per ledger entry, a `total` (and count) per kind,
    `charges_by_{key,project,model,route,day}` summaries, then `closing` (or
    `closing_provisional` while the month is open)."""
    account = _text(statement.account_id)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for part in statement.buckets:
        common = {"account_id": account, "bucket": part.bucket.value, "currency": part.currency}
        for cells in _bucket_csv_rows(statement, part):
            values = {**common, **cells}
            writer.writerow([values.get(column, "") for column in CSV_COLUMNS])
    return out.getvalue().encode("utf-8")


# HTML ------------------------------------------------------------------------------------------
_BUCKET_TITLES = {Bucket.CREDIT: "Credit", Bucket.RMB: "RMB wallet"}
_KIND_TITLES = {
    LedgerKind.TOPUP: "Top-ups",
    LedgerKind.GRANT: "Grants",
    LedgerKind.CHARGE: "Charges",
    LedgerKind.REFUND: "Refunds",
    LedgerKind.ADJUSTMENT: "Adjustments",
}
_CHART_HEIGHT = 120  # px of the tallest bar
_CHART_SLOT = 16  # px per day of the month
_CHART_MARGIN = 24
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2433;margin:2rem auto;
max-width:60rem;padding:0 1rem}
h1{margin-bottom:.2rem}h2{margin-top:2.5rem;border-bottom:2px solid #1d2433}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}
th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #e3e6ee;vertical-align:top}
td.amount,td.count,th.amount{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.summary{width:auto;min-width:24rem}tr[data-row=opening] th,tr[data-row=closing] th,
tr[data-row=closing_provisional] th{font-weight:700}
.meta,.note,figcaption{color:#5b6478}.status{padding:.1rem .5rem;border-radius:.3rem;
background:#e6f4ea}.status[data-status=provisional]{background:#fff4d6}
svg.daily-spend{max-width:100%;height:auto}svg .bar{fill:#3b6fd8}svg .axis{stroke:#9aa3b5}
svg text{font-size:9px;fill:#5b6478}code{font-size:12px}
""".strip()


def _html_amount(micros: int) -> str:
    return f'<td class="amount">{format_micros(micros)}</td>'


def _daily_chart(month: Month, part: BucketStatement) -> str:
    """An inline SVG: one bar per day with charges, placed at its day of the month, height
    proportional to that day's spend (integer arithmetic, so the same bytes every time)."""
    days = (month.end - month.start).days
    width = 2 * _CHART_MARGIN + days * _CHART_SLOT
    height = _CHART_HEIGHT + 2 * _CHART_MARGIN
    base = _CHART_MARGIN + _CHART_HEIGHT
    spends = {day.name: -day.amount for day in part.daily_charges}
    tallest = max([s for s in spends.values() if s > 0], default=0)
    parts = [
        f'<svg class="daily-spend" xmlns="http://www.w3.org/2000/svg" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="Daily spend in {part.currency}, {month}">',
        f'<line class="axis" x1="{_CHART_MARGIN}" y1="{base}" x2="{width - _CHART_MARGIN}"'
        f' y2="{base}"/>',
        f'<text x="{_CHART_MARGIN}" y="{_CHART_MARGIN - 8}">max'
        f" {escape(format_micros(tallest))} {part.currency}/day</text>",
    ]
    for day in part.daily_charges:
        spend = spends[day.name]
        bar = max(1, spend * _CHART_HEIGHT // tallest) if tallest else 1
        x = _CHART_MARGIN + (date.fromisoformat(day.name).day - 1) * _CHART_SLOT + 2
        charges = "1 charge" if day.count == 1 else f"{day.count} charges"
        label = f"{day.name}: {format_micros(spend)} {part.currency} in {charges}"
        parts.append(
            f'<rect class="bar" data-day="{day.name}" data-amount="{format_micros(day.amount)}"'
            f' data-count="{day.count}" x="{x}" y="{base - bar}" width="{_CHART_SLOT - 4}"'
            f' height="{bar}"><title>{escape(label)}</title></rect>'
            f'<text x="{x}" y="{base + 12}">{date.fromisoformat(day.name).day:02d}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _html_groups(part: BucketStatement) -> list[str]:
    out = []
    for grouping in ChargeGrouping:
        groups = part.charges_by.get(grouping, [])
        out.append(f"<h3>Charges by {grouping.heading.lower()}</h3>")
        if not groups:
            out.append(f'<p class="empty" data-group="{grouping.value}">No charges.</p>')
            continue
        out.append(
            f'<table class="charges-by" data-group="{grouping.value}"><thead><tr>'
            f'<th>{grouping.heading}</th><th class="amount">Charges</th>'
            f'<th class="amount">Amount</th></tr></thead><tbody>'
        )
        out += [
            f'<tr data-name="{escape(g.name)}" data-count="{g.count}"'
            f' data-amount="{format_micros(g.amount)}"><td><code>{escape(g.name or "-")}</code>'
            f'</td><td class="count">{g.count}</td>{_html_amount(g.amount)}</tr>'
            for g in groups
        ]
        out.append("</tbody></table>")
    return out


def _entry_details(row: StatementRow) -> str:
    if row.kind is LedgerKind.CHARGE:
        facts = [
            ("model", row.model),
            ("route", row.route),
            ("key", row.key_id),
            ("project", row.project_id),
            ("request", row.request_id),
        ]
    else:
        facts = [("source", row.source), ("memo", row.memo), ("request", row.request_id)]
    return " · ".join(f"{name} <code>{escape(value)}</code>" for name, value in facts if value)


def _html_entries(part: BucketStatement) -> list[str]:
    if not part.rows:
        return ['<p class="empty">No ledger entries this month.</p>']
    out = [
        '<table class="entries"><thead><tr><th>Time (UTC)</th><th>Seq</th><th>Kind</th>'
        '<th>Details</th><th class="amount">Amount</th><th class="amount">Balance</th>'
        "</tr></thead><tbody>"
    ]
    out += [
        f'<tr data-entry-id="{escape(row.entry_id)}" data-seq="{row.seq}"'
        f' data-kind="{row.kind.value}" data-amount="{format_micros(row.amount)}"'
        f' data-balance-after="{format_micros(row.balance_after)}">'
        f"<td>{_when(row.date)}</td><td>{row.seq}</td><td>{row.kind.value}</td>"
        f"<td>{_entry_details(row)}</td>{_html_amount(row.amount)}"
        f"{_html_amount(row.balance_after)}</tr>"
        for row in part.rows
    ]
    out.append("</tbody></table>")
    return out


def _html_bucket(statement: Statement, part: BucketStatement) -> list[str]:
    month = Month.parse(statement.month)
    closing = "closing" if statement.final else "closing_provisional"
    closing_title = "Closing balance" if statement.final else "Closing balance (so far)"
    out = [
        f'<section class="bucket" data-bucket="{part.bucket.value}"'
        f' data-currency="{part.currency}">',
        f"<h2>{_BUCKET_TITLES[part.bucket]} ({part.currency})</h2>",
        '<table class="summary"><tbody>',
        f'<tr data-row="opening" data-amount="{format_micros(part.opening_balance)}">'
        f'<th scope="row">Opening balance</th>{_html_amount(part.opening_balance)}</tr>',
    ]
    out += [
        f'<tr data-row="{kind.value}" data-count="{part.counts.get(kind, 0)}"'
        f' data-amount="{format_micros(part.totals.get(kind, 0))}"><th scope="row">'
        f"{_KIND_TITLES[kind]} ({part.counts.get(kind, 0)})</th>"
        f"{_html_amount(part.totals.get(kind, 0))}</tr>"
        for kind in LedgerKind
    ]
    out += [
        f'<tr data-row="{closing}" data-amount="{format_micros(part.closing_balance)}">'
        f'<th scope="row">{closing_title}</th>{_html_amount(part.closing_balance)}</tr>',
        "</tbody></table>",
        "<h3>Daily spend</h3>",
        "<figure>",
        _daily_chart(month, part),
        "<figcaption>One bar per day with charges (UTC days).</figcaption>",
        "</figure>",
        *_html_groups(part),
        "<h3>Entries</h3>",
        *_html_entries(part),
        "</section>",
    ]
    return out


def render_html(statement: Statement) -> bytes:
    """The statement as a self-contained HTML page (no scripts, no external assets). Same
    statement, same bytes."""
    month = Month.parse(statement.month)
    account = escape(statement.account_id)
    status = "final" if statement.final else "provisional"
    last_day = (month.end - timedelta(days=1)).date().isoformat()
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Tokens Forge statement {month} for {account}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        f'<body data-account="{account}" data-month="{month}" data-status="{status}">',
        "<header>",
        f"<h1>Statement for {month}</h1>",
        f'<p class="meta">Account <code>{account}</code> · {month.start.date().isoformat()}'
        f' to {last_day} (UTC) · <strong class="status" data-status="{status}">'
        f"{status.capitalize()}</strong></p>",
        '<p class="note">Amounts are in each bucket\'s currency to six decimals; charges are'
        " negative, money in is positive. Each bucket's closing balance is its opening"
        " balance plus every entry listed, and equals the ledger's balance at the end of"
        " the month.</p>",
        "</header>",
        "<main>",
    ]
    for part in statement.buckets:
        lines += _html_bucket(statement, part)
    lines += ["</main>", "</body>", "</html>", ""]
    return "\n".join(lines).encode("utf-8")


def render(statement: Statement, fmt: StatementFormat) -> bytes:
    return render_csv(statement) if fmt is StatementFormat.CSV else render_html(statement)


# Publishing ------------------------------------------------------------------------------------
def ensure_statement(
    archive: LedgerArchive,
    ledger: LedgerSource,
    account_id: str,
    month: Month | str,
    *,
    rebuild: bool = False,
    now: datetime | None = None,
) -> str:
    """Make sure an account's statement for `month` is in the archive, in both formats;
    return the CSV's key (the HTML page is beside it).

    A stored final statement is reused unless `rebuild`, which builds it again and checks
    the bytes are the stored ones (StatementMismatch if not; the stored one stays). A month
    not yet over (plus ARCHIVE_SETTLE_TIME) gets a provisional statement, rebuilt each time,
    which never counts as existing, so the final one replaces it once the month has settled."""
    month = parse_month(month)
    check_account_id(account_id)
    now = as_utc(now or utcnow())
    if month.start > now:
        raise InvalidRequest(f"There is no statement for {month} yet", param="month")
    final = is_final(month, now)
    formats = (StatementFormat.HTML, StatementFormat.CSV)
    if (
        final
        and not rebuild
        and all(archive.statement_exists(account_id, month, fmt) for fmt in formats)
    ):
        return statement_key(account_id, month)
    entries = archive.entries(account_id, through=month)
    statement = build_statement(account_id, month, entries, final=final)
    check_against_ledger(statement, entries, ledger)
    for fmt in formats:
        body = render(statement, fmt)
        if final and (stored := archive.final_statement(account_id, month, fmt)) is not None:
            if stored != body:
                raise StatementMismatch(
                    f"The final {fmt.value} statement for {month} differs from a rebuild;"
                    " it stays as stored",
                    account_id=account_id,
                    month=str(month),
                    format=fmt.value,
                )
            continue
        archive.put_statement(account_id, month, body, final=final, fmt=fmt)
    return statement_key(account_id, month)


def build_month_for_all(
    archive: LedgerArchive,
    ledger: LedgerSource,
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
                ensure_statement(archive, ledger, account_id, month, rebuild=rebuild, now=now)
            )
        except ForgeError as exc:
            run.failed[account_id] = exc.code
    return run


def run_statements(
    archive: LedgerArchive,
    ledger: LedgerSource,
    request: StatementRequest,
    *,
    now: datetime | None = None,
) -> StatementBuilt | MonthlyRun:
    """Serve a statement request: one account's statement, or a whole month's."""
    if request.account_id is not None:
        if request.month is None:
            raise InvalidRequest("month is required with account_id", param="month")
        key = ensure_statement(
            archive, ledger, request.account_id, request.month, rebuild=request.rebuild, now=now
        )
        return StatementBuilt(account_id=request.account_id, month=request.month, key=key)
    if request.month is not None:
        month = parse_month(request.month)
    else:
        month = Month.of(request.time or now or utcnow()).previous()
    return build_month_for_all(archive, ledger, month, rebuild=request.rebuild, now=now)
