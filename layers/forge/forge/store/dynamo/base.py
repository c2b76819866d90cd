"""What every part of the DynamoDB store shares: the client and its two tables, transactions
and what their cancellations mean, store errors failing closed, the wallet read every money
movement starts from, and plain item access (operators, tests and the parts themselves).

botocore errors become domain errors here; nothing above the store sees boto3.
"""

from __future__ import annotations

import random
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from forge.domain.errors import (
    BudgetStoreUnavailable,
    ConcurrentUpdate,
    GuardFailed,
    HoldAlreadyResolved,
    NotFound,
)
from forge.domain.money import Bucket
from forge.domain.records import Hold, HoldStatus, LedgerEntry, Wallet, utcnow
from forge.store.dynamo import schema
from forge.store.dynamo.items import from_item, to_item

# A lost race on a busy wallet is retried (re-read, then write) for this long before the
# caller is told the store is unavailable; a settle then defers to the sweeper.
_CONTENTION_SECONDS = 10.0
NOT_EXISTS = "attribute_not_exists(pk)"  # the condition of every once-only put
_CONTENDED = ("ConditionalCheckFailed", "TransactionConflict", "ThrottlingError")


@contextmanager
def store_errors() -> Iterator[None]:
    """Any failure to reach or use the store fails closed as a 503-class error."""
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise BudgetStoreUnavailable(
            "The budget store is unavailable; nothing was charged"
        ) from exc


def is_condition_failure(exc: ClientError) -> bool:
    return bool(exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")


def cancellation_codes(exc: BaseException | None) -> list[str]:
    """Per transaction item, why a cancelled transaction was cancelled ([] if it was not)."""
    if not isinstance(exc, ClientError):
        return []
    reasons = exc.response.get("CancellationReasons") or []
    return [str(r.get("Code", "None")) for r in reasons]


def _is_cancelled(exc: ClientError) -> bool:
    return bool(exc.response.get("Error", {}).get("Code") == "TransactionCanceledException")


def contended_attempts() -> Iterator[int]:
    """Attempt numbers until the contention deadline, sleeping a capped, fully jittered
    exponential backoff between them."""
    deadline = time.monotonic() + _CONTENTION_SECONDS
    attempt = 0
    while time.monotonic() < deadline:
        yield attempt
        time.sleep(random.uniform(0, min(0.1, 0.004 * 2**attempt)))  # noqa: S311 - jitter only
        attempt += 1


def shard_of(request_id: str, shards: int) -> int:
    """The wallet shard a request reserves on: stable, and spread evenly over the shards."""
    return zlib.crc32(request_id.encode()) % shards if shards > 1 else 0


def _is_shard_of(item: Mapping[str, Any], prefix: str) -> bool:
    """`BUCKET#credit` and `BUCKET#credit#03`, not a bucket whose name merely starts alike."""
    sk = str(item["sk"])
    return sk == prefix or sk[len(prefix) : len(prefix) + 1] == "#"


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())


class DynamoTables:
    """One DynamoDB client and the two tables: the base every part of the store builds on."""

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
        self._wallet_locks: dict[tuple[str, Bucket, int], threading.Lock] = {}
        self._shard_counts: dict[tuple[str, Bucket], int] = {}  # learned from wallet reads
        self._locks_guard = threading.Lock()
        # When ledger entries are stamped (created_at). Tests inject a clock to write a
        # month's history on chosen days; money itself is never faked.
        self._clock = clock

    def _wallet_lock(self, account_id: str, bucket: Bucket, shard: int = 0) -> threading.Lock:
        """Settles and credits of one wallet take turns within this process, so its own
        requests never race each other's compare-and-set (other processes still may: the
        `seq` condition stays the guard). Under 50-way contention in one process this turns
        a storm of lost races into one write after another."""
        with self._locks_guard:
            return self._wallet_locks.setdefault((account_id, bucket, shard), threading.Lock())

    def get_wallet(self, account_id: str, bucket: Bucket) -> Wallet:
        """The bucket's totals, summed over its shards (one consistent Query either way)."""
        shards = self.wallet_shards(account_id, bucket)
        return Wallet(
            account_id=account_id,
            bucket=bucket,
            balance=sum(w.balance for w in shards),
            held=sum(w.held for w in shards),
            available=sum(w.available for w in shards),
            seq=sum(w.seq for w in shards),
            shards=len(shards),
        )

    def wallet_shards(self, account_id: str, bucket: Bucket) -> list[Wallet]:
        """Every shard of a bucket (just its wallet, if it is not split), in shard order."""
        prefix = schema.wallets_prefix(bucket)
        items = self._query(self._budget, schema.account_pk(account_id), prefix)
        shards = [Wallet.model_validate(i) for i in items if _is_shard_of(i, prefix)]
        if not shards:
            raise NotFound(f"No {bucket.value} bucket for this account")
        self._learn_shards(shards[0])
        return shards

    def _shard(self, account_id: str, bucket: Bucket, shard: int) -> Wallet:
        """One shard, read consistently: what a compare-and-set on it starts from."""
        with store_errors():
            got = self._db.get_item(
                TableName=self._budget,
                Key=to_item(schema.wallet_key(account_id, bucket, shard)),
                ConsistentRead=True,
            )
        if "Item" not in got:
            raise NotFound(f"No {bucket.value} bucket for this account")
        wallet = Wallet.model_validate(from_item(got["Item"]))
        self._learn_shards(wallet)
        return wallet

    def _learn_shards(self, wallet: Wallet) -> None:
        key = (wallet.account_id, wallet.bucket)  # shards are only ever added
        self._shard_counts[key] = max(wallet.shards, self._shard_counts.get(key, 1))

    def _placed(self, hold: Hold) -> Hold:
        """Put `hold` on the shard its request id picks among the shards this container
        knows. In place: a caller whose reservation then fails still knows where it may have
        landed, and releases it there."""
        shards = self._shard_counts.get((hold.account_id, hold.bucket), 1)
        hold.shard = shard_of(hold.request_id, shards)
        return hold

    def _where_held(self, hold: Hold) -> Hold:
        """`hold` on the shard the stored pending hold is on. A caller can be wrong about it
        only after a reservation whose answer it lost; anything else is an inconsistency,
        refused rather than retried. HoldAlreadyResolved if it is no longer pending."""
        stored = self._held_as(hold)
        if stored is None:
            raise HoldAlreadyResolved
        if stored.shard == hold.shard:
            raise BudgetStoreUnavailable("The hold's shard does not hold it; see reconcile")
        return hold.model_copy(update={"shard": stored.shard})

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
            codes = cancellation_codes(exc)
            for index, code in enumerate(codes[:guards]):
                if code == "ConditionalCheckFailed":
                    raise GuardFailed(index) from exc
            if hold_index is not None and codes[hold_index : hold_index + 1] == [
                "ConditionalCheckFailed"
            ]:
                raise HoldAlreadyResolved from exc
            # A throttled item (over its write ceiling) is contention too: retried with
            # backoff like a conflict (botocore does not retry a cancelled transaction).
            if any(c in _CONTENDED for c in codes):
                raise ConcurrentUpdate from exc
            raise BudgetStoreUnavailable("The budget store refused the transaction") from exc
        except BotoCoreError as exc:
            raise BudgetStoreUnavailable(
                "The budget store is unavailable; nothing was charged"
            ) from exc

    def _put_new(self, table: str, item: Mapping[str, Any]) -> dict[str, Any]:
        """A transaction item putting `item`, which must not exist yet."""
        return {
            "Put": {"TableName": table, "Item": to_item(item), "ConditionExpression": NOT_EXISTS}
        }

    # Plain item access (budget table) ------------------------------------------------------
    def get_item(self, pk: str, sk: str) -> dict[str, Any] | None:
        """A budget-table item as plain values, or None."""
        with store_errors():
            got = self._db.get_item(
                TableName=self._budget, Key=to_item({"pk": pk, "sk": sk}), ConsistentRead=True
            )
        return from_item(got["Item"]) if "Item" in got else None

    def put_item(self, pk: str, sk: str, values: Mapping[str, Any], *, new: bool = True) -> bool:
        """Write a budget-table item; with `new`, only if it does not exist (False if it did)."""
        kwargs: dict[str, Any] = {
            "TableName": self._budget,
            "Item": to_item({"pk": pk, "sk": sk, **values}),
        }
        if new:
            kwargs["ConditionExpression"] = NOT_EXISTS
        try:
            self._db.put_item(**kwargs)
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise BudgetStoreUnavailable("The budget store is unavailable") from exc
        except BotoCoreError as exc:
            raise BudgetStoreUnavailable("The budget store is unavailable") from exc
        return True

    def query_items(self, pk: str, sk_prefix: str = "") -> list[dict[str, Any]]:
        """Every budget-table item under one partition key (and sort-key prefix)."""
        return list(self._query(self._budget, pk, sk_prefix))

    def _get(self, key: schema.Key) -> dict[str, Any] | None:
        return self.get_item(key["pk"], key["sk"])

    # After a cancelled retry of a write whose answer was lost (botocore retries a timed-out
    # call), was the write that landed our own? Then the retry met its own effect.
    def _held_as(self, hold: Hold) -> Hold | None:
        """The stored hold, if it is pending with `hold`'s amount and bucket (on whichever
        shard the write that landed placed it)."""
        stored = self._get(schema.hold_key(hold.request_id))
        if stored is None or stored.get("status") != HoldStatus.PENDING.value:
            return None
        if (stored.get("amount"), stored.get("bucket")) != (hold.amount, hold.bucket.value):
            return None
        return Hold.model_validate(stored)

    def _entry_landed(self, entry: LedgerEntry) -> bool:
        """Whether the ledger entry at `entry`'s seq is `entry` itself (entry ids are unique)."""
        key = schema.entry_key(entry.account_id, entry.bucket, entry.seq, entry.shard)
        with store_errors():
            got = self._db.get_item(
                TableName=self._ledger, Key=to_item(dict(key)), ConsistentRead=True
            )
        return "Item" in got and from_item(got["Item"]).get("entry_id") == entry.entry_id

    def _put(self, key: schema.Key, values: Mapping[str, Any], *, new: bool = True) -> bool:
        return self.put_item(key["pk"], key["sk"], values, new=new)

    def scan_budget(self) -> Iterator[dict[str, Any]]:
        """Every budget-table item (operator jobs only: reconciliation)."""
        kwargs: dict[str, Any] = {"TableName": self._budget, "ConsistentRead": True}
        with store_errors():
            while True:
                page = self._db.scan(**kwargs)
                yield from map(from_item, page["Items"])
                if "LastEvaluatedKey" not in page:
                    return
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _query(self, table: str, pk: str, sk_prefix: str) -> Iterator[dict[str, Any]]:
        """Every item of `table` under one partition key and sort-key prefix, in order."""
        kwargs: dict[str, Any] = {
            "TableName": table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": to_item({":pk": pk, ":prefix": sk_prefix}),
            "ConsistentRead": True,
        }
        with store_errors():
            while True:
                page = self._db.query(**kwargs)
                yield from map(from_item, page["Items"])
                if "LastEvaluatedKey" not in page:
                    return
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
