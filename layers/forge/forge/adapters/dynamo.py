"""DynamoDB adapter: accounts, keys, wallets, holds, ledger entries and receipts.

Money moves only inside TransactWriteItems whose conditions test stored quantities:
- reserve:  available >= :hold            (available is kept as its own attribute)
- settle:   hold is pending, and the bucket's ledger sequence is the one we read, so the
            entry's balance_after is exact; a lost race re-reads and retries.
botocore errors become domain errors here; nothing above this module sees boto3.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from forge.errors import BudgetExceeded, BudgetStoreUnavailable, ConcurrentUpdate, NotFound
from forge.money import Bucket, format_micros
from forge.records import (
    ApiKey,
    Hold,
    HoldStatus,
    LedgerEntry,
    LedgerKind,
    Receipt,
    Wallet,
    utcnow,
)

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
_MAX_WRITE_ATTEMPTS = 25


class HoldAlreadyResolved(Exception):
    """The hold was settled or voided before: resolving it again must change nothing."""


class GuardFailed(Exception):
    """A guard item of a money transaction failed its condition (a replayed payment event,
    an already claimed code...): nothing was written. `index` says which guard."""

    def __init__(self, index: int) -> None:
        super().__init__(f"guard {index} failed")
        self.index = index


def _to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def _from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: _deserializer.deserialize(v) for k, v in item.items()}
    return {k: int(v) if isinstance(v, Decimal) else v for k, v in out.items()}


def _dump(model: Any) -> dict[str, Any]:
    """A pydantic model as DynamoDB values: JSON mode turns datetimes and enums into strings."""
    return dict(model.model_dump(mode="json", exclude_none=True))


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


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))  # noqa: S311 - jitter only


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

    def __init__(self, client: Any, budget_table: str, ledger_table: str) -> None:
        self._db = client
        self._budget = budget_table
        self._ledger = ledger_table

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
        item = {"pk": f"KEY#{key_hash}", "sk": "KEY", **_dump(key)}
        with _store_errors():
            self._db.put_item(
                TableName=self._budget,
                Item=_to_item(item),
                ConditionExpression="attribute_not_exists(pk)",
            )

    def get_api_key(self, key_hash: str) -> ApiKey | None:
        with _store_errors():
            got = self._db.get_item(
                TableName=self._budget, Key=_to_item({"pk": f"KEY#{key_hash}", "sk": "KEY"})
            )
        return ApiKey.model_validate(_from_item(got["Item"])) if "Item" in got else None

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
    ) -> LedgerEntry:
        """Add (or, for a negative adjustment, remove) money and write its ledger entry.

        `guards` are extra transaction items (a payment-event marker, a code claim...) that
        commit with the money or not at all; a failed guard raises GuardFailed."""
        for attempt in range(_MAX_WRITE_ATTEMPTS):
            wallet = self.get_wallet(account_id, bucket)
            entry = LedgerEntry(
                entry_id=entry_id,
                account_id=account_id,
                bucket=bucket,
                seq=wallet.seq + 1,
                kind=kind,
                amount=amount,
                balance_after=wallet.balance + amount,
                source=source,
                memo=memo,
            )
            update = {
                "Update": {
                    "TableName": self._budget,
                    "Key": _bucket_key(account_id, bucket),
                    "UpdateExpression": "SET balance = :balance, available = available + :amount,"
                    " seq = :next",
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
            try:
                self._transact([*guards, update, self._put_entry(entry)], guards=len(guards))
                return entry
            except ConcurrentUpdate:
                if wallet.available < -amount:
                    raise BudgetExceeded(
                        "The adjustment would take the balance below zero",
                        envelope=f"bucket:{bucket.value}",
                        limit=format_micros(wallet.balance),
                        remaining=format_micros(wallet.available),
                    ) from None
                _backoff(attempt)
        raise BudgetStoreUnavailable("The wallet is too busy; try again")

    # Holds -------------------------------------------------------------------------------
    def reserve(self, hold: Hold) -> None:
        """Hold the worst-case cost, or refuse with the bucket's numbers; never below zero."""
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
        try:
            self._transact([put_hold, take])
        except ConcurrentUpdate:
            wallet = self.get_wallet(hold.account_id, hold.bucket)
            raise BudgetExceeded(
                f"The {hold.bucket.value} bucket cannot cover this request's worst case"
                f" ({format_micros(hold.amount)} {hold.bucket.currency});"
                f" {format_micros(wallet.available)} is available",
                envelope=f"bucket:{hold.bucket.value}",
                limit=format_micros(wallet.balance),
                remaining=format_micros(wallet.available),
                requested=format_micros(hold.amount),
            ) from None

    def settle(self, hold: Hold, charge: int, receipt: Receipt) -> Receipt:
        """Charge `charge` (<= hold), release the rest, write the ledger entry and the receipt:
        one transaction, exactly once per hold."""
        if not 0 <= charge <= hold.amount:
            raise ValueError("a settlement charges between zero and the hold")
        for attempt in range(_MAX_WRITE_ATTEMPTS):
            wallet = self.get_wallet(hold.account_id, hold.bucket)
            entry = LedgerEntry(
                entry_id=f"le_{hold.request_id}",
                account_id=hold.account_id,
                bucket=hold.bucket,
                seq=wallet.seq + 1,
                kind=LedgerKind.CHARGE,
                amount=-charge,
                balance_after=wallet.balance - charge,
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
            ]
            try:
                self._transact(items, hold_index=0)
                return final
            except ConcurrentUpdate:
                _backoff(attempt)
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
        try:
            self._transact(
                [self._resolve_hold(hold, HoldStatus.VOIDED), release, self._put_receipt(final)],
                hold_index=0,
            )
        except ConcurrentUpdate:
            raise BudgetStoreUnavailable("Could not release the hold") from None
        return final

    def get_hold(self, request_id: str) -> Hold | None:
        with _store_errors():
            got = self._db.get_item(
                TableName=self._budget, Key=_hold_key(request_id), ConsistentRead=True
            )
        if "Item" not in got:
            return None
        return Hold.model_validate(_from_item(got["Item"]))

    # Receipts and ledger -----------------------------------------------------------------
    def put_receipt(self, receipt: Receipt) -> None:
        """A receipt for a request that never held money (refused before the reservation)."""
        with _store_errors():
            self._db.put_item(**self._put_receipt(receipt)["Put"])

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
        return {**_dump(hold), "expires_at_epoch": _epoch(hold.expires_at)}

    def _resolve_hold(self, hold: Hold, status: HoldStatus) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._budget,
                "Key": _hold_key(hold.request_id),
                "UpdateExpression": "SET #status = :to, resolved_at = :now",
                "ConditionExpression": "#status = :pending",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": _to_item(
                    {
                        ":to": status.value,
                        ":pending": HoldStatus.PENDING.value,
                        ":now": datetime.now(UTC).isoformat(),
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
