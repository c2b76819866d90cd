"""The ledger table's stream, as the archiver reads it: DynamoDB Streams records in, ledger
entries out (receipts and aggregates are not archived).

A record that claims to be a ledger entry but cannot be read as one raises
MalformedStreamRecord, so the archiver reports it as a batch item failure (retried, surfaced)
instead of silently dropping money.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forge.domain.archive import ArchiveRun, archive_runs
from forge.domain.errors import ForgeError
from forge.domain.records import LEDGER_SCHEMA_VERSION, LedgerEntry
from forge.ports import LedgerArchive
from forge.store.dynamo.items import from_item
from forge.store.dynamo.schema import LEDGER_ENTRY_RECORD

logger = logging.getLogger(__name__)


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


def archive_batch(
    archive: LedgerArchive, records: Sequence[Mapping[str, Any]], *, workers: int = 8
) -> list[str]:
    """Archive the ledger entries a batch of stream records carries, one object per run of
    consecutive entries of a series (written concurrently); return the sequence numbers of the
    records not archived, in the batch's order: those that cannot be read, and those of a run
    whose object could not be written. A record that carries no entry (a receipt, an
    aggregate, a removal) needs nothing archived.

    Redelivered, or cut at other boundaries after a partial failure, the same entries map to
    the same or overlapping objects (forge.domain.archive): each entry is read back once."""
    failed: set[str] = set()
    carried: dict[str, list[str]] = {}  # entry id -> the records carrying it
    entries: list[LedgerEntry] = []
    for record in records:
        number = _sequence_number(record)
        try:
            entry = ledger_entry_from_stream_record(record)
        except MalformedStreamRecord:
            logger.exception("ledger record not archived", extra={"sequence_number": number})
            failed.add(number)
            continue
        if entry is not None:
            carried.setdefault(entry.entry_id, []).append(number)
            entries.append(entry)
    try:
        runs = archive_runs(entries)
    except ValueError:  # two entries claim one seq: archive none of them, surface it
        logger.exception("ledger batch not archived")
        return [_sequence_number(r) for r in records]

    def put(run: ArchiveRun) -> list[str]:
        try:
            archive.put_run(run)
        except ForgeError:
            logger.exception("ledger run not archived", extra={"key": run.key})
            return [n for e in run.entries for n in carried[e.entry_id]]
        return []

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(runs)))) as pool:
        for numbers in pool.map(put, runs):
            failed.update(numbers)
    return [n for r in records if (n := _sequence_number(r)) in failed]


def _sequence_number(record: Mapping[str, Any]) -> str:
    change = record.get("dynamodb")
    return str(change.get("SequenceNumber", "")) if isinstance(change, Mapping) else ""
