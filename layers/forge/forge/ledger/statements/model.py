"""What a statement is: per bucket, the month's ledger entries between an opening and a
closing balance, with totals and charge summaries; what both renderings are made from."""

from __future__ import annotations

import enum
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from forge.domain.archive import ChainPoint
from forge.domain.calendar import as_utc
from forge.domain.money import Bucket
from forge.domain.records import LedgerEntry, LedgerKind


class ChargeGrouping(enum.StrEnum):
    """How charges are summed on a statement; the value names the CSV row type's suffix."""

    KEY = "key"
    PROJECT = "project"
    MODEL = "model"
    ROUTE = "route"

    @property
    def column(self) -> str:
        """The CSV column (and LedgerEntry field) that holds the group's name."""
        return {"key": "key_id", "project": "project_id"}.get(self.value, self.value)

    @property
    def heading(self) -> str:
        return {"key": "API key"}.get(self.value, self.value.capitalize())

    def name_of(self, entry: LedgerEntry) -> str:
        """The group an entry falls in ("" when the entry does not name one)."""
        return str(getattr(entry, self.column) or "")


class ChargeGroup(BaseModel):
    """The charges of one key, project, model, route or day: how many, and their sum
    (negative, as on the ledger)."""

    model_config = ConfigDict(frozen=True)

    name: str
    count: int
    amount: int


class SeriesSpan(BaseModel):
    """Where one ledger series (a bucket, or one shard of a split bucket) stood before and
    after the month, and its entries of the month in seq order."""

    model_config = ConfigDict(frozen=True)

    shard: int = 0
    opening: ChainPoint
    closing: ChainPoint
    rows: list[LedgerEntry] = Field(default_factory=list)


class BucketStatement(BaseModel):
    """One bucket's month: opening + sum(rows) == closing, always. A split bucket's balances
    are the sums of its shards' series."""

    model_config = ConfigDict(frozen=True)

    bucket: Bucket
    opening_balance: int
    closing_balance: int
    # The month's entries: by seq, or a split bucket's series merged by time.
    rows: list[LedgerEntry] = Field(default_factory=list)
    balances: list[int] = Field(default_factory=list)  # the bucket's balance after each row
    series: list[SeriesSpan] = Field(default_factory=list)
    # Every kind, zeros included, so layouts never shift (transfers only where there are any).
    totals: dict[LedgerKind, int]
    counts: dict[LedgerKind, int] = Field(default_factory=dict)
    charges_by: dict[ChargeGrouping, list[ChargeGroup]] = Field(default_factory=dict)
    daily_charges: list[ChargeGroup] = Field(default_factory=list)  # name: YYYY-MM-DD

    @property
    def currency(self) -> str:
        return self.bucket.currency


class Statement(BaseModel):
    """An account's statement for one month, both buckets."""

    model_config = ConfigDict(frozen=True)

    account_id: str
    month: str  # YYYY-MM
    final: bool = True  # False while the month (and the archive's settle time) is not over
    buckets: list[BucketStatement]


def series_seq(entry: LedgerEntry) -> str:
    """An entry's place in its series as statements print it: `17`, or `03-17` for seq 17
    of shard 3 of a split bucket."""
    return f"{entry.shard:02d}-{entry.seq}" if entry.shard else str(entry.seq)


def utc_timestamp(moment: datetime) -> str:
    """A moment as statements print it: UTC, to the second."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")
