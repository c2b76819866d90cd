"""S3 adapter of the ledger archive: one object per run of consecutive ledger entries (see
forge.domain.archive), one gzipped object per account, series and compacted month with its
closing record, a CSV and an HTML page per statement.

Entry objects, compacted objects and closing records are written with `If-None-Match: *`, so
a redelivered stream record or a resumed compaction can never overwrite (or duplicate) what
is archived. botocore errors become ArchiveUnavailable here;
nothing above this module sees boto3.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from forge.domain.archive import (
    LEDGER_PREFIX,
    MAX_RUN,
    ArchiveRun,
    MonthClose,
    StatementFormat,
    StatementState,
    archive_runs,
    closing_account_prefix,
    closing_key,
    entry_object_key,
    entry_series_prefix,
    ledger_account_prefix,
    ledger_month_prefix,
    monthly_account,
    monthly_key,
    monthly_month_prefix,
    object_seqs,
    parse_archive_lines,
    statement_filename,
    statement_key,
)
from forge.domain.calendar import Month
from forge.domain.errors import ArchiveUnavailable
from forge.domain.money import Bucket
from forge.domain.records import LedgerEntry

MAX_URL_TTL_SECONDS = 900
_ALREADY_WRITTEN = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
_JSONL = "application/x-ndjson"
_JSON = "application/json"
_GZIP = "application/gzip"  # not Content-Encoding: a download must stay the .gz it is named
_FINAL = "forge-final"  # object metadata: "false" marks a provisional statement


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _already_written(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _error_code(exc) in _ALREADY_WRITTEN or status == 412


@contextmanager
def _archive_errors(action: str) -> Iterator[None]:
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise ArchiveUnavailable(f"The ledger archive is unavailable ({action})") from exc


def _as_month(month: Month | str) -> Month:
    return month if isinstance(month, Month) else Month.parse(month)


class S3Archive:
    """The `LedgerArchive` port over one S3 client and one bucket."""

    def __init__(self, client: Any, bucket: str) -> None:
        self._s3 = client
        self._bucket = bucket

    # Ledger entries ------------------------------------------------------------------------
    def put_entry(self, entry: LedgerEntry) -> bool:
        """Archive one entry alone; False when its object was already there (a redelivery)."""
        return self.put_entries([entry]) == 1

    def put_entries(self, entries: Sequence[LedgerEntry]) -> int:
        """Archive `entries`, one object per run of consecutive entries of a series (see
        forge.domain.archive); how many entries went into objects written now (not into
        objects that were there)."""
        return sum(len(run.entries) for run in archive_runs(entries) if self.put_run(run))

    def put_run(self, run: ArchiveRun) -> bool:
        """Write one run's object; False when it was already there."""
        return self._put_once(run.key, run.body, _JSONL, "put entries")

    def archived_keys(self, entries: Sequence[LedgerEntry]) -> set[str]:
        """The `archive_key`s of those of `entries` that are archived, alone or in a run:
        listed, never fetched, one key range per account, month and series, from MAX_RUN
        before the first wanted seq (where an object holding it may start) to the last."""
        series: dict[str, set[int]] = {}
        for entry in entries:
            series.setdefault(entry_series_prefix(entry), set()).add(entry.seq)
        found: set[str] = set()
        for prefix, seqs in series.items():
            covered: set[int] = set()
            start = min(seqs) - MAX_RUN
            extra = {"StartAfter": f"{prefix}{start:012d}"} if start > 0 else {}
            with _archive_errors("list entries"):
                pages = self._s3.get_paginator("list_objects_v2").paginate(
                    Bucket=self._bucket, Prefix=prefix, **extra
                )
                for page in _pages_until(pages, prefix, max(seqs)):
                    for held in page:
                        covered.update(seqs.intersection(held))
            found.update(entry_object_key(prefix, seq) for seq in covered)
        return found

    def entries(
        self, account_id: str, *, through: Month | None = None, since: Month | None = None
    ) -> list[LedgerEntry]:
        """The entry objects of an account (months `since`..`through`, all by default), each
        entry once, by (bucket, shard, seq)."""
        # Keys sort chronologically (yyyy/mm): listing starts at `since` and stops past
        # `through`. Objects that overlap (a batch redelivered at other boundaries) are all read,
        # so any two that disagree about an entry are found.
        stop = ledger_month_prefix(account_id, through.next()) if through else None
        start = ledger_month_prefix(account_id, since) if since else None
        found: dict[tuple[str, int], LedgerEntry] = {}
        for key in self._keys(ledger_account_prefix(account_id), start_after=start):
            if stop is not None and key >= stop:
                break
            held = object_seqs(key)
            if held is None:
                if key.endswith(".jsonl"):  # an entry object under a name we did not write
                    raise ArchiveUnavailable(f"Archived ledger object {key} has no entry key")
                continue
            for entry in self._read_entries(key, *held):
                if found.setdefault((held[0], entry.seq), entry) != entry:
                    raise ArchiveUnavailable(
                        f"Archived ledger objects disagree about seq {entry.seq} of {held[0]}"
                    )
        return sorted(found.values(), key=lambda e: (e.bucket.value, e.shard, e.seq))

    def accounts_with_activity(self, month: Month | str) -> list[str]:
        """Accounts with at least one archived entry in `month` (per entry or compacted),
        sorted."""
        month = _as_month(month)
        accounts: list[str] = []
        with _archive_errors("list accounts"):
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=LEDGER_PREFIX, Delimiter="/"
            )
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    account_id = str(common["Prefix"])[len(LEDGER_PREFIX) : -1]
                    listed = self._s3.list_objects_v2(
                        Bucket=self._bucket,
                        Prefix=ledger_month_prefix(account_id, month),
                        MaxKeys=1,
                    )
                    if listed.get("KeyCount", 0) > 0:
                        accounts.append(account_id)
        # A compacted month outlives its per-entry objects (they expire): its partition
        # names its accounts too.
        partition = monthly_month_prefix(month)
        for key in self._keys(partition):
            name = key[len(partition) :]
            account = monthly_account(name)
            accounts += [account] if account else []
        return sorted(set(accounts))

    # Compacted months ----------------------------------------------------------------------
    def closed_months(self, account_id: str) -> list[Month]:
        """The account's compacted months, oldest first: one LIST (a page holds 83 years)."""
        prefix = closing_account_prefix(account_id)
        return [
            Month.parse(key[len(prefix) :].removesuffix(".json"))
            for key in self._keys(prefix)
            if key.endswith(".json")
        ]

    def month_close(self, account_id: str, month: Month) -> MonthClose | None:
        body = self._get_if_present(closing_key(account_id, month), "get closing record")
        if body is None:
            return None
        try:
            return MonthClose.model_validate_json(body)
        except ValidationError as exc:
            raise ArchiveUnavailable(f"The closing record of {month} is unreadable") from exc

    def compacted_lines(
        self, account_id: str, month: Month, bucket: Bucket, shard: int = 0
    ) -> bytes:
        key = monthly_key(account_id, month, bucket, shard)
        with _archive_errors("get compacted month"):
            body = bytes(self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read())
        try:
            return gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as exc:
            raise ArchiveUnavailable(f"Compacted ledger object {key} is unreadable") from exc

    def put_compacted(
        self, account_id: str, month: Month, bucket: Bucket, body: bytes, shard: int = 0
    ) -> bool:
        key = monthly_key(account_id, month, bucket, shard)
        return self._put_once(key, body, _GZIP, "put compacted month")

    def put_month_close(self, close: MonthClose) -> bool:
        key = closing_key(close.account_id, Month.parse(close.month))
        body = (close.model_dump_json() + "\n").encode("utf-8")
        return self._put_once(key, body, _JSON, "put closing record")

    # Statements ----------------------------------------------------------------------------
    def put_statement(
        self,
        account_id: str,
        month: Month | str,
        body: bytes,
        *,
        final: bool = True,
        fmt: StatementFormat = StatementFormat.CSV,
    ) -> str:
        """Store a statement (a provisional one is replaced as the month goes on); returns its
        key. statements.ensure_statement never writes over a final one."""
        key = statement_key(account_id, _as_month(month), fmt)
        with _archive_errors("put statement"):
            self._s3.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=body,
                ContentType=fmt.content_type,
                Metadata={_FINAL: "true" if final else "false"},
            )
        return key

    def statement_exists(
        self, account_id: str, month: Month | str, fmt: StatementFormat = StatementFormat.CSV
    ) -> bool:
        """Whether a final statement is stored; a provisional one (month not over) is not."""
        return self.stored_statement(account_id, month, fmt) == "final"

    def stored_statement(
        self, account_id: str, month: Month | str, fmt: StatementFormat = StatementFormat.CSV
    ) -> StatementState | None:
        """How the statement is stored (its `forge-final` metadata), or None if it is not."""
        key = statement_key(account_id, _as_month(month), fmt)
        try:
            head = self._s3.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                return None
            raise ArchiveUnavailable("The ledger archive is unavailable (head statement)") from exc
        except BotoCoreError as exc:
            raise ArchiveUnavailable("The ledger archive is unavailable (head statement)") from exc
        return "final" if head.get("Metadata", {}).get(_FINAL) == "true" else "provisional"

    def final_statement(
        self, account_id: str, month: Month | str, fmt: StatementFormat = StatementFormat.CSV
    ) -> bytes | None:
        """The stored final statement's bytes; None if missing or only provisional."""
        key = statement_key(account_id, _as_month(month), fmt)
        try:
            got = self._s3.get_object(Bucket=self._bucket, Key=key)
            if got.get("Metadata", {}).get(_FINAL) != "true":
                return None
            return bytes(got["Body"].read())
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                return None
            raise ArchiveUnavailable("The ledger archive is unavailable (get statement)") from exc
        except BotoCoreError as exc:
            raise ArchiveUnavailable("The ledger archive is unavailable (get statement)") from exc

    def read_statement(
        self, account_id: str, month: Month | str, fmt: StatementFormat = StatementFormat.CSV
    ) -> bytes:
        key = statement_key(account_id, _as_month(month), fmt)
        with _archive_errors("get statement"):
            return bytes(self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read())

    def presigned_statement_url(
        self,
        account_id: str,
        month: Month | str,
        expires_in: int = MAX_URL_TTL_SECONDS,
        fmt: StatementFormat = StatementFormat.CSV,
    ) -> str:
        """A short-lived GET link that downloads the statement as a named attachment."""
        if not 1 <= expires_in <= MAX_URL_TTL_SECONDS:
            raise ValueError(f"expires_in must be 1..{MAX_URL_TTL_SECONDS} seconds")
        month = _as_month(month)
        filename = statement_filename(account_id, month, fmt)
        with _archive_errors("presign statement"):
            return str(
                self._s3.generate_presigned_url(
                    "get_object",
                    Params={
                        "Bucket": self._bucket,
                        "Key": statement_key(account_id, month, fmt),
                        "ResponseContentDisposition": f'attachment; filename="{filename}"',
                        "ResponseContentType": fmt.content_type,
                    },
                    ExpiresIn=expires_in,
                )
            )

    # Building blocks -----------------------------------------------------------------------
    def _put_once(self, key: str, body: bytes, content_type: str, action: str) -> bool:
        """Write `key` unless it exists; False when it did."""
        try:
            self._s3.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                IfNoneMatch="*",
            )
        except ClientError as exc:
            # 409 means a concurrent conditional write of the same key is in flight: the key is
            # deterministic, so that writer carries these very bytes (and is retried if it fails).
            if _already_written(exc):
                return False
            raise ArchiveUnavailable(f"The ledger archive is unavailable ({action})") from exc
        except BotoCoreError as exc:
            raise ArchiveUnavailable(f"The ledger archive is unavailable ({action})") from exc
        return True

    def _get_if_present(self, key: str, action: str) -> bytes | None:
        try:
            return bytes(self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                return None
            raise ArchiveUnavailable(f"The ledger archive is unavailable ({action})") from exc
        except BotoCoreError as exc:
            raise ArchiveUnavailable(f"The ledger archive is unavailable ({action})") from exc

    def _keys(self, prefix: str, *, start_after: str | None = None) -> Iterator[str]:
        extra = {"StartAfter": start_after} if start_after else {}
        with _archive_errors("list entries"):
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=prefix, **extra
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield str(item["Key"])

    def _read_entries(self, key: str, prefix: str, seqs: range) -> list[LedgerEntry]:
        with _archive_errors("get entry"):
            body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        try:
            entries = parse_archive_lines(body)
        except (ValidationError, UnicodeDecodeError) as exc:
            raise ArchiveUnavailable(f"Archived ledger object {key} is unreadable") from exc
        if [e.seq for e in entries] != list(seqs) or any(
            entry_series_prefix(e) != prefix for e in entries
        ):
            raise ArchiveUnavailable(f"Archived ledger object {key} does not match its key")
        return entries


def _pages_until(pages: Iterable[Any], prefix: str, last: int) -> Iterator[list[range]]:
    """The seqs each listed entry object of a series holds, page by page, up to the first
    object that starts after `last`."""
    for page in pages:
        held = [object_seqs(str(item["Key"])) for item in page.get("Contents", [])]
        seqs = [h[1] for h in held if h is not None and h[0] == prefix]
        yield [s for s in seqs if s.start <= last]
        if not seqs or seqs[-1].start > last:
            return
