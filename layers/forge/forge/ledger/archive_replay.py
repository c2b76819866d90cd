"""Archive replay: the archive objects the archiver did not write, rebuilt from the ledger table.

The table is the source of truth and an archive object is a function of the entries it holds
(deterministic key, one JSON line each), so replay reads the entries of a window and writes,
through the archive's own put_entries, objects for the runs of entries that are missing. It
writes nothing that is there (listed first; the write itself is conditional too), so running
it twice, or over what the archiver already wrote, adds no object and no object version.

A batch the archiver gave up on reaches its failure queue as Lambda's on-failure record,
which says when the batch's records arrived but not what they were; `replay_failure_queue`
replays each record's window (widened by a minute each side) and deletes the message only
once its window is replayed. Overlapping windows are replayed together: each window is one
pass over the table (forge.ports.LedgerScan), so a burst of failures costs one pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

from pydantic import BaseModel, Field, ValidationError

from forge.domain.archive import archive_key
from forge.domain.archive_replay import (
    QueuedMessage,
    StreamFailureRecord,
    contains,
    merge_windows,
)
from forge.domain.errors import ForgeError
from forge.domain.views import TimeRange
from forge.ports import FailureQueue, LedgerArchive, LedgerScan

logger = logging.getLogger(__name__)
_CHECK_BATCH = 1000  # entries whose objects are listed at once
_T = TypeVar("_T")


class ReplayReport(BaseModel):
    """What a replay found, in entries: those in the window, those it archived, those already
    archived, and those missing when checked (all archived now, unless a dry run or a racing
    archiver)."""

    seen: int = 0
    written: int = 0
    present: int = 0
    missing: int = 0

    def add(self, other: ReplayReport) -> None:
        self.seen += other.seen
        self.written += other.written
        self.present += other.present
        self.missing += other.missing


class QueueReplayReport(BaseModel):
    """A replay of the failure queue: its messages, the windows replayed, what was deleted,
    the messages left because they are not on-failure records, and the entries' report."""

    messages: int = 0
    windows: int = 0
    deleted: int = 0
    unreadable: list[str] = Field(default_factory=list)  # message ids, left in the queue
    entries: ReplayReport = Field(default_factory=ReplayReport)


def replay_archive(
    ledger: LedgerScan, archive: LedgerArchive, window: TimeRange, *, dry_run: bool = False
) -> ReplayReport:
    """Archive every ledger entry created in `window` that has no archive object yet."""
    report = ReplayReport()
    for batch in _batches(ledger.entries_between(window), _CHECK_BATCH):
        archived = archive.archived_keys(batch)
        missing = [entry for entry in batch if archive_key(entry) not in archived]
        report.seen += len(batch)
        report.missing += len(missing)
        report.present += len(batch) - len(missing)
        if missing and not dry_run:
            written = archive.put_entries(missing)
            report.written += written
            report.present += len(missing) - written  # the archiver wrote them since the listing
    return report


def replay_failure_queue(
    queue: FailureQueue,
    ledger: LedgerScan,
    archive: LedgerArchive,
    *,
    dry_run: bool = False,
) -> QueueReplayReport:
    """Replay the window of every on-failure record in `queue`, deleting each message once its
    window is replayed (none in a dry run). Whatever is not deleted (messages that are not such
    records, a dry run's, those left by a failure) is released: visible again at once."""
    messages = _drain(queue)
    report = QueueReplayReport(messages=len(messages))
    deleted: set[str] = set()
    try:
        windows: list[tuple[QueuedMessage, TimeRange]] = []
        for message in messages:
            try:
                record = StreamFailureRecord.model_validate_json(message.body)
            except ValidationError:
                logger.warning("not an on-failure record", extra={"id": message.message_id})
                report.unreadable.append(message.message_id)
                continue
            windows.append((message, record.replay_window()))
        for window in merge_windows(w for _, w in windows):
            report.entries.add(replay_archive(ledger, archive, window, dry_run=dry_run))
            report.windows += 1
            if not dry_run:
                replayed = [m for m, w in windows if contains(window, w)]
                queue.delete(replayed)
                deleted.update(m.message_id for m in replayed)
        report.deleted = len(deleted)
    finally:
        _release(queue, [m for m in messages if m.message_id not in deleted])
    return report


def _release(queue: FailureQueue, messages: list[QueuedMessage]) -> None:
    try:
        queue.release(messages)
    except ForgeError:  # never hide the failure being reported; they reappear on their own
        logger.exception("queued messages not released", extra={"count": len(messages)})


def _drain(queue: FailureQueue) -> list[QueuedMessage]:
    """Every message of the queue, each with its latest receipt handle; stops when a receive
    brings nothing new (received messages stay hidden for the queue's visibility timeout)."""
    received: dict[str, QueuedMessage] = {}
    while True:
        batch = queue.receive()
        fresh = [m for m in batch if m.message_id not in received]
        received.update((m.message_id, m) for m in batch)
        if not fresh:
            return list(received.values())


def _batches(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    # itertools.batched is 3.12+; the development machines run 3.11.
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch
