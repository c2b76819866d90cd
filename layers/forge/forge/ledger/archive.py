"""The ledger archive: stream records in, one deterministic JSON Lines object per entry out.

Keys are derived from the entry alone (account, month of `created_at` in UTC, bucket, seq), so
a redelivered stream record maps to the same object and archiving is idempotent. This module
is pure: the S3 side lives in forge.store.s3archive behind the `LedgerArchive` port.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forge.domain.calendar import Month
from forge.domain.errors import InvalidRequest
from forge.domain.records import LEDGER_SCHEMA_VERSION, LedgerEntry

LEDGER_PREFIX = "ledger/"
STATEMENT_PREFIX = "statements/"
LEDGER_RECORD_TYPE = "ledger_entry"


class MalformedStreamRecord(ValueError):
    """A stream record that claims to be a ledger entry but cannot be read as one.

    The archiver reports it as a batch item failure instead of silently dropping money."""


def check_account_id(account_id: str) -> str:
    """Account ids become S3 key segments: a '/' or an empty id would break the layout."""
    if not account_id or "/" in account_id or account_id.strip() != account_id:
        raise InvalidRequest("account_id must be a non-empty id without '/'", param="account_id")
    return account_id


def archive_key(entry: LedgerEntry) -> str:
    """`ledger/{account_id}/{yyyy}/{mm}/{bucket}-{seq:012d}.jsonl`; month of created_at, UTC."""
    month = Month.of(entry.created_at)
    return (
        f"{ledger_month_prefix(entry.account_id, month)}{entry.bucket.value}-{entry.seq:012d}.jsonl"
    )


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


# Stream records ------------------------------------------------------------------------------
class StreamChange(BaseModel):
    """The `dynamodb` part of a DynamoDB Streams record (images in DynamoDB JSON)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    sequence_number: str = Field(alias="SequenceNumber")
    keys: dict[str, dict[str, Any]] = Field(default_factory=dict, alias="Keys")
    new_image: dict[str, dict[str, Any]] | None = Field(default=None, alias="NewImage")


class StreamRecord(BaseModel):
    """One DynamoDB Streams record as Lambda delivers it."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    event_id: str = Field(alias="eventID")
    event_name: Literal["INSERT", "MODIFY", "REMOVE"] = Field(alias="eventName")
    dynamodb: StreamChange


def attribute_value(value: Mapping[str, Any]) -> Any:
    """One DynamoDB JSON attribute value as a plain Python value (numbers stay exact)."""
    if len(value) != 1:
        raise MalformedStreamRecord("an attribute value has exactly one type tag")
    ((tag, raw),) = value.items()
    match tag:
        case "S" | "B":
            return raw
        case "N":
            number = Decimal(raw)
            return int(number) if number == number.to_integral_value() else number
        case "BOOL":
            return bool(raw)
        case "NULL":
            return None
        case "M":
            return {k: attribute_value(v) for k, v in raw.items()}
        case "L":
            return [attribute_value(v) for v in raw]
        case "SS" | "BS":
            return set(raw)
        case "NS":
            return {attribute_value({"N": n}) for n in raw}
    raise MalformedStreamRecord(f"unknown attribute type {tag!r}")


def ledger_entry_from_image(image: Mapping[str, Mapping[str, Any]]) -> LedgerEntry | None:
    """A ledger table item (DynamoDB JSON) as a LedgerEntry; None for receipts and others."""
    try:
        plain = {name: attribute_value(value) for name, value in image.items()}
    except (AttributeError, TypeError, ArithmeticError, ValueError) as exc:
        raise MalformedStreamRecord(f"unreadable image: {exc}") from exc
    if plain.get("record_type") != LEDGER_RECORD_TYPE:
        return None
    version = plain.get("schema_version", LEDGER_SCHEMA_VERSION)
    if not isinstance(version, int) or not 1 <= version <= LEDGER_SCHEMA_VERSION:
        # A newer writer's entry may mean something this reader cannot see: fail it (and
        # retry until the archiver is upgraded) rather than archive a misreading.
        raise MalformedStreamRecord(f"ledger entry schema_version {version!r} is not supported")
    try:
        return LedgerEntry.model_validate(plain)
    except ValidationError as exc:
        raise MalformedStreamRecord(
            f"ledger entry image does not validate ({exc.error_count()} errors)"
        ) from exc


def ledger_entry_from_stream_record(record: Mapping[str, Any]) -> LedgerEntry | None:
    """The ledger entry a stream record carries; None for REMOVE events and non-ledger items.

    Raises MalformedStreamRecord when the record cannot be read, so it is retried and surfaced
    rather than lost."""
    try:
        parsed = StreamRecord.model_validate(record)
    except ValidationError as exc:
        raise MalformedStreamRecord(
            f"not a DynamoDB stream record ({exc.error_count()} errors)"
        ) from exc
    if parsed.event_name == "REMOVE":
        return None
    if parsed.dynamodb.new_image is None:
        # Without the image we cannot tell a receipt from an entry: the stream must be
        # NEW_IMAGE (or NEW_AND_OLD_IMAGES), so this is a configuration error worth failing on.
        raise MalformedStreamRecord("stream record has no NewImage; is the view type NEW_IMAGE?")
    return ledger_entry_from_image(parsed.dynamodb.new_image)


class LedgerArchive(Protocol):
    """The archive port: where ledger entries and statements are kept (S3 in production)."""

    def put_entry(self, entry: LedgerEntry) -> bool: ...

    def entries(self, account_id: str, *, through: Month | None = None) -> list[LedgerEntry]: ...

    def accounts_with_activity(self, month: Month | str) -> list[str]: ...

    def put_statement(
        self,
        account_id: str,
        month: Month | str,
        body: bytes,
        *,
        final: bool = True,
        fmt: StatementFormat = StatementFormat.CSV,
    ) -> str: ...

    def statement_exists(
        self, account_id: str, month: Month | str, fmt: StatementFormat = StatementFormat.CSV
    ) -> bool:
        """Whether a *final* statement is stored (provisional ones do not count)."""
        ...

    def stored_statement(
        self, account_id: str, month: Month | str, fmt: StatementFormat = StatementFormat.CSV
    ) -> StatementState | None:
        """How the statement is stored, final or provisional; None if it is not."""
        ...

    def final_statement(
        self, account_id: str, month: Month | str, fmt: StatementFormat = StatementFormat.CSV
    ) -> bytes | None:
        """The stored final statement's bytes; None if there is none (or only a provisional)."""
        ...


def archive_record(archive: LedgerArchive, record: Mapping[str, Any]) -> LedgerEntry | None:
    """Archive the ledger entry of one stream record (idempotent); return it, or None if the
    record carries no ledger entry."""
    entry = ledger_entry_from_stream_record(record)
    if entry is not None:
        archive.put_entry(entry)
    return entry
