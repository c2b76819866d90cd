"""Taking holds (the reserving half of the BudgetStore port): reserve the worst case across the
bucket and every envelope in one transaction, re-reserve it for a fallback route, and read
the room left when a reservation is refused.

Conditions cannot do arithmetic, so every quantity they test is a stored attribute:
- the bucket:    available >= :hold             (available is kept as its own attribute)
- an envelope:   consumed <= :room              (room = limit - hold, computed here)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from forge.domain.errors import (
    BudgetExceeded,
    BudgetStoreUnavailable,
    ConcurrentUpdate,
    HoldAlreadyResolved,
)
from forge.domain.money import Bucket, format_micros
from forge.domain.records import EnvelopeRef, Hold, HoldStatus
from forge.store.dynamo import schema
from forge.store.dynamo.base import (
    NOT_EXISTS,
    cancellation_codes,
    contended_attempts,
    epoch,
    store_errors,
)
from forge.store.dynamo.batch import batch_get
from forge.store.dynamo.items import dump, from_item, to_item
from forge.store.dynamo.shards import DynamoShards

# Envelope counters; several are DynamoDB reserved words, so always go through names.
_RESERVE_NAMES = {"#consumed": "consumed", "#held": "held", "#limit": "limit"}
_RELEASE_NAMES = {"#consumed": "consumed", "#held": "held", "#settled": "settled"}
_SHARE_NAMES = {"#consumed": "consumed", "#held": "held", "#room": "room", "#limit": "limit"}


def hold_values(hold: Hold) -> dict[str, Any]:
    """A hold's item. pending_shard + expires_at_epoch key the sparse pending-holds index the
    sweeper reads; resolving a hold removes pending_shard, so only pending holds are indexed."""
    return {
        **schema.hold_key(hold.request_id),
        **dump(hold),
        "expires_at_epoch": epoch(hold.expires_at),
        "pending_shard": schema.pending_shard(hold.request_id),
    }


def release_envelopes(table: str, hold: Hold, charge: int) -> list[dict[str, Any]]:
    """Turn each envelope's hold into its charge: consumed moves by charge - hold (and on a
    share of a split bucket's envelope, what the hold did not spend is room again)."""
    values = {":delta": charge - hold.amount, ":release": -hold.amount, ":charge": charge}
    expression = "ADD #consumed :delta, #held :release, #settled :charge"
    names = dict(_RELEASE_NAMES)
    if hold.shard:
        expression += ", #room :back"
        values[":back"] = hold.amount - charge
        names["#room"] = "room"
    return [
        {
            "Update": {
                "TableName": table,
                "Key": to_item(schema.envelope_key(envelope, hold.shard)),
                "UpdateExpression": expression,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": to_item(values),
            }
        }
        for envelope in hold.envelopes
    ]


def _put_hold(table: str, hold: Hold) -> dict[str, Any]:
    return {
        "Put": {
            "TableName": table,
            "Item": to_item(hold_values(hold)),
            "ConditionExpression": NOT_EXISTS,
        }
    }


def _take_wallet(table: str, hold: Hold) -> dict[str, Any]:
    """Hold `hold.amount` in its shard of the bucket, only if it is available there."""
    return {
        "Update": {
            "TableName": table,
            "Key": to_item(schema.wallet_key(hold.account_id, hold.bucket, hold.shard)),
            "UpdateExpression": "SET available = available - :hold, held = held + :hold",
            "ConditionExpression": "available >= :hold",
            "ExpressionAttributeValues": to_item({":hold": hold.amount}),
        }
    }


def _take_envelope(
    table: str, envelope: EnvelopeRef, delta: int, *, within_limit: bool, shard: int = 0
) -> dict[str, Any]:
    """Add `delta` to an envelope's consumed and held; `within_limit`, only if it stays within
    the envelope's limit. On shard k > 0 of a split bucket, the envelope's share there takes
    it from its room, which its envelope lent it (`_lend`), so that one item is not every
    call's."""
    if shard:
        update: dict[str, Any] = {
            "TableName": table,
            "Key": to_item(schema.envelope_key(envelope, shard)),
            "UpdateExpression": "ADD #consumed :delta, #held :delta, #room :taken",
            "ExpressionAttributeNames": _SHARE_NAMES,
            "ExpressionAttributeValues": to_item(
                {":delta": delta, ":taken": -delta, ":limit": envelope.limit}
            ),
        }
        if within_limit:  # and only room lent under this request's limit
            update["ConditionExpression"] = "#room >= :delta AND #limit = :limit"
        else:  # DynamoDB refuses names and values an expression does not use
            del update["ExpressionAttributeValues"][":limit"]
            update["ExpressionAttributeNames"] = {
                k: v for k, v in _SHARE_NAMES.items() if k != "#limit"
            }
        return {"Update": update}
    update = {
        "TableName": table,
        "Key": to_item(schema.envelope_key(envelope)),
        "UpdateExpression": "ADD #consumed :delta, #held :delta SET #limit = :limit",
        "ExpressionAttributeNames": _RESERVE_NAMES,
        "ExpressionAttributeValues": to_item({":delta": delta, ":limit": envelope.limit}),
    }
    if within_limit:
        update["ConditionExpression"] = "attribute_not_exists(#consumed) OR #consumed <= :room"
        update["ExpressionAttributeValues"].update(to_item({":room": envelope.limit - delta}))
    return {"Update": update}


class DynamoHolds(DynamoShards):
    def reserve(self, hold: Hold) -> Hold:
        """Hold the worst-case cost in the bucket and in every envelope, in one transaction,
        or refuse naming the envelope that stopped it; nothing goes below zero or over a cap.
        Returns the hold as placed: on one shard of a split bucket."""
        self._placed(hold)
        for envelope in hold.envelopes:
            if envelope.limit < hold.amount:
                raise self._refusal(hold, envelope, self._envelope_left(envelope))
        for _ in contended_attempts():
            try:
                self._transact(self._reservation(hold))
                return hold
            except ConcurrentUpdate as exc:
                codes = cancellation_codes(exc.__cause__)
            if "ConditionalCheckFailed" not in codes:
                # A conflict or a throttle: not a refusal. A container that has not read this
                # bucket yet learns its shards now, before it crowds shard 0 again.
                if (hold.account_id, hold.bucket) not in self._shard_counts:
                    self.wallet_shards(hold.account_id, hold.bucket)
                    self._placed(hold)
                continue
            if codes[0] == "ConditionalCheckFailed" and (landed := self._held_as(hold)):
                hold.shard = landed.shard  # where an earlier attempt, answer lost, put it
                return hold  # our answer was lost and botocore's retry met our own hold
            if codes[1:2] == ["ConditionalCheckFailed"] and self._gather(
                hold.account_id, hold.bucket, hold.shard, hold.amount
            ):
                continue  # the shard was short; the others refilled it (its test is `available`)
            short = [
                e
                for i, e in enumerate(hold.envelopes)
                if codes[2 + i : 3 + i] == ["ConditionalCheckFailed"]
            ]
            if short and self._lend(short[0], hold.shard, hold.amount, self._shards_of(hold)):
                continue  # the envelope's item on this shard was short; it has room now
            raise self._refused(hold, codes, hold.envelopes, 2, "this request's worst case")
        raise BudgetStoreUnavailable("The wallet is too busy; nothing was charged")

    def _reservation(self, hold: Hold) -> list[dict[str, Any]]:
        takes = [
            _take_envelope(self._budget, e, hold.amount, within_limit=True, shard=hold.shard)
            for e in hold.envelopes
        ]
        return [_put_hold(self._budget, hold), _take_wallet(self._budget, hold), *takes]

    def _shards_of(self, hold: Hold) -> int:
        return self._shard_counts.get((hold.account_id, hold.bucket), 1)

    def rehold(self, current: Hold, moved: Hold) -> Hold:
        """Re-reserve a pending hold at another route's worst case, in that route's bucket and
        envelopes, in one transaction: what `current` held is released as `moved` is taken,
        under the same conditions as reserve(). When refused (BudgetExceeded, naming the
        envelope) or already resolved (HoldAlreadyResolved), nothing changes. Returns the
        moved hold as placed (on the current shard, or on one of another bucket's)."""
        if moved.request_id != current.request_id:
            raise ValueError("a hold moves within its own request")
        if moved.bucket is current.bucket:
            moved.shard = current.shard  # in place, as _placed() does
        else:
            self._placed(moved)
        for envelope in moved.envelopes:
            if envelope.limit < moved.amount:
                raise self._refusal(moved, envelope, self._envelope_left(envelope))
        put_hold = {
            "Put": {
                "TableName": self._budget,
                "Item": to_item(hold_values(moved)),
                "ConditionExpression": "#status = :pending AND #amount = :old AND #bucket = :from",
                "ExpressionAttributeNames": {
                    "#status": "status",
                    "#amount": "amount",
                    "#bucket": "bucket",
                },
                "ExpressionAttributeValues": to_item(
                    {
                        ":pending": HoldStatus.PENDING.value,
                        ":old": current.amount,
                        ":from": current.bucket.value,
                    }
                ),
            }
        }
        moves: list[tuple[Bucket, int, int, int]] = (  # (bucket, shard, take, release)
            [(current.bucket, current.shard, moved.amount, current.amount)]
            if current.bucket is moved.bucket
            else [
                (current.bucket, current.shard, 0, current.amount),
                (moved.bucket, moved.shard, moved.amount, 0),
            ]
        )
        buckets = [
            {
                "Update": {
                    "TableName": self._budget,
                    "Key": to_item(schema.wallet_key(current.account_id, bucket, shard)),
                    "UpdateExpression": "SET available = available - :delta, held = held + :delta",
                    "ConditionExpression": "available >= :delta AND held >= :release",
                    "ExpressionAttributeValues": to_item(
                        {":delta": take - release, ":release": release}
                    ),
                }
            }
            for bucket, shard, take, release in moves
        ]
        before = {(e.pk, e.sk): e for e in current.envelopes}
        after = {(e.pk, e.sk): e for e in moved.envelopes}
        released = [e for k, e in before.items() if k not in after]
        envelopes = release_envelopes(
            self._budget, current.model_copy(update={"envelopes": released}), 0
        )
        checked: list[EnvelopeRef] = []  # envelopes whose update carries a room condition
        deltas: list[int] = []
        for key, envelope in after.items():
            delta = moved.amount - (current.amount if key in before else 0)
            envelopes.append(
                _take_envelope(
                    self._budget, envelope, delta, within_limit=delta > 0, shard=moved.shard
                )
            )
            checked.append(envelope)
            deltas.append(delta)
        items = [put_hold, *buckets, *envelopes]
        first_checked = 1 + len(buckets) + len(released)
        gathered = lent = False
        for _ in contended_attempts():
            try:
                self._transact(items, hold_index=0)
                return moved
            except HoldAlreadyResolved:
                if landed := self._held_as(moved):
                    moved.shard = landed.shard
                    return moved  # our answer was lost and botocore's retry met the moved hold
                raise
            except ConcurrentUpdate as exc:
                codes = cancellation_codes(exc.__cause__)
            if "ConditionalCheckFailed" not in codes:
                continue  # a transaction conflict: try again
            if (
                not gathered  # once: its condition also tests `held`, which no refill mends
                and codes[len(buckets) : len(buckets) + 1] == ["ConditionalCheckFailed"]
                and self._gather(moved.account_id, moved.bucket, moved.shard, moved.amount)
            ):
                gathered = True
                continue  # the moved-to shard ran short, and money moved to it from the others
            short = [
                (envelope, delta)
                for i, (envelope, delta) in enumerate(zip(checked, deltas, strict=True))
                if codes[first_checked + i : first_checked + i + 1] == ["ConditionalCheckFailed"]
            ]
            if not lent and short:  # once, as for the bucket
                (envelope, delta), lent = short[0], True
                if self._lend(envelope, moved.shard, delta, self._shards_of(moved)):
                    continue  # the envelope's item on the moved-to shard has room now
            raise self._refused(
                moved, codes, checked, first_checked, "the fallback route's worst case"
            )
        raise BudgetStoreUnavailable("Could not move the hold; try again")

    def rooms(
        self, account_id: str, bucket: Bucket, envelopes: Sequence[EnvelopeRef]
    ) -> dict[str, tuple[int, int]]:
        """(limit, what is left) of the bucket and of each envelope, in one BatchGetItem; used
        to size a hold after a refusal. Advisory only: the reservation's conditions guard."""
        wallet_key = schema.wallet_key(account_id, bucket)
        keys = [wallet_key, *(schema.envelope_key(e) for e in envelopes)]
        with store_errors():
            read = batch_get(self._db, self._budget, [to_item(k) for k in keys])
            items = {(v["pk"], v["sk"]): v for v in map(from_item, read)}
        wallet = items.get((wallet_key["pk"], wallet_key["sk"]), {})
        split = self._shard_counts.get((account_id, bucket), 1) > 1
        if split:  # the bucket is its shards' sum, and an envelope its item's and its shares'
            wallet = self.get_wallet(account_id, bucket).model_dump()
        rooms = {
            f"bucket:{bucket.value}": (
                int(wallet.get("balance", 0)),
                int(wallet.get("available", 0)),
            )
        }
        for envelope in envelopes:
            consumed = int(items.get((envelope.pk, envelope.sk), {}).get("consumed", 0))
            left = self._envelope_left(envelope) if split else envelope.limit - consumed
            rooms[envelope.name] = (envelope.limit, max(left, 0))
        return rooms

    # Refusals ----------------------------------------------------------------------------
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
                return self._refusal(hold, envelope, self._envelope_left(envelope))
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
    def _refusal(hold: Hold, envelope: EnvelopeRef, left: int) -> BudgetExceeded:
        remaining = max(left, 0)
        return BudgetExceeded(
            f"The {envelope.name} budget ({format_micros(envelope.limit)}"
            f" {hold.bucket.currency}) cannot cover this request's worst case"
            f" ({format_micros(hold.amount)}); {format_micros(remaining)} is left",
            envelope=envelope.name,
            limit=format_micros(envelope.limit),
            remaining=format_micros(remaining),
            requested=format_micros(hold.amount),
        )
