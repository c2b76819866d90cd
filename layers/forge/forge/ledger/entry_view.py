"""One ledger entry as its account sees it: the single mapping from a stored entry to the
decimal/micro-unit view that the API's ledger pages and the statements' rows both show."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from forge.domain.money import format_micros
from forge.domain.records import LedgerEntry

# The entry's free-text fields, set by clients, providers or operators (statements escape them).
ENTRY_FACTS = ("request_id", "key_id", "project_id", "model", "route", "source", "memo")


class LedgerEntryView(BaseModel):
    """One ledger entry; amounts as decimals of the bucket's currency and in micro-units."""

    object: Literal["ledger_entry"] = "ledger_entry"
    entry_id: str
    bucket: str
    currency: str
    shard: int = 0  # of a split bucket: seq and balance_after are within the shard's series
    seq: int
    kind: str
    amount: str
    amount_micros: int
    balance_after: str
    balance_after_micros: int
    created_at: datetime
    request_id: str | None = None
    key_id: str | None = None
    project_id: str | None = None
    model: str | None = None
    route: str | None = None
    source: str | None = None
    memo: str | None = None

    @classmethod
    def of(cls, entry: LedgerEntry) -> LedgerEntryView:
        """The view of a stored entry."""
        return cls(
            entry_id=entry.entry_id,
            bucket=entry.bucket.value,
            currency=entry.bucket.currency,
            shard=entry.shard,
            seq=entry.seq,
            kind=entry.kind.value,
            amount=format_micros(entry.amount),
            amount_micros=entry.amount,
            balance_after=format_micros(entry.balance_after),
            balance_after_micros=entry.balance_after,
            created_at=entry.created_at,
            request_id=entry.request_id,
            key_id=entry.key_id,
            project_id=entry.project_id,
            model=entry.model,
            route=entry.route,
            source=entry.source,
            memo=entry.memo,
        )

    def facts(self) -> dict[str, str | None]:
        """The free-text fields by name (ENTRY_FACTS' order)."""
        return {name: getattr(self, name) for name in ENTRY_FACTS}
