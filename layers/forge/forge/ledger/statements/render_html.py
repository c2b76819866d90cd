"""A statement as a self-contained HTML page, with an inline SVG chart of daily spend."""

from __future__ import annotations

from datetime import date, timedelta
from html import escape

from forge.domain.calendar import Month
from forge.domain.money import Bucket, format_micros
from forge.domain.records import LedgerEntry, LedgerKind
from forge.ledger.entry_view import LedgerEntryView
from forge.ledger.statements.model import (
    BucketStatement,
    ChargeGrouping,
    Statement,
    series_seq,
    utc_timestamp,
)

_BUCKET_TITLES = {Bucket.CREDIT: "Credit", Bucket.RMB: "RMB wallet"}
_KIND_TITLES = {
    LedgerKind.TOPUP: "Top-ups",
    LedgerKind.GRANT: "Grants",
    LedgerKind.CHARGE: "Charges",
    LedgerKind.REFUND: "Refunds",
    LedgerKind.ADJUSTMENT: "Adjustments",
    LedgerKind.TRANSFER: "Moved between shards",
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


def _amount_cell(amount: str) -> str:
    return f'<td class="amount">{amount}</td>'


def _html_amount(micros: int) -> str:
    return _amount_cell(format_micros(micros))


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


def _entry_details(view: LedgerEntryView) -> str:
    if view.kind == LedgerKind.CHARGE:
        facts = [
            ("model", view.model),
            ("route", view.route),
            ("key", view.key_id),
            ("project", view.project_id),
            ("request", view.request_id),
        ]
    else:
        facts = [("source", view.source), ("memo", view.memo), ("request", view.request_id)]
    return " · ".join(f"{name} <code>{escape(value)}</code>" for name, value in facts if value)


def _html_entry(entry: LedgerEntry, balance: int) -> str:
    view = LedgerEntryView.of(entry)
    seq = series_seq(entry)
    # A shard's `03-17` stays on one line: a non-breaking hyphen, not a stylesheet change,
    # so an unsplit account's pages keep their bytes.
    shown = seq.replace("-", "\u2011")
    return (
        f'<tr data-entry-id="{escape(view.entry_id)}" data-seq="{seq}"'
        f' data-kind="{view.kind}" data-amount="{view.amount}"'
        f' data-balance-after="{format_micros(balance)}">'
        f"<td>{utc_timestamp(view.created_at)}</td><td>{shown}</td><td>{view.kind}</td>"
        f"<td>{_entry_details(view)}</td>{_amount_cell(view.amount)}"
        f"{_amount_cell(format_micros(balance))}</tr>"
    )


def _html_entries(part: BucketStatement) -> list[str]:
    if not part.rows:
        return ['<p class="empty">No ledger entries this month.</p>']
    out = [
        '<table class="entries"><thead><tr><th>Time (UTC)</th><th>Seq</th><th>Kind</th>'
        '<th>Details</th><th class="amount">Amount</th><th class="amount">Balance</th>'
        "</tr></thead><tbody>"
    ]
    out += [
        _html_entry(entry, balance) for entry, balance in zip(part.rows, part.balances, strict=True)
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
        for kind in part.totals
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
