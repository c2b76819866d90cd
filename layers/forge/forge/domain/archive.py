"""The ledger archive: one deterministic JSON Lines object per ledger entry.

Keys are derived from the entry alone (account, month of `created_at` in UTC, bucket, seq), so
a redelivered stream record maps to the same object and archiving is idempotent. This module
is pure: the S3 side lives in forge.store.s3archive behind the `LedgerArchive` port, and the
DynamoDB stream records the archiver reads are decoded in forge.store.dynamo.stream.
"""

from __future__ import annotations

import enum
from typing import Literal

from forge.domain.calendar import Month
from forge.domain.errors import InvalidRequest
from forge.domain.records import LedgerEntry

LEDGER_PREFIX = "ledger/"
STATEMENT_PREFIX = "statements/"


def check_account_id(account_id: str) -> str:
    """Account ids become S3 key segments: a '/' or an empty id would break the layout."""
    if not account_id or "/" in account_id or account_id.strip() != account_id:
        raise InvalidRequest("account_id must be a non-empty id without '/'", param="account_id")
    return account_id


def archive_key(entry: LedgerEntry) -> str:
    """`ledger/{account_id}/{yyyy}/{mm}/{bucket}-{seq:012d}.jsonl`; month of created_at, UTC."""
    return entry_object_key(entry_series_prefix(entry), entry.seq)


def entry_series_prefix(entry: LedgerEntry) -> str:
    """`ledger/{account_id}/{yyyy}/{mm}/{bucket}-`: the keys of one account, month and bucket,
    which sort by seq (fixed width)."""
    month = Month.of(entry.created_at)
    return f"{ledger_month_prefix(entry.account_id, month)}{entry.bucket.value}-"


def entry_object_key(series_prefix: str, seq: int) -> str:
    return f"{series_prefix}{seq:012d}.jsonl"


def ledger_account_prefix(account_id: str) -> str:
    return f"{LEDGER_PREFIX}{check_account_id(account_id)}/"


def ledger_month_prefix(account_id: str, month: Month) -> str:
    return f"{ledger_account_prefix(account_id)}{month.year:04d}/{month.month:02d}/"


# How a statement is kept: "provisional" (its month is not settled; replaced by each build)
# or "final" (immutable).
StatementState = Literal["final", "provisional"]


class StatementFormat(enum.StrEnum):
    """How a statement is rendered; the value is the file extension."""

    CSV = "csv"
    HTML = "html"

    @property
    def content_type(self) -> str:
        return f"text/{self.value}; charset=utf-8"


def statement_key(account_id: str, month: Month, fmt: StatementFormat = StatementFormat.CSV) -> str:
    """`statements/{account_id}/{yyyy-mm}.{csv|html}`."""
    return f"{STATEMENT_PREFIX}{check_account_id(account_id)}/{month}.{fmt.value}"


def statement_filename(
    account_id: str, month: Month, fmt: StatementFormat = StatementFormat.CSV
) -> str:
    """The name a downloaded statement is saved under."""
    return f"tokens-forge-{check_account_id(account_id)}-{month}.{fmt.value}"


def archive_line(entry: LedgerEntry) -> bytes:
    """The object body: one JSON line."""
    return (entry.model_dump_json() + "\n").encode("utf-8")


def parse_archive_lines(body: bytes) -> list[LedgerEntry]:
    """Read an archive object back (one entry per non-empty line)."""
    return [
        LedgerEntry.model_validate_json(line)
        for line in body.decode("utf-8").splitlines()
        if line.strip()
    ]
