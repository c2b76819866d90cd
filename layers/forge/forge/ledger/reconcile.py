"""Reconciliation: prove conservation for every account and bucket, and report any drift
with the entries and holds involved.

Each wallet item (a bucket, or one shard of a split bucket) is checked with its own ledger
series, and the transfers between a bucket's shards must each sum to zero.

Checks: the ledger chain is gap-free and each balance_after follows from the one before; the
ledger sums to the balance; available + held == balance; held == the pending holds; every
envelope's consumed == settled + held and its held == its pending holds; no pending hold has
outlived its expiry (the sweeper should have resolved it).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from pydantic import BaseModel, Field

from forge.domain.money import Bucket
from forge.domain.records import Hold, HoldStatus, LedgerEntry, LedgerKind, Wallet
from forge.ports import LedgerReader


class Drift(BaseModel):
    check: str
    account_id: str | None = None
    bucket: Bucket | None = None
    shard: int | None = None  # of a split bucket
    expected: int | None = None
    actual: int | None = None
    detail: str = ""
    involved: list[str] = Field(default_factory=list)  # entry ids, hold ids or item keys


class ReconcileReport(BaseModel):
    checked_at: datetime
    accounts: int
    buckets: int
    pending_holds: int
    drifts: list[Drift] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.drifts


def _chain_drifts(account_id: str, bucket: Bucket, entries: list[LedgerEntry]) -> list[Drift]:
    running = 0
    for expected_seq, entry in enumerate(entries, start=1):
        if entry.seq != expected_seq or entry.balance_after != running + entry.amount:
            return [
                Drift(
                    check="ledger_chain",
                    account_id=account_id,
                    bucket=bucket,
                    expected=running + entry.amount,
                    actual=entry.balance_after,
                    detail=f"entry seq {entry.seq} (expected seq {expected_seq}) breaks the chain",
                    involved=[entry.entry_id],
                )
            ]
        running = entry.balance_after
    return []


def _wallet_drifts(wallet: Wallet, entries: list[LedgerEntry], pending: list[Hold]) -> list[Drift]:
    where = {
        "account_id": wallet.account_id,
        "bucket": wallet.bucket,
        "shard": wallet.shard if wallet.shards > 1 else None,
    }
    drifts = _chain_drifts(wallet.account_id, wallet.bucket, entries)
    ledger_sum = sum(e.amount for e in entries)
    if ledger_sum != wallet.balance:
        drifts.append(
            Drift(
                check="ledger_vs_balance",
                expected=ledger_sum,
                actual=wallet.balance,
                detail="the ledger does not sum to the balance",
                involved=[e.entry_id for e in entries[-5:]],
                **where,
            )
        )
    if wallet.available + wallet.held != wallet.balance:
        drifts.append(
            Drift(
                check="available_plus_held",
                expected=wallet.balance,
                actual=wallet.available + wallet.held,
                detail="available + held != balance",
                **where,
            )
        )
    pending_sum = sum(h.amount for h in pending)
    if pending_sum != wallet.held:
        drifts.append(
            Drift(
                check="held_vs_pending_holds",
                expected=pending_sum,
                actual=wallet.held,
                detail="held does not equal the pending holds",
                involved=[h.request_id for h in pending],
                **where,
            )
        )
    if min(wallet.balance, wallet.available, wallet.held) < 0:
        drifts.append(Drift(check="negative", detail=wallet.model_dump_json(), **where))
    return drifts


def reconcile(store: LedgerReader, now: datetime) -> ReconcileReport:
    budget = store.read_budget()
    wallets, holds = budget.wallets, budget.holds
    envelopes = {(e.pk, e.sk): e for e in budget.envelopes}

    pending = [h for h in holds if h.status is HoldStatus.PENDING]
    pending_by_shard: dict[tuple[str, Bucket, int], list[Hold]] = defaultdict(list)
    held_by_envelope: dict[tuple[str, str], int] = defaultdict(int)
    for hold in pending:
        pending_by_shard[(hold.account_id, hold.bucket, hold.shard)].append(hold)
        for ref in hold.envelopes:  # on a split bucket's shard k, the envelope's share there
            held_by_envelope[(ref.pk, f"{ref.sk}#{hold.shard:02d}" if hold.shard else ref.sk)] += (
                hold.amount
            )

    drifts: list[Drift] = []
    transfers: dict[tuple[str, Bucket, str], list[LedgerEntry]] = defaultdict(list)
    for wallet in wallets:
        # Each wallet item is a bucket, or one shard of a split bucket, with its own series.
        entries = store.list_entries(wallet.account_id, wallet.bucket, wallet.shard)
        drifts += _wallet_drifts(
            wallet, entries, pending_by_shard[(wallet.account_id, wallet.bucket, wallet.shard)]
        )
        for entry in entries:
            if entry.kind is LedgerKind.TRANSFER:
                transfers[(entry.account_id, entry.bucket, entry.source or "")].append(entry)
    for (account_id, bucket, source), legs in transfers.items():
        if sum(e.amount for e in legs) != 0:  # money moved between shards, never in or out
            drifts.append(
                Drift(
                    check="transfer_unbalanced",
                    account_id=account_id,
                    bucket=bucket,
                    expected=0,
                    actual=sum(e.amount for e in legs),
                    detail=f"{source} does not sum to zero over the bucket's shards",
                    involved=[e.entry_id for e in legs],
                )
            )
    received: dict[tuple[str, str], int] = defaultdict(int)  # by envelope, over its shares
    for (pk, sk), counters in envelopes.items():
        expected = counters.settled + counters.held + counters.lent
        if counters.consumed != expected:
            drifts.append(
                Drift(
                    check="envelope_consumed",
                    expected=expected,
                    actual=counters.consumed,
                    involved=[f"{pk}/{sk}"],
                )
            )
        if counters.shard:
            received[counters.envelope] += counters.received
            if counters.received != counters.room + counters.consumed or counters.room < 0:
                drifts.append(
                    Drift(
                        check="envelope_share_room",
                        expected=counters.received,
                        actual=counters.room + counters.consumed,
                        detail="a share's room + consumed != what its envelope lent it",
                        involved=[f"{pk}/{sk}"],
                    )
                )
        if counters.held != held_by_envelope[(pk, sk)]:
            drifts.append(
                Drift(
                    check="envelope_held",
                    expected=held_by_envelope[(pk, sk)],
                    actual=counters.held,
                    involved=[f"{pk}/{sk}"],
                )
            )
    lenders = {k for k, c in envelopes.items() if not c.shard and c.lent}
    for pk, sk in sorted(lenders | received.keys()):
        lent, given = envelopes[(pk, sk)].lent if (pk, sk) in envelopes else 0, received[(pk, sk)]
        if lent != given:  # room moves between an envelope and its shares, never in or out
            drifts.append(
                Drift(
                    check="envelope_lent",
                    expected=lent,
                    actual=given,
                    detail="the envelope's shares did not receive what it lent",
                    involved=[f"{pk}/{sk}"],
                )
            )
    for hold in pending:
        if hold.expires_at < now:
            drifts.append(
                Drift(
                    check="expired_hold_pending",
                    account_id=hold.account_id,
                    bucket=hold.bucket,
                    actual=hold.amount,
                    detail=f"expired at {hold.expires_at.isoformat()}",
                    involved=[hold.request_id],
                )
            )
    return ReconcileReport(
        checked_at=now,
        accounts=len({w.account_id for w in wallets}),
        buckets=len(wallets),
        pending_holds=len(pending),
        drifts=drifts,
    )
