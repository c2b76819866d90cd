"""Publishing statements: which months an account has, when a month's statement is final,
and putting both renderings in the archive, written once and never replaced. The monthly run
compacts each active account's closed month before building its statement."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forge.domain.archive import StatementFormat, check_account_id, statement_key
from forge.domain.calendar import Month, as_utc
from forge.domain.errors import ForgeError, InvalidRequest, NotFound, StatementMismatch
from forge.domain.records import utcnow
from forge.ledger.statements.build import (
    LedgerSource,
    build_statement,
    check_against_ledger,
    parse_month,
)
from forge.ledger.statements.compaction import compact_month
from forge.ledger.statements.model import Statement
from forge.ledger.statements.months import is_final, read_month
from forge.ledger.statements.render_csv import render_csv
from forge.ledger.statements.render_html import render_html
from forge.ports import LedgerArchive


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


def render(statement: Statement, fmt: StatementFormat) -> bytes:
    """The statement in one of its two formats."""
    return render_csv(statement) if fmt is StatementFormat.CSV else render_html(statement)


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
    part = read_month(archive, account_id, month)
    statement = build_statement(account_id, month, part.entries, final=final, starts=part.starts)
    check_against_ledger(statement, part.entries, ledger)
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
    """Ensure the statement of every account with activity in `month`, compacting the month
    first once it has settled; one account's failure is recorded and does not stop the others."""
    month = parse_month(month)
    now = as_utc(now or utcnow())
    run = MonthlyRun(month=str(month))
    for account_id in archive.accounts_with_activity(month):
        try:
            if is_final(month, now):
                compact_month(archive, ledger, account_id, month, now=now)
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
