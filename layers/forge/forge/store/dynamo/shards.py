"""Wallet shards: a busy account's bucket split into sub-wallets, so its writes spread over
several items instead of queueing on one (docs/shards.md).

Each shard is a wallet item of its own (`balance`, `available`, `held`, `seq`) with its own
ledger series, so a settle's compare-and-set and its ledger entry stay per shard, and every
money rule holds per shard, hence for their sum. Shard 0 is the bucket's original item: money
comes in there, and an account that is not split never reads or writes anything else.

A reservation goes to one shard, chosen from its request id. When that shard cannot cover it
but the bucket can, money moves to it from the others (`_gather`: one transaction of transfer
entries, which sum to zero), so no shard refuses a call the whole balance could pay.

Containers learn a bucket's shard count from any wallet item they read (every shard carries
`shards`); until then they reserve on shard 0, which is always right, only busier.

A split bucket's envelopes (key, project, run caps) split with it: a hold on shard k takes the
envelope from its share there, which the envelope's own item lends room to (`_lend`).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from forge.domain.errors import BudgetStoreUnavailable, ConcurrentUpdate
from forge.domain.money import Bucket
from forge.domain.records import MAX_SHARDS, EnvelopeRef, LedgerEntry, LedgerKind, Wallet
from forge.store.dynamo import schema
from forge.store.dynamo.base import DynamoTables, contended_attempts, store_errors
from forge.store.dynamo.items import dump, to_item
from forge.store.dynamo.ledger import put_entry


def move_wallet(table: str, wallet: Wallet, entry: LedgerEntry) -> dict[str, Any]:
    """The transaction item moving `wallet` (a bucket or one shard, as read) by `entry`, the
    next entry of its series: only if no other entry was written since it was read (`seq`),
    and never below zero available (a debit, or money leaving a shard)."""
    return {
        "Update": {
            "TableName": table,
            "Key": to_item(schema.wallet_key(wallet.account_id, wallet.bucket, wallet.shard)),
            "UpdateExpression": "SET balance = :balance, seq = :next,"
            " available = available + :amount",
            "ConditionExpression": "seq = :seq AND available >= :neg_amount",
            "ExpressionAttributeValues": to_item(
                {
                    ":balance": entry.balance_after,
                    ":next": entry.seq,
                    ":seq": wallet.seq,
                    ":amount": entry.amount,
                    ":neg_amount": -entry.amount,
                }
            ),
        }
    }


class DynamoShards(DynamoTables):
    # Splitting and rebalancing -------------------------------------------------------------
    def shard_wallet(self, account_id: str, bucket: Bucket, shards: int) -> list[Wallet]:
        """Split a bucket into `shards` sub-wallets (or more of them; never fewer), and spread
        what is available evenly over them. Operators run it for accounts whose traffic one
        item cannot carry; the shards' ledger series start empty."""
        if not 1 <= shards <= MAX_SHARDS:
            raise ValueError(f"a bucket has between 1 and {MAX_SHARDS} shards")
        current = self.wallet_shards(account_id, bucket)
        if shards < len(current):
            raise ValueError(f"the bucket already has {len(current)} shards; they are not merged")
        for shard in range(len(current), shards):
            new = Wallet(account_id=account_id, bucket=bucket, shard=shard, shards=shards)
            self._put(schema.wallet_key(account_id, bucket, shard), dump(new))
        for shard in range(shards):  # every shard tells the containers that read it
            self._update_shard_count(account_id, bucket, shard, shards)
        self._spread(account_id, bucket)
        return self.wallet_shards(account_id, bucket)

    def _update_shard_count(self, account_id: str, bucket: Bucket, shard: int, n: int) -> None:
        with store_errors():
            self._db.update_item(
                TableName=self._budget,
                Key=to_item(schema.wallet_key(account_id, bucket, shard)),
                UpdateExpression="SET shards = :n",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=to_item({":n": n}),
            )

    def _spread(self, account_id: str, bucket: Bucket) -> None:
        """Even out what the shards have available, in one transaction."""
        for _ in contended_attempts():
            shards = self.wallet_shards(account_id, bucket)
            share, extra = divmod(sum(w.available for w in shards), len(shards))
            moves = {w.shard: share + (w.shard < extra) - w.available for w in shards}
            try:
                self._transfer(shards, {s: m for s, m in moves.items() if m})
                return
            except ConcurrentUpdate:
                continue
        raise BudgetStoreUnavailable("The wallet is too busy to rebalance; try again")

    def _gather(self, account_id: str, bucket: Bucket, into: int, need: int) -> bool:
        """Make shard `into` able to cover `need`, moving money to it from the other shards
        (the richest first), with a fair share of what is left on top so it does not run dry
        again at once. True when the shard covers `need` now (money moved, or another request
        refilled it meanwhile); False when the whole bucket cannot cover `need`, or it is not
        split."""
        for _ in contended_attempts():
            shards = self.wallet_shards(account_id, bucket)
            target = next((w for w in shards if w.shard == into), None)
            if target is None or len(shards) == 1:
                return False
            if target.available >= need:
                return True
            total = sum(w.available for w in shards)
            if total < need:
                return False
            wanted = need - target.available + (total - need) // len(shards)
            moves: dict[int, int] = {}
            donors = sorted((w for w in shards if w.shard != into), key=lambda w: -w.available)
            for donor in donors:
                take = min(donor.available, wanted - sum(moves.values()))
                if take > 0:
                    moves[donor.shard] = -take
            moves[into] = -sum(moves.values())
            try:
                self._transfer(shards, moves)
                return True
            except ConcurrentUpdate:
                continue  # a shard moved meanwhile: read them again
        raise BudgetStoreUnavailable("The wallet is too busy; nothing was charged")

    def _transfer(self, shards: list[Wallet], moves: dict[int, int]) -> None:
        """Move money between shards (`moves`: shard -> signed amount, summing to zero), each
        with its transfer entry, conditioned on every named shard's `seq` as read."""
        if sum(moves.values()) != 0:
            raise ValueError("a transfer between shards moves no money in or out")
        if not moves:
            return
        by_shard = {w.shard: w for w in shards}
        # Named by the shards' positions it starts from, which it moves on: unique, and the
        # same on every replay of the same state.
        where = [f"{s}:{by_shard[s].seq}" for s in sorted(moves)]
        first = shards[0]
        named = "|".join([first.account_id, first.bucket.value, *where])
        transfer_id = hashlib.sha256(named.encode()).hexdigest()[:20]
        items: list[dict[str, Any]] = []
        for shard, amount in sorted(moves.items()):
            wallet = by_shard[shard]
            entry = LedgerEntry(
                entry_id=f"le_tr_{transfer_id}_{shard:02d}",
                account_id=wallet.account_id,
                bucket=wallet.bucket,
                shard=shard,
                seq=wallet.seq + 1,
                kind=LedgerKind.TRANSFER,
                amount=amount,
                balance_after=wallet.balance + amount,
                created_at=self._clock(),
                source=f"transfer:{transfer_id}",
            )
            items += [move_wallet(self._budget, wallet, entry), put_entry(self._ledger, entry)]
        self._transact(items)

    # Envelopes of a split bucket ----------------------------------------------------------
    def _envelope_items(self, envelope: EnvelopeRef) -> dict[int, dict[str, Any]]:
        """The envelope's own item (0) and its shares on a split bucket's shards, by shard."""
        items: dict[int, dict[str, Any]] = {}
        for item in self._query(self._budget, envelope.pk, envelope.sk):
            sk = str(item["sk"])
            if sk == envelope.sk:
                items[0] = item
            elif _SHARE_SUFFIX.fullmatch(sk[len(envelope.sk) :]):
                items[int(sk[-2:])] = item
        return items

    def _envelope_left(self, envelope: EnvelopeRef) -> int:
        """What the envelope can still take: its limit not consumed (nor lent), and the room
        its shares have."""
        items = self._envelope_items(envelope)
        free = envelope.limit - int(items.get(0, {}).get("consumed", 0))
        return max(free, 0) + sum(int(item.get("room", 0)) for k, item in items.items() if k)

    def _lend(self, envelope: EnvelopeRef, shard: int, need: int, shards: int) -> bool:
        """Give the envelope's item on `shard` (a share, or for shard 0 its own item) room for
        `need` under this request's limit, in one transaction. Room comes from the limit the
        own item has not consumed or lent, and from the shares' idle room, which goes back
        through the own item, so the limit is checked again: a share's room counts only under
        the limit it was lent under, and a lowered cap applies at once. A share gets a fair
        share of what is left on top. True when it covers `need` now; False when the
        envelope as a whole cannot."""
        for _ in contended_attempts():
            items = self._envelope_items(envelope)
            free = envelope.limit - int(items.get(0, {}).get("consumed", 0))
            rooms = {k: int(item.get("room", 0)) for k, item in items.items() if k}
            usable = (
                rooms.get(shard, 0) if items.get(shard, {}).get("limit") == envelope.limit else 0
            )
            if (free if shard == 0 else usable) >= need:
                return True
            total = free + sum(rooms.values())  # all of it, were every share's room back
            if total < need:
                return False
            lend = need + (total - need) // max(shards, 1) - usable if shard else 0
            back = {shard: rooms[shard]} if shard and not usable and rooms.get(shard) else {}
            missing = (lend if shard else need) - free - sum(back.values())
            for donor, room in sorted(rooms.items(), key=lambda d: -d[1]):
                if missing > 0 and donor != shard and room > 0:
                    back[donor] = min(room, missing)
                    missing -= back[donor]
            try:
                self._transact(_lending(self._budget, envelope, shard, lend, back))
                return True
            except ConcurrentUpdate:
                continue  # an item moved meanwhile: read them again
        raise BudgetStoreUnavailable("The budget is too busy; nothing was charged")


_SHARE_SUFFIX = re.compile(r"#\d{2}")


def _lending(
    table: str, envelope: EnvelopeRef, shard: int, lend: int, back: dict[int, int]
) -> list[dict[str, Any]]:
    """One transaction: the shares in `back` give that room back to the envelope's own item,
    which lends `lend` to `shard`'s share (nothing for shard 0), its consumed (lent included)
    staying within the request's limit."""
    net = lend - sum(back.values())  # what the own item's consumed (and lent) move by
    own: dict[str, Any] = {
        "TableName": table,
        "Key": to_item(schema.envelope_key(envelope)),
        "UpdateExpression": "ADD #consumed :net, #lent :net",
        "ExpressionAttributeNames": {"#consumed": "consumed", "#lent": "lent"},
        "ExpressionAttributeValues": to_item({":net": net}),
    }
    if lend:  # room lent now is checked against this request's limit, which the item keeps
        own["UpdateExpression"] += " SET #limit = :limit"
        own["ExpressionAttributeNames"]["#limit"] = "limit"
        own["ConditionExpression"] = "attribute_not_exists(#consumed) OR #consumed <= :cap"
        own["ExpressionAttributeValues"].update(
            to_item({":limit": envelope.limit, ":cap": envelope.limit - net})
        )
    items = [{"Update": own}]
    for donor, room in back.items():
        if donor != shard:
            items.append(_share_room(table, envelope, donor, -room, given=room))
    if shard:
        items.append(
            _share_room(
                table,
                envelope,
                shard,
                lend - back.get(shard, 0),
                back.get(shard, 0),
                envelope.limit,
            )
        )
    return items


def _share_room(
    table: str,
    envelope: EnvelopeRef,
    shard: int,
    delta: int,
    given: int,
    limit: int | None = None,
) -> dict[str, Any]:
    """Move one share's room by `delta` (only if it still has the `given` it gives back),
    and `received` with it, so a share's received == room + consumed; a share lent room
    takes the limit it was lent under."""
    names = {"#room": "room", "#received": "received", "#shard": "shard"}
    values: dict[str, Any] = {":delta": delta, ":shard": shard}
    expression = "ADD #room :delta, #received :delta SET #shard = :shard"
    if limit is not None:
        expression += ", #limit = :limit"
        names["#limit"] = "limit"
        values[":limit"] = limit
    update: dict[str, Any] = {
        "TableName": table,
        "Key": to_item(schema.envelope_key(envelope, shard)),
        "UpdateExpression": expression,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": to_item(values),
    }
    if given:
        update["ConditionExpression"] = "#room >= :given"
        update["ExpressionAttributeValues"].update(to_item({":given": given}))
    return {"Update": update}
