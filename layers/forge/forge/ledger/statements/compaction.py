"""Compacting a closed month of the archive: one gzipped JSON Lines object per account and
ledger series (a bucket, or each shard of a split bucket), then a closing record, so a
statement reads the month and not the account's history.

The month is verified exactly as its final statement is (chain gap-free from the previous
closing point, balances adding up, the closing balance the ledger table's and no later entry
of the month missing) before anything is written. The objects are pure functions of the
month's entries (deterministic_gzip of their archive lines in seq order), written with
If-None-Match: a crash between writes is resumed by running again, which finds the objects
already there, checks they hold the same lines, and writes the closing record last; once that
record exists, the month is done and a rerun reads nothing but it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from forge.domain.archive import (
    BucketClose,
    MonthClose,
    archive_line,
    check_account_id,
    deterministic_gzip,
)
from forge.domain.calendar import Month, as_utc
from forge.domain.errors import InvalidRequest, LedgerChainBroken
from forge.domain.records import utcnow
from forge.ledger.statements.build import LedgerSource, build_statement, check_against_ledger
from forge.ledger.statements.months import is_final, read_month
from forge.ports import LedgerArchive


def compact_month(
    archive: LedgerArchive,
    ledger: LedgerSource,
    account_id: str,
    month: Month,
    *,
    now: datetime | None = None,
) -> MonthClose:
    """Compact an account's closed month (idempotent, resumable); returns its closing record.

    InvalidRequest while the month is open or settling; LedgerChainBroken or
    StatementNotReady (nothing written) when the month does not reconcile with the ledger."""
    check_account_id(account_id)
    if not is_final(month, as_utc(now or utcnow())):
        raise InvalidRequest(f"{month} has not closed and settled yet", param="month")
    done = archive.month_close(account_id, month)
    if done is not None:
        return done
    part = read_month(archive, account_id, month)
    statement = build_statement(account_id, month, part.entries, starts=part.starts)
    check_against_ledger(statement, part.entries, ledger)
    buckets = []
    for bucket_statement in statement.buckets:
        bucket = bucket_statement.bucket
        for span in bucket_statement.series:
            lines = b"".join(archive_line(e) for e in span.rows)
            written = not span.rows or archive.put_compacted(
                account_id, month, bucket, deterministic_gzip(lines), span.shard
            )
            # Not written: it was, before a crash (or by a concurrent run), and must hold
            # these very lines.
            if not written and archive.compacted_lines(account_id, month, bucket, span.shard) != (
                lines
            ):
                raise LedgerChainBroken(
                    f"the compacted {bucket.value} ledger of {month} differs from its entries",
                    account_id=account_id,
                    bucket=bucket.value,
                )
            buckets.append(
                BucketClose(
                    bucket=bucket,
                    shard=span.shard,
                    opening_seq=span.closing.seq - len(span.rows),
                    opening_balance=span.opening.balance,
                    closing_seq=span.closing.seq,
                    closing_balance=span.closing.balance,
                    sha256=hashlib.sha256(lines).hexdigest(),
                )
            )
    close = MonthClose(account_id=account_id, month=str(month), buckets=buckets)
    if not archive.put_month_close(close) and archive.month_close(account_id, month) != close:
        raise LedgerChainBroken(
            f"a different closing record of {month} is already stored", account_id=account_id
        )
    return close
