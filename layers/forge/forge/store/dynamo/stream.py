"""The ledger table's stream, as the archiver reads it: DynamoDB Streams records in, ledger
entries out (receipts and aggregates are not archived).

A record that claims to be a ledger entry but cannot be read as one raises
MalformedStreamRecord, so the archiver reports it as a batch item failure (retried, surfaced)
instead of silently dropping money.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forge.domain.records import LEDGER_SCHEMA_VERSION, LedgerEntry
from forge.ports import LedgerArchive
from forge.store.dynamo.items import from_item
from forge.store.dynamo.schema import LEDGER_ENTRY_RECORD


class MalformedStreamRecord(ValueError):
    """A stream record that claims to be a ledger entry but cannot be read as one."""


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


def ledger_entry_from_image(image: Mapping[str, Mapping[str, Any]]) -> LedgerEntry | None:
    """A ledger table item (DynamoDB JSON) as a LedgerEntry; None for receipts and others."""
    try:
        plain = from_item(image)  # numbers stay exact: an amount is never rounded
    except (AttributeError, TypeError, ArithmeticError, ValueError) as exc:
        raise MalformedStreamRecord(f"unreadable image: {exc}") from exc
    if plain.get("record_type") != LEDGER_ENTRY_RECORD:
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


def archive_record(archive: LedgerArchive, record: Mapping[str, Any]) -> LedgerEntry | None:
    """Archive the ledger entry of one stream record (idempotent); return it, or None if the
    record carries no ledger entry."""
    entry = ledger_entry_from_stream_record(record)
    if entry is not None:
        archive.put_entry(entry)
    return entry
