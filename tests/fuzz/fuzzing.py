"""What both fuzz suites share: the app in process over the emulated store, a funded caller,
a deterministic upstream, and the check that nothing refused was charged."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

import httpx

from forge.domain.money import Bucket
from forge.domain.records import KeyKind, LedgerKind, utcnow
from forge.ledger.reconcile import reconcile
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.store.dynamo.store import DynamoStore
from forge.wiring import get_store
from tests.fakes.mock_upstream import answer, gateway_app

PAID_PATHS = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/messages",
)


@dataclass
class FuzzTarget:
    store: DynamoStore
    account_id: str
    api_key: str
    app: object
    owner_key: str = ""  # a management key: what the management routes take
    served: int = 0  # paid calls answered 2xx
    statuses: dict[int, int] = field(default_factory=dict)

    def record(self, path: str, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if path in PAID_PATHS and 200 <= status < 300:
            self.served += 1

    def assert_nothing_refused_was_charged(self) -> None:
        """Every charge belongs to a served call; no hold is left; the books balance."""
        charges = [
            e
            for bucket in Bucket
            for e in self.store.list_entries(self.account_id, bucket)
            if e.kind is LedgerKind.CHARGE
        ]
        assert len(charges) <= self.served, (len(charges), self.served, self.statuses)
        for entry in charges:
            receipt = self.store.get_receipt(self.account_id, entry.request_id or "")
            assert receipt is not None and receipt.status in ("succeeded", "partial")
        assert self.store.expired_holds(utcnow() + timedelta(days=1)) == []
        report = reconcile(self.store, utcnow())
        assert report.ok, report


def fuzz_target() -> FuzzTarget:
    """A funded account and key, and the app wired to a deterministic upstream."""
    store = get_store()
    account_id = create_account(store, "fuzz")
    for bucket in Bucket:
        credit_wallet(store, account_id, bucket, "1000", source="test", memo="fuzz")
    plaintext, _ = issue_key(store, account_id)
    owner_key, _ = issue_key(store, account_id, kind=KeyKind.MANAGEMENT)
    app = gateway_app(store, httpx.MockTransport(answer))
    return FuzzTarget(store, account_id, plaintext, app, owner_key)


MANAGEMENT_PATHS = ("/v1/keys", "/v1/projects", "/v1/audit")


def key_for(target: FuzzTarget, path: str) -> str:
    """The key a path takes: management routes a management key, every other an inference key."""
    return target.owner_key if path.startswith(MANAGEMENT_PATHS) else target.api_key


def send(target: FuzzTarget, method: str, path: str, **kwargs: object) -> httpx.Response:
    """One request to the app in process (httpx's ASGI transport, as the integration tests)."""

    async def run() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=target.app),
            base_url="http://gw",
        ) as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(run())
