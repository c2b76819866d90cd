"""S3 adapter of the ledger archive: one object per ledger entry, a CSV and an HTML page per
statement.

Entry objects are written with `If-None-Match: *`, so a redelivered stream record can never
overwrite (or duplicate) what is archived. botocore errors become ArchiveUnavailable here;
nothing above this module sees boto3.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from forge.domain.archive import (
    LEDGER_PREFIX,
    StatementFormat,
    StatementState,
    archive_key,
    archive_line,
    entry_object_key,
    entry_series_prefix,
    ledger_account_prefix,
    ledger_month_prefix,
    parse_archive_lines,
    statement_filename,
    statement_key,
)
from forge.domain.calendar import Month
from forge.domain.errors import ArchiveUnavailable
from forge.domain.records import LedgerEntry

MAX_URL_TTL_SECONDS = 900
_ALREADY_WRITTEN = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
_JSONL = "application/x-ndjson"
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
        """Archive one entry; False when it was already archived (a redelivery)."""
        try:
            self._s3.put_object(
                Bucket=self._bucket,
                Key=archive_key(entry),
                Body=archive_line(entry),
                ContentType=_JSONL,
                IfNoneMatch="*",
            )
        except ClientError as exc:
            # 409 means a concurrent conditional write of the same key is in flight: the key is
            # deterministic, so that writer carries this very entry (and is retried if it fails).
            if _already_written(exc):
                return False
            raise ArchiveUnavailable("The ledger archive is unavailable (put entry)") from exc
        except BotoCoreError as exc:
            raise ArchiveUnavailable("The ledger archive is unavailable (put entry)") from exc
        return True

    def archived_keys(self, entries: Sequence[LedgerEntry]) -> set[str]:
        """The keys of those of `entries` that are archived: listed, never fetched, one key
        range per account, month and bucket (keys sort by seq), from the first wanted to the
        last."""
        series: dict[str, set[int]] = {}
        for entry in entries:
            series.setdefault(entry_series_prefix(entry), set()).add(entry.seq)
        found: set[str] = set()
        for prefix, seqs in series.items():
            wanted = {entry_object_key(prefix, seq) for seq in seqs}
            last = entry_object_key(prefix, max(seqs))
            with _archive_errors("list entries"):
                pages = self._s3.get_paginator("list_objects_v2").paginate(
                    Bucket=self._bucket,
                    Prefix=prefix,
                    StartAfter=entry_object_key(prefix, min(seqs) - 1),
                )
                for page in pages:
                    keys = [str(item["Key"]) for item in page.get("Contents", [])]
                    found.update(wanted.intersection(keys))
                    if not keys or keys[-1] >= last:
                        break
        return found

    def entries(self, account_id: str, *, through: Month | None = None) -> list[LedgerEntry]:
        """Every archived entry of an account (up to the end of `through`), by (bucket, seq)."""
        # Keys sort chronologically (yyyy/mm), so listing can stop past `through`.
        stop = ledger_month_prefix(account_id, through.next()) if through else None
        found: list[LedgerEntry] = []
        for key in self._keys(ledger_account_prefix(account_id)):
            if stop is not None and key >= stop:
                break
            if key.endswith(".jsonl"):
                found += self._read_entries(key)
        return sorted(found, key=lambda e: (e.bucket.value, e.seq))

    def accounts_with_activity(self, month: Month | str) -> list[str]:
        """Accounts with at least one archived entry in `month`, sorted."""
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
        return sorted(accounts)

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
    def _keys(self, prefix: str) -> Iterator[str]:
        with _archive_errors("list entries"):
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield str(item["Key"])

    def _read_entries(self, key: str) -> list[LedgerEntry]:
        with _archive_errors("get entry"):
            body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        try:
            entries = parse_archive_lines(body)
        except (ValidationError, UnicodeDecodeError) as exc:
            raise ArchiveUnavailable(f"Archived ledger object {key} is unreadable") from exc
        if any(archive_key(e) != key for e in entries):
            raise ArchiveUnavailable(f"Archived ledger object {key} does not match its key")
        return entries
