"""The ledger archive: deterministic JSON Lines objects, each holding a run of consecutive
entries of one series (one per entry at least), and once a month has closed, one gzipped JSON
Lines object per account and series with a closing record.

Keys are derived from the entries alone (account, month of `created_at` in UTC, series, the
run's first and last seq), so a redelivered stream batch maps to the same objects. One cut at
other boundaries may write a run that overlaps one already archived: readers take each seq
once, and two objects that disagree about a seq are an error, never a choice. A closed
month is compacted to `ledger-monthly/month={yyyy-mm}/{account}.{bucket}.jsonl.gz` (the same
lines, in seq order, deterministically gzipped) and `ledger-closing/{account}/{yyyy-mm}.json`
(where each bucket's chain stood before and after the month), which is written last. This
module is pure: the S3 side lives in forge.store.s3archive behind the `LedgerArchive` port, and
the DynamoDB stream records the archiver reads are decoded in forge.store.dynamo.stream.
"""

from __future__ import annotations

import enum
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from forge.domain.calendar import Month
from forge.domain.errors import InvalidRequest
from forge.domain.money import Bucket
from forge.domain.records import LedgerEntry, series_label, shard_field

LEDGER_PREFIX = "ledger/"
STATEMENT_PREFIX = "statements/"
# Outside `ledger/`, so the per-entry objects' lifecycle rule never touches them.
MONTHLY_PREFIX = "ledger-monthly/"  # the Glue table's location: month=YYYY-MM partitions
CLOSING_PREFIX = "ledger-closing/"  # by account first, so one LIST finds its closed months
CLOSING_SCHEMA_VERSION = 1


def check_account_id(account_id: str) -> str:
    """Account ids become S3 key segments: a '/' or an empty id would break the layout."""
    if not account_id or "/" in account_id or account_id.strip() != account_id:
        raise InvalidRequest("account_id must be a non-empty id without '/'", param="account_id")
    return account_id


# Entries per archive object: bounds how far before a seq the object holding it can start.
MAX_RUN = 1000


def archive_key(entry: LedgerEntry) -> str:
    """`ledger/{account_id}/{yyyy}/{mm}/{series}-{seq:012d}.jsonl`: the object of an entry
    archived alone; month of created_at, UTC; the series is the bucket, or
    `{bucket}.{shard:02d}` for a shard of a split one."""
    return entry_object_key(entry_series_prefix(entry), entry.seq)


def entry_series_prefix(entry: LedgerEntry) -> str:
    """`ledger/{account_id}/{yyyy}/{mm}/{series}-`: the keys of one account, month and series,
    which sort by seq (fixed width)."""
    month = Month.of(entry.created_at)
    series = series_label(entry.bucket, entry.shard)
    return f"{ledger_month_prefix(entry.account_id, month)}{series}-"


def entry_object_key(series_prefix: str, seq: int, last: int | None = None) -> str:
    """The object of entries `seq`..`last` of a series: `{prefix}{seq:012d}.jsonl` for one,
    `{prefix}{seq:012d}-{last:012d}.jsonl` for a run. Keys sort by their first seq."""
    if last is None or last == seq:
        return f"{series_prefix}{seq:012d}.jsonl"
    return f"{series_prefix}{seq:012d}-{last:012d}.jsonl"


_OBJECT_KEY = re.compile(r"(.*/[^/-]+-)(\d{12})(?:-(\d{12}))?\.jsonl")


def object_seqs(key: str) -> tuple[str, range] | None:
    """The series prefix of an entry object's key and the seqs it holds; None for a key that
    is not an entry object's."""
    found = _OBJECT_KEY.fullmatch(key)
    if not found:
        return None
    first = int(found.group(2))
    last = int(found.group(3)) if found.group(3) else first
    return (found.group(1), range(first, last + 1)) if last >= first else None


@dataclass(frozen=True)
class ArchiveRun:
    """Consecutive entries of one series and month: what one archive object holds."""

    entries: tuple[LedgerEntry, ...]

    @property
    def key(self) -> str:
        first, last = self.entries[0], self.entries[-1]
        return entry_object_key(entry_series_prefix(first), first.seq, last.seq)

    @property
    def body(self) -> bytes:
        return b"".join(archive_line(e) for e in self.entries)


def archive_runs(entries: Iterable[LedgerEntry]) -> list[ArchiveRun]:
    """`entries` cut into archive objects: by series and month, in seq order, each run of
    consecutive seqs (at most MAX_RUN) one object. A seq given twice is kept once; two
    different entries with one seq raise ValueError (the table never holds both)."""
    series: dict[str, dict[int, LedgerEntry]] = {}
    for entry in entries:
        seen = series.setdefault(entry_series_prefix(entry), {})
        if seen.setdefault(entry.seq, entry) != entry:
            raise ValueError(f"two different entries claim seq {entry.seq} of one series")
    runs: list[ArchiveRun] = []
    for by_seq in series.values():
        run: list[LedgerEntry] = []
        for seq in sorted(by_seq):
            if run and (seq != run[-1].seq + 1 or len(run) == MAX_RUN):
                runs.append(ArchiveRun(tuple(run)))
                run = []
            run.append(by_seq[seq])
        runs.append(ArchiveRun(tuple(run)))
    return runs


def ledger_account_prefix(account_id: str) -> str:
    return f"{LEDGER_PREFIX}{check_account_id(account_id)}/"


def ledger_month_prefix(account_id: str, month: Month) -> str:
    return f"{ledger_account_prefix(account_id)}{month.year:04d}/{month.month:02d}/"


def monthly_key(account_id: str, month: Month, bucket: Bucket, shard: int = 0) -> str:
    """`ledger-monthly/month={yyyy-mm}/{account_id}.{series}.jsonl.gz`: flat in its month
    partition (account, bucket and shard are columns of every line), so the Glue table's
    partition location holds the month's objects and nothing else."""
    series = series_label(bucket, shard)
    return f"{monthly_month_prefix(month)}{check_account_id(account_id)}.{series}.jsonl.gz"


def monthly_account(name: str) -> str | None:
    """The account a compacted object's name (`{account_id}.{series}.jsonl.gz`) is of."""
    found = _MONTHLY_NAME.fullmatch(name)
    return found.group(1) if found else None


_MONTHLY_NAME = re.compile(
    r"(.+)\.(?:" + "|".join(b.value for b in Bucket) + r")(?:\.\d{2})?\.jsonl\.gz"
)


def monthly_month_prefix(month: Month) -> str:
    return f"{MONTHLY_PREFIX}month={month}/"


def closing_account_prefix(account_id: str) -> str:
    return f"{CLOSING_PREFIX}{check_account_id(account_id)}/"


def closing_key(account_id: str, month: Month) -> str:
    """`ledger-closing/{account_id}/{yyyy-mm}.json`."""
    return f"{closing_account_prefix(account_id)}{month}.json"


@dataclass(frozen=True)
class ChainPoint:
    """Where one bucket's chain stands: its last seq and the balance after it (0 and 0
    before the first entry)."""

    seq: int = 0
    balance: int = 0


class BucketClose(BaseModel):
    """One series of a compacted month (a bucket, or one shard of a split bucket): its chain
    before and after the month, and a digest of the compacted object's (uncompressed) lines;
    no object when the month has no entry."""

    model_config = ConfigDict(frozen=True)

    bucket: Bucket
    shard: int = shard_field()
    opening_seq: int = Field(ge=0)
    opening_balance: int
    closing_seq: int = Field(ge=0)
    closing_balance: int
    sha256: str

    @property
    def entries(self) -> int:
        return self.closing_seq - self.opening_seq

    @property
    def opening(self) -> ChainPoint:
        return ChainPoint(self.opening_seq, self.opening_balance)

    @property
    def closing(self) -> ChainPoint:
        return ChainPoint(self.closing_seq, self.closing_balance)


class MonthClose(BaseModel):
    """An account's compacted month, every series of both buckets; written after the month's
    objects, so its presence means the compaction is complete."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = CLOSING_SCHEMA_VERSION
    account_id: str
    month: str  # YYYY-MM
    buckets: list[BucketClose]

    def part(self, bucket: Bucket, shard: int = 0) -> BucketClose:
        return next(b for b in self.buckets if (b.bucket, b.shard) == (bucket, shard))


def deterministic_gzip(data: bytes) -> bytes:
    """gzip with nothing that varies between runs: mtime 0, no file name, OS byte 255
    (unknown), deflate level 9. The same lines give the same bytes (for one zlib build;
    compaction compares uncompressed lines when it finds an object already written)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = deflate.compress(data) + deflate.flush()
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # magic, deflate, no flags, mtime 0
    return header + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


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
