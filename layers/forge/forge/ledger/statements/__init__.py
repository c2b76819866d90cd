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

A closed month is compacted (compaction.py) into one object per account and bucket and a
closing record; a statement reads its month (months.py): the compacted objects, or the
month's per-entry objects, after the previous compacted month's closing point.
"""

from forge.ledger.statements.build import (
    LedgerSource,
    build_bucket_statement,
    build_statement,
    check_against_ledger,
    parse_month,
    verify_chain,
)
from forge.ledger.statements.compaction import compact_month
from forge.ledger.statements.model import (
    BucketStatement,
    ChargeGroup,
    ChargeGrouping,
    Statement,
)
from forge.ledger.statements.months import (
    ARCHIVE_SETTLE_TIME,
    MonthOfLedger,
    is_final,
    read_month,
)
from forge.ledger.statements.publish import (
    MonthlyRun,
    StatementBuilt,
    StatementMonth,
    StatementRequest,
    available_months,
    build_month_for_all,
    ensure_statement,
    render,
    run_statements,
    statement_month,
)
from forge.ledger.statements.render_csv import CSV_COLUMNS, render_csv
from forge.ledger.statements.render_html import render_html

__all__ = [
    "ARCHIVE_SETTLE_TIME",
    "CSV_COLUMNS",
    "BucketStatement",
    "ChargeGroup",
    "ChargeGrouping",
    "LedgerSource",
    "MonthOfLedger",
    "MonthlyRun",
    "Statement",
    "StatementBuilt",
    "StatementMonth",
    "StatementRequest",
    "available_months",
    "build_bucket_statement",
    "build_month_for_all",
    "build_statement",
    "check_against_ledger",
    "compact_month",
    "ensure_statement",
    "is_final",
    "parse_month",
    "read_month",
    "render",
    "render_csv",
    "render_html",
    "run_statements",
    "statement_month",
    "verify_chain",
]
