"""Reading one month of an account's ledger from the archive: its compacted objects once the
month is compacted, else its per-entry objects, and in both cases where each bucket's chain
stood before, so a statement never reads the account's older history."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from forge.domain.archive import BucketClose, ChainPoint, MonthClose, parse_archive_lines
from forge.domain.calendar import Month, as_utc
from forge.domain.errors import LedgerChainBroken
from forge.domain.money import Bucket
from forge.domain.records import LedgerEntry
from forge.ports import LedgerArchive

# The archive trails the ledger by the stream's delay (seconds, minutes when it retries): a
# statement built the instant a month closes could miss its last entries, so it stays
# provisional until then, and the month is compacted only after it.
ARCHIVE_SETTLE_TIME = timedelta(hours=1)


def is_final(month: Month, now: datetime) -> bool:
    """A month's statement is final once the month is over and the archive has settled."""
    return month.end + ARCHIVE_SETTLE_TIME <= as_utc(now)


@dataclass(frozen=True)
class MonthOfLedger:
    """What a statement of `month` is built from: per bucket, the chain's point before the
    entries (the latest compacted month's closing, or seq 0), and the archived entries after
    it through `month` (just the month's once the month before is compacted)."""

    account_id: str
    month: Month
    # Per series: by its bucket for shard 0 (an unsplit bucket's only series), else by
    # (bucket, shard).
    starts: dict[Bucket | tuple[Bucket, int], ChainPoint] = field(default_factory=dict)
    entries: list[LedgerEntry] = field(default_factory=list)
    compacted: bool = False


def read_month(archive: LedgerArchive, account_id: str, month: Month) -> MonthOfLedger:
    """The month from its compacted objects (one closing record and at most one object per
    bucket), or, if it is not compacted, from the per-entry objects since the latest
    compacted month before it (one LIST of closing records finds it)."""
    close = archive.month_close(account_id, month)
    if close is not None:
        return MonthOfLedger(
            account_id,
            month,
            starts={_series(part): part.opening for part in close.buckets},
            entries=compacted_entries(archive, close),
            compacted=True,
        )
    earlier = [m for m in archive.closed_months(account_id) if m < month]
    previous = archive.month_close(account_id, earlier[-1]) if earlier else None
    if earlier and previous is None:
        raise LedgerChainBroken(f"the closing record of {earlier[-1]} vanished while listed")
    starts = {_series(part): part.closing for part in previous.buckets} if previous else {}
    since = earlier[-1].next() if earlier else None
    return MonthOfLedger(
        account_id, month, starts, archive.entries(account_id, since=since, through=month)
    )


def _series(part: BucketClose) -> Bucket | tuple[Bucket, int]:
    return (part.bucket, part.shard) if part.shard else part.bucket


def compacted_entries(archive: LedgerArchive, close: MonthClose) -> list[LedgerEntry]:
    """A compacted month's entries, checked against its closing record (digest, count,
    account, bucket and month of every line)."""
    month = Month.parse(close.month)
    entries: list[LedgerEntry] = []
    for part in close.buckets:
        if not part.entries:
            continue
        lines = archive.compacted_lines(close.account_id, month, part.bucket, part.shard)
        found = parse_archive_lines(lines)
        if (
            hashlib.sha256(lines).hexdigest() != part.sha256
            or len(found) != part.entries
            or any(
                (e.account_id, e.bucket, e.shard, Month.of(e.created_at))
                != (close.account_id, part.bucket, part.shard, month)
                for e in found
            )
        ):
            raise LedgerChainBroken(
                f"the compacted {part.bucket.value} ledger of {month} is not what its closing"
                " record says",
                account_id=close.account_id,
                bucket=part.bucket.value,
            )
        entries += found
    return entries
