"""The money rules, checked on the twin's own data after every step, incrementally.

A full reconcile reads every table: too slow for every step of a long run. The observer keeps
a shadow of the money items (wallets, envelopes, holds, ledger entries, receipts) and, after
each step, re-reads only the items some write named (Link notes them), with faults switched
off, then checks what those items touch:

- rule 2: no wallet counter below zero; no envelope's consumed over its limit;
- rule 4: one charge entry per request id; a hold resolves once (its status and resolution
  never change again); a settled hold has its charge entry and a voided one none; one refund
  per request, never above the charge; one ledger entry per money-in action (by its tag);
  the ledger is append-only;
- rule 6: available + held == balance; held == the wallet's pending holds; balance == the sum
  of its ledger, whose chain (seq, balance_after) has no gap; an envelope's consumed ==
  settled + held, and held == its pending holds;
- rule 7: a charge only for a request some upstream served.

Rule 5 (no stranded hold) needs to know who crashed: the simulation checks it per request.
`reconcile()` itself runs periodically and at the end, as a second opinion.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from forge.domain.money import Bucket
from forge.domain.records import series_label
from forge.store.dynamo.items import TypeDeserializer
from forge.store.memory import Faults, MemoryDynamoDB
from tests.sim.link import ItemKey, Touched

_deserializer = TypeDeserializer()
Wallet = tuple[str, str]  # account id, ledger series: the bucket, or `{bucket}.{shard:02d}`


def series_of(item: Mapping[str, Any]) -> Wallet:
    """The wallet (a bucket, or one shard of a split bucket) a wallet, hold or entry names."""
    return str(item["account_id"]), series_label(Bucket(item["bucket"]), int(item.get("shard", 0)))


class Violation(Exception):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"rule {rule}: {message}")
        self.rule = rule


def plain(item: Mapping[str, Any]) -> dict[str, Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, Decimal):
            return int(value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    return {k: convert(_deserializer.deserialize(v)) for k, v in item.items()}


@contextmanager
def no_faults(twin: MemoryDynamoDB) -> Any:
    """Inspect the twin without drawing from (or being hit by) its fault schedule."""
    schedule, twin.faults = twin.faults, Faults()
    try:
        yield
    finally:
        twin.faults = schedule


def credit_tag(entry: Mapping[str, Any]) -> tuple[str, ...]:
    """Which simulated action a money-in ledger entry answers (see Simulation's money-in)."""
    kind = entry["kind"]
    if kind == "refund":
        return ("refund", str(entry["request_id"]))
    if kind == "grant":
        return ("code", str(entry["account_id"]), str(entry["source"]))
    if kind == "topup" and str(entry.get("source", "")).startswith("payment:"):
        return ("payment", str(entry["entry_id"]).removeprefix("le_pay_"))
    return (kind, str(entry.get("memo")))


class Observer:
    """A shadow of the twin's money items and the rules over them (see the module docstring)."""

    def __init__(self, twin: MemoryDynamoDB, budget: str, ledger: str, touched: Touched) -> None:
        self._twin = twin
        self._budget = budget
        self._ledger = ledger
        self._touched = touched
        self.items: dict[ItemKey, dict[str, Any]] = {}
        self.holds: dict[str, dict[str, Any]] = {}  # by request id
        self.wallets: dict[Wallet, dict[str, Any]] = {}
        self.envelopes: dict[tuple[str, str], dict[str, Any]] = {}
        self.held_by_wallet: Counter[Wallet] = Counter()
        self.held_by_envelope: Counter[tuple[str, str]] = Counter()
        self.entries: dict[Wallet, dict[int, dict[str, Any]]] = {}
        self.ledger_sum: Counter[Wallet] = Counter()
        self.charges: dict[str, dict[str, Any]] = {}  # charge entries by request id
        self.refunds: dict[str, dict[str, Any]] = {}
        self.credits: dict[tuple[str, ...], dict[str, Any]] = {}
        self.receipts: dict[str, dict[str, Any]] = {}
        self.served: set[str] = set()  # shared with the upstreams (rule 7)
        self.transfers: Counter[str] = Counter()  # what each transfer moved, over its legs
        # What the items re-read since the last check touch: what to check next.
        self._wallets_seen: set[Wallet] = set()
        self._envelopes_seen: set[tuple[str, str]] = set()
        self._holds_seen: set[str] = set()
        self._unchained: set[tuple[Wallet, int]] = set()  # new entries, chain not checked yet
        self._transfers_seen: set[str] = set()

    # Reading ----------------------------------------------------------------------------
    def load_all(self) -> None:
        """Take in every item (after set-up), and check them all."""
        self._touched.take()
        for table in (self._budget, self._ledger):
            for raw in self._twin.table_items(table):
                item = plain(raw)
                self._apply((table, str(item["pk"]), str(item["sk"])), item)
        self._wallets_seen, self._envelopes_seen, self._holds_seen = set(), set(), set()
        self.check_all()

    def matches_twin(self) -> list[str]:
        """Keys where the shadow and the twin differ: none, unless a write went unnoticed."""
        differences = []
        for table in (self._budget, self._ledger):
            actual = {}
            for raw in self._twin.table_items(table):
                item = plain(raw)
                actual[(table, str(item["pk"]), str(item["sk"]))] = item
            shadow = {k: v for k, v in self.items.items() if k[0] == table}
            for key in sorted(set(actual) | set(shadow)):
                if actual.get(key) != shadow.get(key):
                    differences.append("/".join(key))
        return differences

    def refresh(self) -> None:
        """Re-read what the last step's writes named, then check everything they touch."""
        keys = self._touched.take()
        if not keys:
            return
        with no_faults(self._twin):
            fresh = {
                key: self._twin.get_item(TableName=key[0], Key=dict(raw), ConsistentRead=True)
                for key, raw in keys.items()
            }
        for key, got in fresh.items():
            self._apply(key, plain(got["Item"]) if "Item" in got else None)
        self._check_touched()

    def _apply(self, key: ItemKey, item: dict[str, Any] | None) -> None:
        old = self.items.get(key)
        if item == old:
            return
        if item is None:
            del self.items[key]
        else:
            self.items[key] = item
        table, pk, sk = key
        if table == self._budget:
            if pk.startswith("HOLD#"):
                self._hold(pk.removeprefix("HOLD#"), old, item)
            elif pk.startswith("ACCT#") and sk.startswith("BUCKET#"):
                assert item is not None
                wallet = series_of(item)
                self.wallets[wallet] = item
                self._wallets_seen.add(wallet)
            elif pk.startswith("ENV#"):
                self.envelopes[(pk, sk)] = item or {}
                self._envelopes_seen.add((pk, sk))
        elif sk.startswith("ENTRY#"):
            self._entry(old, item)
        elif sk.startswith("RCPT#"):
            if old is not None:
                raise Violation("4", f"receipt {sk} was rewritten or deleted")
            assert item is not None
            self.receipts[str(item["request_id"])] = item

    def _hold(self, rid: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if new is None:
            raise Violation("4", f"hold {rid} was deleted")
        if "amount" not in new or "account_id" not in new:
            # An update that creates the item: a hold resolved that was never reserved.
            raise Violation("4", f"hold {rid} resolved without ever being reserved: {new}")
        if old is not None and old["status"] != "pending":
            raise Violation(
                "4",
                f"hold {rid} resolved twice: {old['status']} then {new['status']}"
                f" (resolved_at {old.get('resolved_at')} then {new.get('resolved_at')})",
            )
        for hold, sign in ((old, -1), (new, 1)):
            if hold is None or hold["status"] != "pending":
                continue
            wallet = series_of(hold)
            self.held_by_wallet[wallet] += sign * int(hold["amount"])
            self._wallets_seen.add(wallet)
            shard = int(hold.get("shard", 0))  # a split bucket's holds use their shard's share
            for envelope in hold.get("envelopes") or []:
                sk = f"{envelope['sk']}#{shard:02d}" if shard else str(envelope["sk"])
                where = (str(envelope["pk"]), sk)
                self.held_by_envelope[where] += sign * int(hold["amount"])
                self._envelopes_seen.add(where)
        self.holds[rid] = new
        self._holds_seen.add(rid)

    def _entry(self, old: dict[str, Any] | None, entry: dict[str, Any] | None) -> None:
        if old is not None or entry is None:
            raise Violation("6", f"ledger entry {old and old['entry_id']} changed: append-only")
        wallet = series_of(entry)
        self.entries.setdefault(wallet, {})[int(entry["seq"])] = entry
        self._unchained.add((wallet, int(entry["seq"])))
        self.ledger_sum[wallet] += int(entry["amount"])
        self._wallets_seen.add(wallet)
        if entry["kind"] == "charge":
            rid = str(entry["request_id"])
            if rid in self.charges:
                raise Violation("4", f"request {rid} charged twice")
            if int(entry["amount"]) < 0 and rid not in self.served:
                raise Violation("7", f"request {rid} charged but no upstream served it")
            self.charges[rid] = entry
            self._holds_seen.add(rid)
        elif entry["kind"] == "refund":
            rid = str(entry["request_id"])
            if rid in self.refunds:
                raise Violation("4", f"request {rid} refunded twice")
            charge = self.charges.get(rid)
            if charge is None or int(entry["amount"]) > -int(charge["amount"]):
                raise Violation("4", f"refund of {rid} exceeds its charge: {entry['amount']}")
            self.refunds[rid] = entry
        elif entry["kind"] == "transfer":  # between two shards of one bucket
            self.transfers[str(entry["source"])] += int(entry["amount"])
            self._transfers_seen.add(str(entry["source"]))
        else:
            tag = credit_tag(entry)
            if tag in self.credits:
                raise Violation("4", f"money-in {tag} credited twice")
            self.credits[tag] = entry

    # Checking ---------------------------------------------------------------------------
    def _check_touched(self) -> None:
        wallets, envelopes, holds = self._wallets_seen, self._envelopes_seen, self._holds_seen
        self._wallets_seen, self._envelopes_seen, self._holds_seen = set(), set(), set()
        for wallet in sorted(wallets):
            self.check_wallet(wallet)
        for envelope in sorted(envelopes):
            self.check_envelope(envelope)
        for rid in sorted(holds):
            self.check_hold(rid)
        transfers, self._transfers_seen = self._transfers_seen, set()
        for transfer in sorted(transfers):  # its legs commit together: all are seen at once
            if self.transfers[transfer] != 0:
                raise Violation("6", f"{transfer} moved {self.transfers[transfer]} in or out")

    def check_all(self) -> None:
        for wallet in sorted(self.wallets):
            self.check_wallet(wallet)
        for envelope in sorted(self.envelopes):
            self.check_envelope(envelope)
        for rid in sorted(self.holds):
            self.check_hold(rid)

    def check_wallet(self, wallet: Wallet) -> None:
        w = self.wallets[wallet]
        balance, available, held = int(w["balance"]), int(w["available"]), int(w["held"])
        name = "/".join(wallet)
        if min(balance, available, held) < 0:
            raise Violation("2", f"{name} below zero: {w}")
        if available + held != balance:
            raise Violation("6", f"{name}: available {available} + held {held} != {balance}")
        if held != self.held_by_wallet[wallet]:
            raise Violation(
                "6", f"{name}: held {held} != pending holds {self.held_by_wallet[wallet]}"
            )
        if balance != self.ledger_sum[wallet]:
            raise Violation("6", f"{name}: balance {balance} != ledger {self.ledger_sum[wallet]}")
        entries = self.entries.get(wallet, {})
        if int(w["seq"]) != len(entries) or (entries and len(entries) not in entries):
            raise Violation("6", f"{name}: seq {w['seq']} but {len(entries)} ledger entries")
        for seq in sorted(s for (where, s) in self._unchained if where == wallet):
            self._unchained.discard((wallet, seq))
            entry, before = entries[seq], entries.get(seq - 1)
            previous = int(before["balance_after"]) if before else 0
            if seq > 1 and before is None:
                raise Violation("6", f"{name}: the ledger has a gap before seq {seq}")
            if int(entry["balance_after"]) != previous + int(entry["amount"]):
                raise Violation("6", f"{name}: the chain breaks at seq {seq}: {entry}")

    def check_envelope(self, where: tuple[str, str]) -> None:
        envelope = self.envelopes[where]
        consumed = int(envelope.get("consumed", 0))
        held = int(envelope.get("held", 0))
        settled = int(envelope.get("settled", 0))
        lent = int(envelope.get("lent", 0))  # room lent to its shares (a split bucket's)
        name = "/".join(where)
        if consumed > int(envelope.get("limit", consumed)):
            raise Violation("2", f"envelope {name} over its limit: {envelope}")
        if consumed != settled + held + lent:
            raise Violation("6", f"envelope {name}: consumed {consumed} != settled + held + lent")
        if held != self.held_by_envelope[where] or held < 0:
            raise Violation(
                "6", f"envelope {name}: held {held} != pending {self.held_by_envelope[where]}"
            )
        own = where
        if "shard" in envelope:  # a share: it takes only the room it was lent
            room, received = int(envelope.get("room", 0)), int(envelope.get("received", 0))
            if room < 0 or received != room + consumed:
                raise Violation("2", f"envelope share {name}: room {room}, received {received}")
            own = (where[0], where[1][:-3])
            lent = int(self.envelopes.get(own, {}).get("lent", 0))
        shares = [
            e
            for (pk, sk), e in self.envelopes.items()
            if pk == own[0] and sk.startswith(f"{own[1]}#") and "shard" in e
        ]
        if lent != sum(int(e.get("received", 0)) for e in shares):
            raise Violation("6", f"envelope {'/'.join(own)}: lent {lent} != its shares' received")

    def check_hold(self, rid: str) -> None:
        hold = self.holds.get(rid)
        charge = self.charges.get(rid)
        if hold is None:
            raise Violation("4", f"request {rid} charged without a hold")
        if hold["status"] == "settled":
            if charge is None:
                raise Violation("4", f"hold {rid} settled without its charge entry")
            if -int(charge["amount"]) > int(hold["amount"]):
                raise Violation("2", f"request {rid} charged {charge['amount']} over its hold")
        if hold["status"] == "voided" and charge is not None:
            raise Violation("4", f"hold {rid} voided, yet charged {charge['amount']}")
        outcome = hold.get("outcome")
        # The upstream's result was known (the settle failed and recorded it): the sweeper
        # must charge it, not void it (rule 5: settle where the result is known).
        charged = None if charge is None else -int(charge["amount"])
        if outcome and hold["status"] != "pending" and charged != int(outcome["charge"]):
            raise Violation(
                "5",
                f"hold {rid} with a recorded outcome of {outcome['charge']} was"
                f" {hold['status']} at {charge and -int(charge['amount'])}",
            )
        if hold["status"] != "pending" and rid not in self.receipts:
            raise Violation("5", f"hold {rid} {hold['status']} without a receipt")

    def pending_holds(self) -> list[dict[str, Any]]:
        return [h for h in self.holds.values() if h["status"] == "pending"]

    def wallet_keys(self) -> Iterable[Wallet]:
        return sorted(self.wallets)

    def bucket_balances(self) -> Counter[tuple[str, str]]:
        """Each (account, bucket)'s balance: the sum of its shards'."""
        balances: Counter[tuple[str, str]] = Counter()
        for (account, _), wallet in self.wallets.items():
            balances[(account, str(wallet["bucket"]))] += int(wallet["balance"])
        return balances
