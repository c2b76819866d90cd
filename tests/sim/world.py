"""The simulated world: one twin with template.yaml's tables, accounts with keys and caps, a
catalog whose models fall back across routes and buckets, seeded upstreams, and containers.

Each container is what a Lambda container holds: its own DynamoStore over its own Link to
the shared twin, and its own Gateway (key cache, project-cap cache, route health). Time is the
simulation's: the gateway, its caches, its route health, hold expiries, envelope windows,
redeem-code expiry and the sweeper all read one SimClock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from forge.domain.catalog import Catalog
from forge.domain.ids import hash_api_key, new_api_key
from forge.domain.money import Bucket, RouteType
from forge.domain.records import ApiKey, KeyCaps, LedgerKind, ProjectCaps
from forge.domain.routing import RetryPolicy, RouteHealth
from forge.gateway import Gateway
from forge.money_in.codes import create_code
from forge.store.dynamo.store import DynamoStore
from forge.store.memory import FaultKind, Faults
from forge_tools.template import memory_stack
from tests.sim.checks import Observer
from tests.sim.link import Link, Touched
from tests.sim.scheduler import Scheduler, run_inline
from tests.sim.upstream import Served, SimProvider

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
# Two hours before a month ends: daily and monthly envelope windows roll over during a run.
EPOCH = datetime(2031, 1, 31, 22, 0, tzinfo=UTC)
HOLD_TTL_SECONDS = 300
REQUEST_TIMEOUT_SECONDS = 280  # the function's timeout: shorter than a hold lives (900 < 960)
ACCOUNTS = 3
OPENING = {Bucket.CREDIT: 30_000, Bucket.RMB: 20_000}  # micro-units per account
# Wallets split into shards from the start (more are split during a run): acct0 stays whole.
SPLIT = {("acct1", Bucket.CREDIT): 3, ("acct2", Bucket.RMB): 2}


class SimClock:
    """Seconds since EPOCH: the monotonic clock of every container and the wall clock."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return EPOCH + timedelta(seconds=self.seconds)

    def advance(self, seconds: float) -> None:
        self.seconds += seconds


def _route(provider: str, model: str, kind: RouteType, prices: tuple[str, str, str]) -> dict:
    return {
        "provider": provider,
        "upstream_model": model,
        "route_type": kind.value,
        "prices": dict(zip(("input", "cached_input", "output"), prices, strict=True)),
        "max_output_tokens": 2048,
        # Dear enough that a few worst-case holds fill a wallet: the bucket's own condition
        # (available >= hold) is what stops most calls, not only the envelopes.
        "multiplier": "3",
    }


OFFICIAL, ROUTED = RouteType.OFFICIAL, RouteType.ROUTED
CATALOG = Catalog.model_validate(
    {
        "models": [
            {  # official first, then a routed fallback (another bucket), then official again
                "id": "sim-gpt",
                "routes": [
                    _route("alpha", "gpt", OFFICIAL, ("3", "1", "15")),
                    _route("beta", "gpt-r", ROUTED, ("2", "0.5", "8")),
                    _route("gamma", "gpt-2", OFFICIAL, ("5", "2.5", "20")),
                ],
            },
            {
                "id": "sim-claude",
                "routes": [
                    _route("gamma", "claude", OFFICIAL, ("3", "0.3", "15")),
                    _route("alpha", "claude-b", OFFICIAL, ("3", "0.3", "15")),
                ],
            },
            {"id": "sim-cheap", "routes": [_route("beta", "cheap", ROUTED, ("1", "1", "4"))]},
            {
                "id": "sim-mixed",
                "routes": [
                    _route("beta", "mix", ROUTED, ("1", "0.5", "6")),
                    _route("alpha", "mix", OFFICIAL, ("2", "1", "10")),
                ],
            },
        ]
    }
)
MODELS = [m.id for m in CATALOG.models]
FAILURE_RATES = {"alpha": 0.35, "beta": 0.2, "gamma": 0.1}


@dataclass
class SimKey:
    plaintext: str
    key: ApiKey


@dataclass
class Container:
    number: int
    link: Link
    store: DynamoStore
    gateway: Gateway
    in_flight: set[str] = field(default_factory=set)  # request ids


def fault_rates(rng: random.Random) -> dict[FaultKind, float]:
    """Per store call, in calm weather; each seed draws its own."""
    scale = rng.choice([0.5, 1.0, 2.0])
    return {
        FaultKind.CONFLICT: 0.05 * scale,
        FaultKind.TIMEOUT: 0.02 * scale,
        FaultKind.LOST_RESPONSE: 0.02 * scale,
        FaultKind.INTERNAL_ERROR: 0.003 * scale,
        FaultKind.THROTTLED: 0.003 * scale,
    }


def storm(calm: dict[FaultKind, float]) -> dict[FaultKind, float]:
    """A bad minute: failures come in bursts, which is how they outlast botocore's three
    attempts and reach the gateway (independent faults at calm rates almost never do)."""
    return {kind: min(rate * 15, 0.45) for kind, rate in calm.items()}


class World:
    """Everything one simulation run owns (see the module docstring)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"sim-{seed}")
        self.clock = SimClock()
        self.scheduler = Scheduler()
        self.touched = Touched()
        stack = memory_stack(TEMPLATE)
        self.twin = stack.client
        self.budget_table, self.ledger_table = stack.budget_table, stack.ledger_table
        self.served = Served()
        self.providers = {
            name: SimProvider(name, rate, self.rng, self.scheduler, self.served)
            for name, rate in FAILURE_RATES.items()
        }
        self.operator = self._store(Link(self.twin, self.touched))  # sweeper, money in
        self.keys: dict[str, list[SimKey]] = {}
        self.codes: list[str] = []
        self._set_up()
        self.observer = Observer(self.twin, self.budget_table, self.ledger_table, self.touched)
        self.observer.served = self.served.requests
        self.observer.load_all()
        self.containers: dict[int, Container] = {}
        self._containers = 0
        # Faults start once the world exists: set-up is not what is under test.
        self.calm = fault_rates(self.rng)
        self.faults = Faults(seed=seed, rates=self.calm)
        self.twin.faults = self.faults

    def _store(self, link: Link) -> DynamoStore:
        return DynamoStore(link, self.budget_table, self.ledger_table, clock=self.clock.now)

    def _set_up(self) -> None:
        store = self.operator
        for a in range(ACCOUNTS):
            account = f"acct{a}"
            store.create_account(account, f"sim account {a}")
            for bucket, amount in OPENING.items():
                store.credit(
                    account,
                    bucket,
                    amount,
                    kind=LedgerKind.TOPUP,
                    entry_id=f"le_open_{a}_{bucket}",
                    memo=f"opening {a} {bucket}",
                )
            caps_by_key = [
                ({}, frozenset(RouteType), "default", None),
                (
                    {Bucket.CREDIT: KeyCaps(daily=30_000, max_request_charge=15_000)},
                    frozenset({OFFICIAL}),
                    "default",
                    2,
                ),
                (
                    {Bucket.RMB: KeyCaps(total=60_000, run_budget=8_000)},
                    frozenset({ROUTED}),
                    "batch",
                    None,
                ),
                (
                    {Bucket.CREDIT: KeyCaps(monthly=50_000), Bucket.RMB: KeyCaps(daily=20_000)},
                    frozenset(RouteType),
                    "batch",
                    None,
                ),
            ]
            self.keys[account] = []
            for k, (caps, route_types, project, attempts) in enumerate(caps_by_key):
                # deterministic, and of a real key's shape (others are refused unread)
                plaintext = f"sk-forge-sim-{a}-{k}".ljust(len(new_api_key()), "0")
                key = ApiKey(
                    key_id=f"key_{a}_{k}",
                    account_id=account,
                    project_id=project,
                    prefix=plaintext[:15],
                    route_types=route_types,
                    caps=caps,
                    max_upstream_attempts=attempts,
                    created_at=EPOCH,
                )
                store.put_api_key(hash_api_key(plaintext), key)
                self.keys[account].append(SimKey(plaintext, key))
            store.put_project_caps(
                account, "batch", {Bucket.CREDIT: ProjectCaps(daily=40_000, monthly=70_000)}
            )
        for (account, bucket), shards in SPLIT.items():
            store.shard_wallet(account, bucket, shards)
        now = self.clock.now()
        for bucket, amount, claims, expires in (
            (Bucket.CREDIT, "0.02", None, None),
            (Bucket.RMB, "0.015", 2, None),
            (Bucket.CREDIT, "0.01", None, now.date()),  # expires at the first midnight
        ):
            code = create_code(store, bucket, amount, max_claims=claims, expires=expires, now=now)
            self.codes.append(code.code)

    def start_container(self) -> Container:
        """A fresh container (cold caches, its own route health) on the shared twin."""
        self._containers += 1
        link = Link(self.twin, self.touched)
        store = self._store(link)
        gateway = Gateway(
            store,
            self.providers,
            CATALOG,
            hold_ttl_seconds=HOLD_TTL_SECONDS,
            clock=self.clock.monotonic,
            retry=RetryPolicy(),
            health=RouteHealth(clock=self.clock.monotonic),
            sleep=self._sleep,
            rand=self.rng.random,
            blocking=partial(run_inline, self.scheduler),
            now=self.clock.now,
        )
        container = Container(self._containers, link, store, gateway)
        self.containers[container.number] = container
        return container

    async def _sleep(self, seconds: float) -> None:
        """A retry's wait: other requests run meanwhile (the clock moves only by steps)."""
        await self.scheduler.checkpoint(f"sleep {seconds:.2f}")
