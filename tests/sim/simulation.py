"""The simulation: one seed chooses every step, and the money rules are checked after each.

A step is one of: advance an in-flight request to its next checkpoint (a store call, an
upstream call, a stream chunk, a retry wait), start a request on some container, deliver or
redeliver a payment webhook, top up, adjust, claim a redeem code, refund a charge, sweep,
reconcile, let time pass (or jump past every hold's expiry), or crash a container. The twin's
fault schedule meanwhile cancels transactions with TransactionConflict, fails calls before
they apply, and loses the answers of calls that did apply.

After STEPS steps, the final phase lets the requests in flight finish, heals the store, jumps
past every expiry and sweeps: then no hold may be pending, the books must balance and
reconcile() must find nothing. The run of a shorter STEPS is exactly a prefix of a longer one
(nothing drawn depends on STEPS), which is what makes shrinking to the shortest failing prefix
work.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from forge.domain.errors import BudgetStoreUnavailable
from forge.domain.money import Bucket
from forge.ledger.reconcile import reconcile
from forge.ledger.sweeper import SweepIncomplete, sweep
from forge.store.memory import Faults
from tests.sim.checks import Violation
from tests.sim.link import Livelock
from tests.sim.money_in import Books
from tests.sim.requests import SimRequest, new_request, run_request
from tests.sim.world import (
    ACCOUNTS,
    HOLD_TTL_SECONDS,
    OPENING,
    REQUEST_TIMEOUT_SECONDS,
    World,
    storm,
)

MAX_IN_FLIGHT = 8
MAX_SPLIT = 4  # shards per bucket the operator goes up to
CONTAINERS = 3
BOOKS_EVERY = 250  # steps between checks of the books (they read every request)
WEIGHTS = {
    "advance": 50.0,
    "request": 16.0,
    "payment": 1.5,
    "topup": 0.7,
    "adjust": 1.0,
    "split": 0.2,  # an operator splits a wallet into one more shard (see world.SPLIT)
    "redeem": 1.5,
    "refund": 1.0,
    "sweep": 3.0,
    "reconcile": 0.3,
    "tick": 6.0,
    "jump": 0.15,
    "crash": 0.6,
    "weather": 0.4,  # a storm begins (while one lasts: STORM_ENDS)
}
STORM_ENDS = 3.0  # the weight of a storm's end: storms last ~25 steps
_ANSWERED = ("completed", "stream end", "stream error", "disconnected", "crashed")


@dataclass
class Failure:
    seed: int
    step: int  # the step after which a rule broke (STEPS itself: in the final phase)
    message: str
    in_final_phase: bool = False


@dataclass
class Result:
    seed: int
    steps: int
    trace: list[str]
    digest: str
    failure: Failure | None
    final_at: int = 0  # where the final phase begins in the trace
    stats: Counter[str] = field(default_factory=Counter)
    late_requests: bool = False


class Simulation:
    def __init__(self, seed: int, *, late_requests: bool = False) -> None:
        self.seed = seed
        self.late_requests = late_requests
        self.world = World(seed)
        self.rng = self.world.rng
        self.books = Books()
        for a in range(ACCOUNTS):
            for bucket, amount in OPENING.items():
                self.books.opening(f"acct{a}", bucket, amount, f"opening {a} {bucket}")
        self.requests: dict[str, SimRequest] = {}
        self.in_flight: dict[str, SimRequest] = {}
        self.deferred: list[SimRequest] = []
        self.events: list[str] = []
        self.trace: list[str] = []
        self.stats: Counter[str] = Counter()
        self._serial = 0
        self.doing = ""
        for _ in range(CONTAINERS):
            self.world.start_container()

    def _next(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}{self._serial}"

    # Running ------------------------------------------------------------------------------
    async def run(self, steps: int) -> Result:
        failure = None
        step = 0
        final_at = 0
        logging.disable(logging.CRITICAL)  # the gateway logs every contained failure
        try:
            for step in range(1, steps + 1):
                action = self.rng.choices(*zip(*self._options(), strict=True))[0]
                self.stats[action] += 1
                self.doing = f"{step} {action}"  # names the step if it fails midway
                self.trace.append(f"{step} {await getattr(self, '_' + action)()}")
                self._after_step()
                if step % BOOKS_EVERY == 0:
                    self._check_books()
            final_at = len(self.trace)
            await self._finish()
        except (Violation, Livelock, Exception) as exc:
            # Anything else escaping a step is a failure too, reported and shrunk like one
            # (left to propagate, the parked requests would hang the loop's shutdown).
            if not self.trace or not self.trace[-1].startswith(f"{step} "):
                self.trace.append(f"{self.doing}: broke a rule")
            message = str(exc) if isinstance(exc, Violation | Livelock) else repr(exc)
            failure = Failure(self.seed, step, message, in_final_phase=final_at > 0)
            await self._abandon()
        finally:
            logging.disable(logging.NOTSET)
        self._count_what_happened()
        digest = self._digest()
        return Result(
            self.seed, steps, self.trace, digest, failure, final_at, self.stats, self.late_requests
        )

    def _options(self) -> list[tuple[str, float]]:
        options = dict(WEIGHTS)
        if not self.in_flight:
            del options["advance"]
        if len(self.in_flight) >= MAX_IN_FLIGHT:
            del options["request"]
        if self.world.faults.rates is not self.world.calm:
            options["weather"] = STORM_ENDS
        return list(options.items())

    def _after_step(self) -> None:
        self.world.observer.refresh()
        for rid in sorted(self.in_flight):
            call = self.in_flight[rid]
            if call.actor.task is not None and call.actor.task.done():
                del self.in_flight[rid]
                if (container := self.world.containers.get(call.actor.container or 0)) is not None:
                    container.in_flight.discard(rid)
                self._check_finished(call)

    # Requests -----------------------------------------------------------------------------
    async def _request(self) -> str:
        container = self.world.containers[self.rng.choice(sorted(self.world.containers))]
        account = f"acct{self.rng.randrange(ACCOUNTS)}"
        key = self.rng.choice(self.world.keys[account])
        call = new_request(self._next("r"), key, self.rng, container.number)
        call.started = self.world.clock.seconds
        self.requests[call.rid] = call
        self.in_flight[call.rid] = call
        container.in_flight.add(call.rid)
        main = partial(run_request, call, container.gateway, self.rng)
        await self.world.scheduler.advance(call.actor, main)
        model, stream = call.request.model, "stream" if call.request.stream else "call"
        return f"request {call.rid} {key.key.key_id} {model} {stream} on c{container.number}"

    async def _advance(self) -> str:
        call = self.in_flight[self.rng.choice(sorted(self.in_flight))]
        await self.world.scheduler.advance(call.actor)
        where = call.outcome if call.actor.task and call.actor.task.done() else call.actor.where
        return f"advance {call.rid} -> {where}"

    async def _crash(self) -> str:
        return await self._kill(self.rng.choice(sorted(self.world.containers)), "crash")

    async def _kill(self, number: int, why: str) -> str:
        container = self.world.containers.pop(number)
        container.link.alive = False  # nothing it does reaches the store any more
        lost = sorted(container.in_flight)
        for rid in lost:
            await self.world.scheduler.crash(self.requests[rid].actor)
        replacement = self.world.start_container()
        return f"{why} c{number} losing {lost}; c{replacement.number} starts"

    async def _time_out(self) -> str:
        """Lambda ends an invocation at its timeout and recycles the container: a request
        never outlives its hold (the hold's lifetime exceeds the timeout). With
        `late_requests`, requests run on past their holds, racing the sweeper."""
        if self.late_requests:
            return ""
        deadline = self.world.clock.seconds - REQUEST_TIMEOUT_SECONDS
        late = sorted(
            {
                call.actor.container or 0
                for call in self.in_flight.values()
                if call.started <= deadline
            }
        )
        return "".join([f"; {await self._kill(number, 'timeout')}" for number in late])

    def _check_finished(self, call: SimRequest) -> None:
        """What a finished request must leave behind (rules 4, 5 and 7)."""
        self.stats[f"outcome {call.outcome}"] += 1
        self.trace.append(f"  {call.rid} {call.summary()}")
        if call.defect is not None:
            if isinstance(call.defect, Livelock):
                raise call.defect
            raise Violation("3", f"{call.rid}: a defect crossed the boundary: {call.defect!r}")
        if call.crashed:
            return
        observer = self.world.observer
        hold = observer.holds.get(call.rid)
        if hold is not None and hold["status"] == "pending" and call.actor.store_faults == 0:
            raise Violation("5", f"{call.rid} ({call.outcome}) left its hold pending")
        truth = self.charged(call.rid)
        told = call.receipt
        if told is not None:
            if told.charge > told.hold:
                raise Violation("2", f"{call.rid} charged {told.charge} over its hold {told.hold}")
            if told.settlement == "deferred":
                self.deferred.append(call)
            elif told.charge != truth:
                raise Violation("6", f"{call.rid} was told {told.charge}; the ledger says {truth}")
        elif call.outcome not in _ANSWERED and truth != 0:
            raise Violation("7", f"{call.rid} failed ({call.outcome}) yet was charged {truth}")

    def charged(self, rid: str) -> int:
        entry = self.world.observer.charges.get(rid)
        return -int(entry["amount"]) if entry else 0

    # Money in and operator jobs -------------------------------------------------------------
    def _wallet(self) -> tuple[str, Bucket]:
        return f"acct{self.rng.randrange(ACCOUNTS)}", self.rng.choice(list(Bucket))

    async def _payment(self) -> str:
        unknown = [e for e in self.events if self.books.actions[("payment", e)].state != "applied"]
        if self.events and self.rng.random() < 0.3:
            event = self.rng.choice(unknown or self.events)  # the provider redelivers
            action = self.books.actions[("payment", event)]
            account, bucket, amount = action.account, action.bucket, action.amount
        else:
            event = self._next("evt")
            self.events.append(event)
            (account, bucket), amount = self._wallet(), self.rng.randint(1_000, 8_000)
        status = self.books.pay(self.world.operator, event, account, bucket, amount)
        return f"payment {event} {account}/{bucket} {amount}: {status}"

    async def _topup(self) -> str:
        (account, bucket), amount = self._wallet(), self.rng.randint(1_000, 10_000)
        memo = self._next("topup")
        status = self.books.top_up(self.world.operator, memo, account, bucket, amount)
        return f"{memo} {account}/{bucket} {amount}: {status}"

    async def _adjust(self) -> str:
        (account, bucket), amount = self._wallet(), self.rng.randint(-20_000, 5_000) or 1
        memo = self._next("adjust")
        status = self.books.adjust(self.world.operator, memo, account, bucket, amount)
        return f"{memo} {account}/{bucket} {amount}: {status}"

    async def _split(self) -> str:
        account, bucket = self._wallet()
        shards = len(
            [
                w
                for w in self.world.observer.wallets
                if w[0] == account and w[1].split(".")[0] == bucket.value
            ]
        )
        if shards >= MAX_SPLIT:
            return f"split {account}/{bucket}: already {shards} shards"
        try:
            self.world.operator.shard_wallet(account, bucket, shards + 1)
        except BudgetStoreUnavailable:
            return f"split {account}/{bucket} into {shards + 1}: store unavailable"
        return f"split {account}/{bucket} into {shards + 1}"

    async def _redeem(self) -> str:
        account, code = f"acct{self.rng.randrange(ACCOUNTS)}", self.rng.randrange(3)
        now = self.world.clock.now()
        status = self.books.redeem(self.world.operator, account, self.world.codes[code], now)
        return f"redeem code{code} by {account}: {status}"

    async def _refund(self) -> str:
        charges = self.world.observer.charges
        actions = self.books.actions
        # Charged and never refunded, or a refund whose answer was lost (tried again).
        candidates = [
            rid
            for rid in sorted(charges)
            if int(charges[rid]["amount"]) < 0
            and (("refund", rid) not in actions or actions[("refund", rid)].state == "unknown")
        ]
        if not candidates:
            return "refund: nothing to refund"
        rid = self.rng.choice(candidates)
        entry = charges[rid]
        amount = -int(entry["amount"])
        if self.rng.random() < 0.5:
            amount = self.rng.randint(1, amount)
        account, bucket = str(entry["account_id"]), Bucket(entry["bucket"])
        status = self.books.refund(self.world.operator, account, bucket, rid, amount)
        return f"refund {rid} {amount}: {status}"

    async def _sweep(self) -> str:
        now = self.world.clock.now()
        try:
            report = sweep(self.world.operator, now)
        except BudgetStoreUnavailable:
            return "sweep: store unavailable"
        except SweepIncomplete as exc:  # faults hit some holds; the next sweep retries them
            return f"sweep: {exc}"
        for rid in report.settled + report.voided:
            # The sweeper resolves only the holds of requests that are certainly dead.
            hold = self.world.observer.holds[rid]  # as it was before this step
            if datetime.fromisoformat(str(hold["expires_at"])) >= now:
                raise Violation(
                    "5", f"the sweeper resolved {rid}, which expires at {hold['expires_at']}"
                )
            if rid in self.in_flight and not self.late_requests:
                raise Violation("5", f"the sweeper resolved {rid} while its request was running")
        self.stats["swept settled"] += len(report.settled)
        self.stats["swept voided"] += len(report.voided)
        return f"sweep settled {report.settled} voided {report.voided}"

    async def _reconcile(self) -> str:
        try:
            report = reconcile(self.world.operator, self.world.clock.now())
        except BudgetStoreUnavailable:
            return "reconcile: store unavailable"
        # A pending hold past its expiry is the sweeper's to resolve: not a drift until then.
        drifts = [d for d in report.drifts if d.check != "expired_hold_pending"]
        if drifts:
            raise Violation("6", f"reconcile found drift: {drifts}")
        return f"reconcile ok ({report.pending_holds} pending)"

    async def _weather(self) -> str:
        faults = self.world.faults
        if faults.rates is self.world.calm:
            faults.rates = storm(self.world.calm)
            return "a storm begins: store calls fail in bursts"
        faults.rates = self.world.calm
        return "the storm ends"

    async def _tick(self) -> str:
        seconds = round(self.rng.uniform(0.1, 10.0), 3)
        self.world.clock.advance(seconds)
        return f"tick +{seconds}s{await self._time_out()}"

    async def _jump(self) -> str:
        seconds = HOLD_TTL_SECONDS + self.rng.randint(1, 600)
        self.world.clock.advance(seconds)
        return f"jump +{seconds}s past every hold's expiry{await self._time_out()}"

    # The end --------------------------------------------------------------------------------
    async def _finish(self) -> None:
        """Let every request in flight finish, heal the store, sweep past every expiry: then
        nothing may be pending, and the books and reconcile() must agree with the ledger."""
        while self.in_flight:
            for rid in sorted(self.in_flight):
                await self.world.scheduler.advance(self.in_flight[rid].actor)
                self.trace.append(f"final advance {rid}")
                self._after_step()
        self.world.twin.faults = Faults()
        self.world.clock.advance(HOLD_TTL_SECONDS + 1)
        self.trace.append(f"final {await self._sweep()}")
        self.world.observer.refresh()
        stranded = sorted(h["request_id"] for h in self.world.observer.pending_holds())
        if stranded:
            raise Violation("5", f"holds still pending after the final sweep: {stranded}")
        for call in self.deferred:
            truth = self.charged(call.rid)
            assert call.receipt is not None
            if truth not in (0, call.receipt.charge):
                raise Violation(
                    "6", f"{call.rid} deferred at {call.receipt.charge}, settled at {truth}"
                )
        self._check_books()
        self.trace.append(f"final {await self._reconcile()}")
        unnoticed = self.world.observer.matches_twin()
        if unnoticed:
            raise Violation("sim", f"the shadow missed writes to {unnoticed[:5]}")

    async def _abandon(self) -> None:
        """After a failure: every container dies, so no request is left parked on the loop."""
        for container in self.world.containers.values():
            container.link.alive = False
        for rid in sorted(self.in_flight):
            await self.world.scheduler.crash(self.in_flight[rid].actor)

    def _check_books(self) -> None:
        """Each wallet's balance is what the simulation's own actions add up to: money in as
        the books hold it, less what each client was told it paid (or, where it was told
        nothing final, what the ledger charged): rule 6, from the outside."""
        spent: Counter[tuple[str, str]] = Counter()
        for rid, entry in self.world.observer.charges.items():
            call = self.requests.get(rid)
            if call is None:
                raise Violation("4", f"charge {entry['entry_id']} for a request never made")
            told = call.receipt
            final = told is not None and told.settlement == "settled"
            charge = told.charge if final and told is not None else -int(entry["amount"])
            spent[(call.account, str(entry["bucket"]))] += charge
        self.books.check(self.world.observer, spent)

    def _count_what_happened(self) -> None:
        """What the run exercised: the injected faults, fallbacks, deferred settles."""
        for injected in self.world.faults.log:
            self.stats[f"fault {injected.kind.value}"] += 1
        self.stats["deferred settles"] = len(self.deferred)
        # Answers the store's retries turned into lies, money right: see MoneyIn.refused.
        self.stats["money in refused yet credited"] = sum(
            1
            for tag, action in self.books.actions.items()
            if action.refused_after_fault and tag in self.world.observer.credits
        )
        for receipt in self.world.observer.receipts.values():
            actions = {a.get("action") for a in receipt.get("attempts") or []}
            for action in ("retry", "fallback"):
                self.stats[f"receipts with a {action}"] += action in actions

    def _digest(self) -> str:
        """The trace and the money state: equal for two runs of one seed."""
        observer = self.world.observer
        state = [
            *(
                f"{w} {observer.wallets[w]['balance']} {observer.wallets[w]['held']}"
                f" {observer.wallets[w]['seq']}"
                for w in observer.wallet_keys()
            ),
            *(f"{rid} {h['status']} {h['amount']}" for rid, h in sorted(observer.holds.items())),
            *(f"{rid} {self.charged(rid)}" for rid in sorted(observer.charges)),
        ]
        text = "\n".join([*self.trace, *state])
        return hashlib.sha256(text.encode()).hexdigest()
