"""DynamoDB adapter: accounts, keys, wallets, holds, ledger entries and receipts.

Money moves only inside TransactWriteItems whose conditions test stored quantities:
- reserve:  available >= :hold            (available is kept as its own attribute)
- settle:   hold is pending, and the bucket's ledger sequence is the one we read, so the
            entry's balance_after is exact; a lost race re-reads and retries.
Every transaction that writes a receipt (settle, void, a refusal) or a refund also adds it to
the views' aggregates (adapters/ledger_totals), so they count it exactly once.
botocore errors become domain errors here; nothing above this module sees boto3.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from forge.domain.errors import (
    BudgetExceeded,
    BudgetStoreUnavailable,
    ConcurrentUpdate,
    GuardFailed,
    HoldAlreadyResolved,
    NotFound,
)
from forge.domain.idempotency import REPLAY_TTL_SECONDS, IdempotencyRecord, StoredResponse
from forge.domain.money import Bucket, format_micros
from forge.domain.records import (
    ApiKey,
    EnvelopeRef,
    Hold,
    HoldOutcome,
    HoldStatus,
    LedgerEntry,
    LedgerKind,
    ProjectCaps,
    Receipt,
    Wallet,
    utcnow,
)
from forge.store.dynamo.items import dump as _dump
from forge.store.dynamo.items import from_item as _from_item
from forge.store.dynamo.items import to_item as _to_item
from forge.store.dynamo.schema import entry_index_attributes, receipt_index_attributes
from forge.store.dynamo.totals import receipt_updates, refund_updates

# A lost race on a busy wallet is retried (re-read, then write) for this long before the
# caller is told the store is unavailable; a settle then defers to the sweeper.
_CONTENTION_SECONDS = 10.0
PENDING_SHARDS = 8  # spreads the pending-holds index over partitions
PENDING_HOLDS_INDEX = "pending-holds"
RESOLVED_HOLD_RETENTION_SECONDS = 7 * 24 * 3600  # then TTL garbage-collects the hold item
# Envelope counters; several are DynamoDB reserved words, so always go through names.
_RESERVE_NAMES = {"#consumed": "consumed", "#held": "held", "#limit": "limit"}
_RELEASE_NAMES = {"#consumed": "consumed", "#held": "held", "#settled": "settled"}


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


@contextmanager
def _store_errors() -> Iterator[None]:
    """Any failure to reach or use the store fails closed as a 503-class error."""
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise BudgetStoreUnavailable(
            "The budget store is unavailable; nothing was charged"
        ) from exc


def _cancellation_codes(exc: ClientError) -> list[str]:
    reasons = exc.response.get("CancellationReasons") or []
    return [str(r.get("Code", "None")) for r in reasons]


def _is_cancelled(exc: ClientError) -> bool:
    return bool(exc.response.get("Error", {}).get("Code") == "TransactionCanceledException")


def _contended_attempts() -> Iterator[int]:
    """Attempt numbers until the contention deadline, sleeping a capped, fully jittered
    exponential backoff between them."""
    deadline = time.monotonic() + _CONTENTION_SECONDS
    attempt = 0
    while time.monotonic() < deadline:
        yield attempt
        time.sleep(random.uniform(0, min(0.1, 0.004 * 2**attempt)))  # noqa: S311 - jitter only
        attempt += 1


# Keys. Budget table: accounts, wallets, API keys, holds. Ledger table: entries and receipts.
def _account_pk(account_id: str) -> str:
    return f"ACCT#{account_id}"


def _bucket_key(account_id: str, bucket: Bucket) -> dict[str, Any]:
    return _to_item({"pk": _account_pk(account_id), "sk": f"BUCKET#{bucket.value}"})


def _hold_key(request_id: str) -> dict[str, Any]:
    return _to_item({"pk": f"HOLD#{request_id}", "sk": "HOLD"})


def entry_sort_key(bucket: Bucket, seq: int) -> str:
    return f"ENTRY#{bucket.value}#{seq:012d}"


class DynamoStore:
    """The budget store and ledger writer, over one DynamoDB client and two tables."""

    def __init__(
        self,
        client: Any,
        budget_table: str,
        ledger_table: str,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = client
        self._budget = budget_table
        self._ledger = ledger_table
        self._wallet_locks: dict[tuple[str, Bucket], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # When ledger entries are stamped (created_at). Tests inject a clock to write a
        # month's history on chosen days; money itself is never faked.
        self._clock = clock

    def _wallet_lock(self, account_id: str, bucket: Bucket) -> threading.Lock:
        """Settles and credits of one wallet take turns within this process, so its own
        requests never race each other's compare-and-set (other processes still may: the
        `seq` condition stays the guard). Under 50-way contention in one process this turns
        a storm of lost races into one write after another."""
        with self._locks_guard:
            return self._wallet_locks.setdefault((account_id, bucket), threading.Lock())

    # Accounts and keys -------------------------------------------------------------------
    def create_account(self, account_id: str, name: str) -> None:
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._budget,
                    "Item": _to_item(
                        {
                            "pk": _account_pk(account_id),
                            "sk": "META",
                            "name": name,
                            "created_at": utcnow().isoformat(),
                        }
                    ),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        ]
        for bucket in Bucket:
            item = _dump(Wallet(account_id=account_id, bucket=bucket))
            items.append(
                {
                    "Put": {
                        "TableName": self._budget,
                        "Item": {**_bucket_key(account_id, bucket), **_to_item(item)},
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
        with _store_errors():
            self._db.transact_write_items(TransactItems=items)

    def account_exists(self, account_id: str) -> bool:
        with _store_errors():
            got = self._db.get_item(
                TableName=self._budget,
                Key=_to_item({"pk": _account_pk(account_id), "sk": "META"}),
            )
        return "Item" in got

    def put_api_key(self, key_hash: str, key: ApiKey) -> None:
        """The key item (looked up by hash) and its account-side index (found by key id)."""
        items = [
            {"pk": f"KEY#{key_hash}", "sk": "KEY", **_dump(key)},
            {"pk": _account_pk(key.account_id), "sk": f"KEYID#{key.key_id}", "key_hash": key_hash},
        ]
        with _store_errors():
            self._db.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._budget,
                            "Item": _to_item(item),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    }
                    for item in items
                ]
            )

    def update_api_key(self, account_id: str, key_id: str, **changes: Any) -> ApiKey:
        """Change a key's caps, status or scope (operators); found through the account."""
        index = self.get_item(_account_pk(account_id), f"KEYID#{key_id}")
        if index is None:
            raise NotFound(f"No key '{key_id}' in account '{account_id}'")
        current = self.get_api_key(str(index["key_hash"]))
        if current is None:
            raise NotFound(f"No key '{key_id}'")
        updated = ApiKey.model_validate({**current.model_dump(), **changes})
        self.put_item(f"KEY#{index['key_hash']}", "KEY", _dump(updated), new=False)
        return updated

    def get_api_key(self, key_hash: str) -> ApiKey | None:
        with _store_errors():
            got = self._db.get_item(
                TableName=self._budget, Key=_to_item({"pk": f"KEY#{key_hash}", "sk": "KEY"})
            )
        return ApiKey.model_validate(_from_item(got["Item"])) if "Item" in got else None

    def get_project_caps(self, account_id: str, project_id: str) -> dict[Bucket, ProjectCaps]:
        item = self.get_item(_account_pk(account_id), f"PROJECT#{project_id}")
        caps = (item or {}).get("caps") or {}
        return {Bucket(b): ProjectCaps.model_validate(c) for b, c in caps.items()}

    def put_project_caps(
        self, account_id: str, project_id: str, caps: Mapping[Bucket, ProjectCaps]
    ) -> None:
        values = {
            "caps": {b.value: c.model_dump(exclude_none=True) for b, c in caps.items()},
            "updated_at": utcnow().isoformat(),
        }
        self.put_item(_account_pk(account_id), f"PROJECT#{project_id}", values, new=False)

    # Wallets -----------------------------------------------------------------------------
    def get_wallet(self, account_id: str, bucket: Bucket) -> Wallet:
        with _store_errors():
            got = self._db.get_item(
                TableName=self._budget, Key=_bucket_key(account_id, bucket), ConsistentRead=True
            )
        if "Item" not in got:
            raise NotFound(f"No {bucket.value} bucket for this account")
        return Wallet.model_validate(_from_item(got["Item"]))

    def credit(
        self,
        account_id: str,
        bucket: Bucket,
        amount: int,
        *,
        kind: LedgerKind,
        entry_id: str,
        source: str | None = None,
        memo: str | None = None,
        guards: Sequence[dict[str, Any]] = (),
        refund_of: Receipt | None = None,
    ) -> LedgerEntry:
        """Add (or, for a negative adjustment, remove) money and write its ledger entry.

        `guards` are extra transaction items (a payment-event marker, a code claim...) that
        commit with the money or not at all; a failed guard raises GuardFailed. A refund
        names the receipt it refunds: the entry carries its request, key, project, model
        and route, and the views' aggregates count it in the same transaction."""
        if (refund_of is not None) != (kind is LedgerKind.REFUND):
            raise ValueError("a refund, and only a refund, names the receipt it refunds")
        with self._wallet_lock(account_id, bucket):
            for _ in _contended_attempts():
                wallet = self.get_wallet(account_id, bucket)
                entry = LedgerEntry(
                    entry_id=entry_id,
                    account_id=account_id,
                    bucket=bucket,
                    seq=wallet.seq + 1,
                    kind=kind,
                    amount=amount,
                    balance_after=wallet.balance + amount,
                    created_at=self._clock(),
                    request_id=refund_of.request_id if refund_of else None,
                    key_id=refund_of.key_id if refund_of else None,
                    project_id=refund_of.project_id if refund_of else None,
                    model=refund_of.requested_model if refund_of else None,
                    route=refund_of.final_route if refund_of else None,
                    source=source,
                    memo=memo,
                )
                update = {
                    "Update": {
                        "TableName": self._budget,
                        "Key": _bucket_key(account_id, bucket),
                        "UpdateExpression": "SET balance = :balance, seq = :next,"
                        " available = available + :amount",
                        # available >= -amount keeps a negative adjustment from overdrawing.
                        "ConditionExpression": "seq = :seq AND available >= :neg_amount",
                        "ExpressionAttributeValues": _to_item(
                            {
                                ":balance": entry.balance_after,
                                ":amount": amount,
                                ":next": entry.seq,
                                ":seq": wallet.seq,
                                ":neg_amount": -amount,
                            }
                        ),
                    }
                }
                counted = refund_updates(self._ledger, entry, refund_of.run_id) if refund_of else []
                try:
                    self._transact(
                        [*guards, update, self._put_entry(entry), *counted], guards=len(guards)
                    )
                    return entry
                except ConcurrentUpdate:
                    if wallet.available < -amount:
                        raise BudgetExceeded(
                            "The adjustment would take the balance below zero",
                            envelope=f"bucket:{bucket.value}",
                            limit=format_micros(wallet.balance),
                            remaining=format_micros(wallet.available),
                        ) from None
                    continue
        raise BudgetStoreUnavailable("The wallet is too busy; try again")

    # Holds -------------------------------------------------------------------------------
    def reserve(self, hold: Hold) -> None:
        """Hold the worst-case cost in the bucket and in every envelope, in one transaction,
        or refuse naming the envelope that stopped it; nothing goes below zero or over a cap."""
        put_hold = {
            "Put": {
                "TableName": self._budget,
                "Item": {**_hold_key(hold.request_id), **_to_item(self._hold_values(hold))},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        take = {
            "Update": {
                "TableName": self._budget,
                "Key": _bucket_key(hold.account_id, hold.bucket),
                "UpdateExpression": "SET available = available - :hold, held = held + :hold",
                "ConditionExpression": "available >= :hold",
                "ExpressionAttributeValues": _to_item({":hold": hold.amount}),
            }
        }
        envelopes = []
        for envelope in hold.envelopes:
            if envelope.limit < hold.amount:
                raise self._refusal(hold, envelope, self._consumed(envelope))
            envelopes.append(
                {
                    "Update": {
                        "TableName": self._budget,
                        "Key": _to_item({"pk": envelope.pk, "sk": envelope.sk}),
                        "UpdateExpression": "ADD #consumed :hold, #held :hold SET #limit = :limit",
                        "ConditionExpression": "attribute_not_exists(#consumed)"
                        " OR #consumed <= :room",
                        "ExpressionAttributeNames": _RESERVE_NAMES,
                        "ExpressionAttributeValues": _to_item(
                            {
                                ":hold": hold.amount,
                                ":limit": envelope.limit,
                                ":room": envelope.limit - hold.amount,
                            }
                        ),
                    }
                }
            )
        for _ in _contended_attempts():
            try:
                self._transact([put_hold, take, *envelopes])
                return
            except ConcurrentUpdate as exc:
                codes = _cancellation_codes(exc.__cause__) if exc.__cause__ else []
            if "ConditionalCheckFailed" not in codes:
                continue  # a TransactionConflict with a concurrent writer: not a refusal
            raise self._refused(hold, codes, hold.envelopes, 2, "this request's worst case")
        raise BudgetStoreUnavailable("The wallet is too busy; nothing was charged")

    def _refused(
        self,
        hold: Hold,
        codes: list[str],
        envelopes: Sequence[EnvelopeRef],
        first_index: int,
        what: str,
    ) -> BudgetExceeded:
        """The refusal a cancelled reservation deserves: the envelope whose condition failed
        (`envelopes[i]` is transaction item `first_index + i`), else the bucket."""
        for index, envelope in enumerate(envelopes, start=first_index):
            if codes[index : index + 1] == ["ConditionalCheckFailed"]:
                return self._refusal(hold, envelope, self._consumed(envelope))
        wallet = self.get_wallet(hold.account_id, hold.bucket)
        return BudgetExceeded(
            f"The {hold.bucket.value} bucket cannot cover {what}"
            f" ({format_micros(hold.amount)} {hold.bucket.currency});"
            f" {format_micros(wallet.available)} is available",
            envelope=f"bucket:{hold.bucket.value}",
            limit=format_micros(wallet.balance),
            remaining=format_micros(wallet.available),
            requested=format_micros(hold.amount),
        )

    @staticmethod
    def _refusal(hold: Hold, envelope: EnvelopeRef, consumed: int) -> BudgetExceeded:
        remaining = max(envelope.limit - consumed, 0)
        return BudgetExceeded(
            f"The {envelope.name} budget ({format_micros(envelope.limit)}"
            f" {hold.bucket.currency}) cannot cover this request's worst case"
            f" ({format_micros(hold.amount)}); {format_micros(remaining)} is left",
            envelope=envelope.name,
            limit=format_micros(envelope.limit),
            remaining=format_micros(remaining),
            requested=format_micros(hold.amount),
        )

    def _consumed(self, envelope: EnvelopeRef) -> int:
        item = self.get_item(envelope.pk, envelope.sk)
        return int(item.get("consumed", 0)) if item else 0

    def rooms(
        self, account_id: str, bucket: Bucket, envelopes: Sequence[EnvelopeRef]
    ) -> dict[str, tuple[int, int]]:
        """(limit, what is left) of the bucket and of each envelope, in one BatchGetItem; used
        to size a hold after a refusal. Advisory only: the reservation's conditions guard."""
        keys = [_bucket_key(account_id, bucket)] + [
            _to_item({"pk": e.pk, "sk": e.sk}) for e in envelopes
        ]
        with _store_errors():
            got = self._db.batch_get_item(
                RequestItems={self._budget: {"Keys": keys, "ConsistentRead": True}}
            )
        items = {
            (v["pk"], v["sk"]): v for v in map(_from_item, got["Responses"].get(self._budget, []))
        }
        wallet = items.get((_account_pk(account_id), f"BUCKET#{bucket.value}"), {})
        rooms = {
            f"bucket:{bucket.value}": (
                int(wallet.get("balance", 0)),
                int(wallet.get("available", 0)),
            )
        }
        for envelope in envelopes:
            consumed = int(items.get((envelope.pk, envelope.sk), {}).get("consumed", 0))
            rooms[envelope.name] = (envelope.limit, max(envelope.limit - consumed, 0))
        return rooms

    def settle(self, hold: Hold, charge: int, receipt: Receipt) -> Receipt:
        """Charge `charge` (<= hold), release the rest, write the ledger entry and the receipt:
        one transaction, exactly once per hold."""
        if not 0 <= charge <= hold.amount:
            raise ValueError("a settlement charges between zero and the hold")
        with self._wallet_lock(hold.account_id, hold.bucket):
            for _ in _contended_attempts():
                wallet = self.get_wallet(hold.account_id, hold.bucket)
                entry = LedgerEntry(
                    entry_id=f"le_{hold.request_id}",
                    account_id=hold.account_id,
                    bucket=hold.bucket,
                    seq=wallet.seq + 1,
                    kind=LedgerKind.CHARGE,
                    amount=-charge,
                    balance_after=wallet.balance - charge,
                    created_at=self._clock(),
                    request_id=hold.request_id,
                    key_id=receipt.key_id,
                    project_id=receipt.project_id,
                    model=receipt.requested_model,
                    route=receipt.final_route,
                )
                final = receipt.model_copy(
                    update={
                        "charge": charge,
                        "bucket": hold.bucket,
                        "balance_after": entry.balance_after,
                        "ledger_entry_id": entry.entry_id,
                    }
                )
                move = {
                    "Update": {
                        "TableName": self._budget,
                        "Key": _bucket_key(hold.account_id, hold.bucket),
                        "UpdateExpression": "SET balance = :balance, seq = :next,"
                        " available = available + :release, held = held - :hold",
                        "ConditionExpression": "seq = :seq AND held >= :hold",
                        "ExpressionAttributeValues": _to_item(
                            {
                                ":balance": entry.balance_after,
                                ":next": entry.seq,
                                ":seq": wallet.seq,
                                ":release": hold.amount - charge,
                                ":hold": hold.amount,
                            }
                        ),
                    }
                }
                items = [
                    self._resolve_hold(hold, HoldStatus.SETTLED),
                    move,
                    self._put_entry(entry),
                    self._put_receipt(final),
                    *receipt_updates(self._ledger, final),
                    *self._release_envelopes(hold, charge),
                ]
                try:
                    self._transact(items, hold_index=0)
                    return final
                except ConcurrentUpdate:
                    continue
        raise BudgetStoreUnavailable("Could not settle; the hold stays for the sweeper")

    def void(self, hold: Hold, receipt: Receipt) -> Receipt:
        """Release the whole hold (no upstream served the call) and write the receipt."""
        release = {
            "Update": {
                "TableName": self._budget,
                "Key": _bucket_key(hold.account_id, hold.bucket),
                "UpdateExpression": "SET available = available + :hold, held = held - :hold",
                "ConditionExpression": "held >= :hold",
                "ExpressionAttributeValues": _to_item({":hold": hold.amount}),
            }
        }
        final = receipt.model_copy(update={"charge": 0, "bucket": hold.bucket})
        items = [
            self._resolve_hold(hold, HoldStatus.VOIDED),
            release,
            self._put_receipt(final),
            *receipt_updates(self._ledger, final),
            *self._release_envelopes(hold, 0),
        ]
        for _ in _contended_attempts():
            try:
                self._transact(items, hold_index=0)
                return final
            except ConcurrentUpdate:
                continue  # a transaction conflict; the hold item's condition is the guard
        raise BudgetStoreUnavailable("Could not release the hold; it stays for the sweeper")

    def get_hold(self, request_id: str) -> Hold | None:
        with _store_errors():
            got = self._db.get_item(
                TableName=self._budget, Key=_hold_key(request_id), ConsistentRead=True
            )
        if "Item" not in got:
            return None
        return Hold.model_validate(_from_item(got["Item"]))

    def record_outcome(self, hold: Hold, outcome: HoldOutcome) -> None:
        """Remember an upstream result that could not be settled, for the sweeper."""
        with _store_errors():
            try:
                self._db.update_item(
                    TableName=self._budget,
                    Key=_hold_key(hold.request_id),
                    UpdateExpression="SET outcome = :outcome",
                    ConditionExpression="#status = :pending",
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues=_to_item(
                        {":outcome": _dump(outcome), ":pending": HoldStatus.PENDING.value}
                    ),
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                raise HoldAlreadyResolved from exc

    def expired_holds(self, now: datetime) -> list[Hold]:
        """Pending holds whose expiry has passed, from the sparse pending-holds index."""
        holds: list[Hold] = []
        with _store_errors():
            for shard in range(PENDING_SHARDS):
                kwargs: dict[str, Any] = {
                    "TableName": self._budget,
                    "IndexName": PENDING_HOLDS_INDEX,
                    "KeyConditionExpression": "pending_shard = :shard AND expires_at_epoch < :now",
                    "ExpressionAttributeValues": _to_item(
                        {":shard": str(shard), ":now": _epoch(now)}
                    ),
                }
                while True:
                    page = self._db.query(**kwargs)
                    holds += [Hold.model_validate(_from_item(i)) for i in page["Items"]]
                    if "LastEvaluatedKey" not in page:
                        break
                    kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return [h for h in holds if h.status is HoldStatus.PENDING]

    def scan_budget(self) -> Iterator[dict[str, Any]]:
        """Every budget-table item (operator jobs only: reconciliation)."""
        kwargs: dict[str, Any] = {"TableName": self._budget, "ConsistentRead": True}
        with _store_errors():
            while True:
                page = self._db.scan(**kwargs)
                yield from map(_from_item, page["Items"])
                if "LastEvaluatedKey" not in page:
                    return
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # Idempotency keys --------------------------------------------------------------------
    def claim_idempotency(
        self, account_id: str, key: str, record: IdempotencyRecord, now: int
    ) -> IdempotencyRecord | None:
        """Claim a key (None), or return the record of whoever holds it."""
        item = {
            "pk": f"IDEM#{account_id}#{key}",
            "sk": "IDEM",
            **_dump(record),
            "ttl": now + REPLAY_TTL_SECONDS,
        }
        with _store_errors():
            try:
                self._db.put_item(
                    TableName=self._budget,
                    Item=_to_item(item),
                    ConditionExpression="attribute_not_exists(pk)"
                    " OR (#state = :running AND lease_until < :now)",
                    ExpressionAttributeNames={"#state": "state"},
                    ExpressionAttributeValues=_to_item({":running": "in_progress", ":now": now}),
                )
                return None
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
        return self.read_idempotency(account_id, key) or record

    def read_idempotency(self, account_id: str, key: str) -> IdempotencyRecord | None:
        item = self.get_item(f"IDEM#{account_id}#{key}", "IDEM")
        return IdempotencyRecord.model_validate(item) if item else None

    def finish_idempotency(
        self, account_id: str, key: str, request_id: str, response: StoredResponse | None
    ) -> None:
        """Store the response for replays, or (None) release the claim for a clean retry."""
        key_item = _to_item({"pk": f"IDEM#{account_id}#{key}", "sk": "IDEM"})
        with _store_errors():
            try:
                if response is None:
                    self._db.delete_item(
                        TableName=self._budget,
                        Key=key_item,
                        ConditionExpression="request_id = :rid",
                        ExpressionAttributeValues=_to_item({":rid": request_id}),
                    )
                else:
                    self._db.update_item(
                        TableName=self._budget,
                        Key=key_item,
                        UpdateExpression="SET #state = :done, #response = :response",
                        ConditionExpression="request_id = :rid",
                        ExpressionAttributeNames={"#state": "state", "#response": "response"},
                        ExpressionAttributeValues=_to_item(
                            {":done": "done", ":response": _dump(response), ":rid": request_id}
                        ),
                    )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                # Our lease ran out and another request took the key over: leave it to it.

    # Receipts and ledger -----------------------------------------------------------------
    def put_receipt(self, receipt: Receipt) -> None:
        """A receipt for a request that never held money (refused before the reservation),
        counted in the views' aggregates in the same transaction. The receipt is its own
        guard: writing it again (a retry after a lost answer) changes nothing."""
        items = [self._put_receipt(receipt), *receipt_updates(self._ledger, receipt)]
        for _ in _contended_attempts():
            try:
                self._transact(items, guards=1)
                return
            except GuardFailed:
                return  # written (and counted) before
            except ConcurrentUpdate:
                continue  # a transaction conflict on a busy aggregate: try again
        raise BudgetStoreUnavailable("Could not write the receipt; try again")

    def get_receipt(self, account_id: str, request_id: str) -> Receipt | None:
        with _store_errors():
            got = self._db.get_item(
                TableName=self._ledger,
                Key=_to_item({"pk": _account_pk(account_id), "sk": f"RCPT#{request_id}"}),
            )
        return Receipt.model_validate(_from_item(got["Item"])) if "Item" in got else None

    def list_entries(self, account_id: str, bucket: Bucket) -> list[LedgerEntry]:
        """Every ledger entry of one bucket in sequence order (operator and test view)."""
        entries: list[LedgerEntry] = []
        kwargs: dict[str, Any] = {
            "TableName": self._ledger,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": _to_item(
                {":pk": _account_pk(account_id), ":prefix": f"ENTRY#{bucket.value}#"}
            ),
            "ConsistentRead": True,
        }
        with _store_errors():
            while True:
                page = self._db.query(**kwargs)
                entries += [LedgerEntry.model_validate(_from_item(i)) for i in page["Items"]]
                if "LastEvaluatedKey" not in page:
                    return entries
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # Guards for credit(): items that commit with the money or not at all -----------------
    def new_item_guard(self, pk: str, sk: str, **values: Any) -> dict[str, Any]:
        """Put a budget-table item that must not exist yet (once-only markers)."""
        return {
            "Put": {
                "TableName": self._budget,
                "Item": _to_item({"pk": pk, "sk": sk, **values}),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    def update_guard(
        self, pk: str, sk: str, update: str, condition: str, values: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Update a budget-table item under a condition (e.g. a code still active)."""
        return {
            "Update": {
                "TableName": self._budget,
                "Key": _to_item({"pk": pk, "sk": sk}),
                "UpdateExpression": update,
                "ConditionExpression": condition,
                "ExpressionAttributeValues": _to_item(values),
            }
        }

    def get_item(self, pk: str, sk: str) -> dict[str, Any] | None:
        """A budget-table item as plain values (numbers as int), or None."""
        with _store_errors():
            got = self._db.get_item(
                TableName=self._budget, Key=_to_item({"pk": pk, "sk": sk}), ConsistentRead=True
            )
        return _from_item(got["Item"]) if "Item" in got else None

    def put_item(self, pk: str, sk: str, values: Mapping[str, Any], *, new: bool = True) -> bool:
        """Write a budget-table item; with `new`, only if it does not exist (False if it did)."""
        kwargs: dict[str, Any] = {
            "TableName": self._budget,
            "Item": _to_item({"pk": pk, "sk": sk, **values}),
        }
        if new:
            kwargs["ConditionExpression"] = "attribute_not_exists(pk)"
        try:
            self._db.put_item(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise BudgetStoreUnavailable("The budget store is unavailable") from exc
        except BotoCoreError as exc:
            raise BudgetStoreUnavailable("The budget store is unavailable") from exc
        return True

    def query_items(self, pk: str, sk_prefix: str = "") -> list[dict[str, Any]]:
        """Every budget-table item under one partition key (and sort-key prefix)."""
        kwargs: dict[str, Any] = {
            "TableName": self._budget,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": _to_item({":pk": pk, ":prefix": sk_prefix}),
            "ConsistentRead": True,
        }
        items: list[dict[str, Any]] = []
        with _store_errors():
            while True:
                page = self._db.query(**kwargs)
                items += [_from_item(i) for i in page["Items"]]
                if "LastEvaluatedKey" not in page:
                    return items
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # Building blocks ---------------------------------------------------------------------
    def _hold_values(self, hold: Hold) -> dict[str, Any]:
        # pending_shard + expires_at_epoch key the sparse `pending-holds` index the sweeper
        # reads; resolving a hold removes pending_shard, so only pending holds are indexed.
        shard = int(hashlib.sha256(hold.request_id.encode()).hexdigest(), 16) % PENDING_SHARDS
        return {
            **_dump(hold),
            "expires_at_epoch": _epoch(hold.expires_at),
            "pending_shard": str(shard),
        }

    def _release_envelopes(self, hold: Hold, charge: int) -> list[dict[str, Any]]:
        """Turn an envelope's hold into its charge: consumed moves by charge - hold."""
        return [
            {
                "Update": {
                    "TableName": self._budget,
                    "Key": _to_item({"pk": envelope.pk, "sk": envelope.sk}),
                    "UpdateExpression": "ADD #consumed :delta, #held :release, #settled :charge",
                    "ExpressionAttributeNames": _RELEASE_NAMES,
                    "ExpressionAttributeValues": _to_item(
                        {
                            ":delta": charge - hold.amount,
                            ":release": -hold.amount,
                            ":charge": charge,
                        }
                    ),
                }
            }
            for envelope in hold.envelopes
        ]

    def _resolve_hold(self, hold: Hold, status: HoldStatus) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._budget,
                "Key": _hold_key(hold.request_id),
                "UpdateExpression": "SET #status = :to, resolved_at = :now, #ttl = :ttl"
                " REMOVE pending_shard",
                "ConditionExpression": "#status = :pending",
                "ExpressionAttributeNames": {"#status": "status", "#ttl": "ttl"},
                "ExpressionAttributeValues": _to_item(
                    {
                        ":to": status.value,
                        ":pending": HoldStatus.PENDING.value,
                        ":now": datetime.now(UTC).isoformat(),
                        ":ttl": int(time.time()) + RESOLVED_HOLD_RETENTION_SECONDS,
                    }
                ),
            }
        }

    def _put_entry(self, entry: LedgerEntry) -> dict[str, Any]:
        item = {
            "pk": _account_pk(entry.account_id),
            "sk": entry_sort_key(entry.bucket, entry.seq),
            "record_type": "ledger_entry",
            **_dump(entry),
            **entry_index_attributes(entry),  # the account views' indexes (ledger_views)
        }
        return {
            "Put": {
                "TableName": self._ledger,
                "Item": _to_item(item),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    def _put_receipt(self, receipt: Receipt) -> dict[str, Any]:
        item = {
            "pk": _account_pk(receipt.account_id),
            "sk": f"RCPT#{receipt.request_id}",
            "record_type": "receipt",
            **_dump(receipt),
            **receipt_index_attributes(receipt),
        }
        return {
            "Put": {
                "TableName": self._ledger,
                "Item": _to_item(item),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    def _transact(
        self, items: list[dict[str, Any]], *, hold_index: int | None = None, guards: int = 0
    ) -> None:
        """Run a transaction. A failed condition on the hold means it was already resolved, on
        one of the first `guards` items GuardFailed; any other failed condition or conflict
        is a lost race (ConcurrentUpdate)."""
        try:
            self._db.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if not _is_cancelled(exc):
                raise BudgetStoreUnavailable(
                    "The budget store is unavailable; nothing was charged"
                ) from exc
            codes = _cancellation_codes(exc)
            for index, code in enumerate(codes[:guards]):
                if code == "ConditionalCheckFailed":
                    raise GuardFailed(index) from exc
            if hold_index is not None and codes[hold_index : hold_index + 1] == [
                "ConditionalCheckFailed"
            ]:
                raise HoldAlreadyResolved from exc
            if any(c in ("ConditionalCheckFailed", "TransactionConflict") for c in codes):
                raise ConcurrentUpdate from exc
            raise BudgetStoreUnavailable("The budget store refused the transaction") from exc
        except BotoCoreError as exc:
            raise BudgetStoreUnavailable(
                "The budget store is unavailable; nothing was charged"
            ) from exc

    # Fallback: a pending hold moved to another route's price and bucket -----------------
    def rehold(self, current: Hold, moved: Hold) -> None:
        """Re-reserve a pending hold at another route's worst case, in that route's bucket and
        envelopes, in one transaction: what `current` held is released as `moved` is taken,
        under the same conditions as reserve(). When refused (BudgetExceeded, naming the
        envelope) or already resolved (HoldAlreadyResolved), nothing changes."""
        if moved.request_id != current.request_id:
            raise ValueError("a hold moves within its own request")
        for envelope in moved.envelopes:
            if envelope.limit < moved.amount:
                raise self._refusal(moved, envelope, self._consumed(envelope))
        put_hold = {
            "Put": {
                "TableName": self._budget,
                "Item": {**_hold_key(moved.request_id), **_to_item(self._hold_values(moved))},
                "ConditionExpression": "#status = :pending AND #amount = :old AND #bucket = :from",
                "ExpressionAttributeNames": {
                    "#status": "status",
                    "#amount": "amount",
                    "#bucket": "bucket",
                },
                "ExpressionAttributeValues": _to_item(
                    {
                        ":pending": HoldStatus.PENDING.value,
                        ":old": current.amount,
                        ":from": current.bucket.value,
                    }
                ),
            }
        }
        moves: list[tuple[Bucket, int, int]] = (  # (bucket, take, release)
            [(current.bucket, moved.amount, current.amount)]
            if current.bucket is moved.bucket
            else [(current.bucket, 0, current.amount), (moved.bucket, moved.amount, 0)]
        )
        buckets = [
            {
                "Update": {
                    "TableName": self._budget,
                    "Key": _bucket_key(current.account_id, bucket),
                    "UpdateExpression": "SET available = available - :delta, held = held + :delta",
                    "ConditionExpression": "available >= :delta AND held >= :release",
                    "ExpressionAttributeValues": _to_item(
                        {":delta": take - release, ":release": release}
                    ),
                }
            }
            for bucket, take, release in moves
        ]
        before = {(e.pk, e.sk): e for e in current.envelopes}
        after = {(e.pk, e.sk): e for e in moved.envelopes}
        released = [e for k, e in before.items() if k not in after]
        envelopes = self._release_envelopes(current.model_copy(update={"envelopes": released}), 0)
        checked: list[EnvelopeRef] = []  # envelopes whose update carries a room condition
        for key, envelope in after.items():
            delta = moved.amount - (current.amount if key in before else 0)
            update: dict[str, Any] = {
                "TableName": self._budget,
                "Key": _to_item({"pk": envelope.pk, "sk": envelope.sk}),
                "UpdateExpression": "ADD #consumed :delta, #held :delta SET #limit = :limit",
                "ExpressionAttributeNames": _RESERVE_NAMES,
                "ExpressionAttributeValues": _to_item(
                    {":delta": delta, ":limit": envelope.limit, ":room": envelope.limit - delta}
                ),
            }
            if delta > 0:
                update["ConditionExpression"] = (
                    "attribute_not_exists(#consumed) OR #consumed <= :room"
                )
            else:
                del update["ExpressionAttributeValues"][":room"]
            envelopes.append({"Update": update})
            checked.append(envelope)
        items = [put_hold, *buckets, *envelopes]
        first_checked = 1 + len(buckets) + len(released)
        for _ in _contended_attempts():
            try:
                self._transact(items, hold_index=0)
                return
            except ConcurrentUpdate as exc:
                codes = _cancellation_codes(exc.__cause__) if exc.__cause__ else []
            if "ConditionalCheckFailed" not in codes:
                continue  # a transaction conflict: try again
            raise self._refused(
                moved, codes, checked, first_checked, "the fallback route's worst case"
            )
        raise BudgetStoreUnavailable("Could not move the hold; try again")
