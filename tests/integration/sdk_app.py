"""The whole app under uvicorn on 127.0.0.1, its gateway calling the fake providers (real HTTP)
and the emulated store, for tests that drive it with the official `openai` SDK; and what
those tests check of the money after each call."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import openai

from forge.api import create_app
from forge.api.deps import get_gateway
from forge.domain.catalog import Catalog
from forge.domain.money import Bucket, Prices
from forge.domain.records import ApiKey, Receipt, utcnow
from forge.ledger.reconcile import reconcile
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.store.dynamo.store import DynamoStore
from tests.integration.providers_kit import Fakes, catalog_for_tests, gateway
from tests.serving import serving


@dataclass
class ServedApp:
    url: str
    store: DynamoStore
    fakes: Fakes
    key: ApiKey
    plaintext: str
    catalog: Catalog
    clients: list[openai.OpenAI] = field(default_factory=list)

    def sdk(self) -> openai.OpenAI:
        """The official client, without retries so every answer is the gateway's first."""
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.plaintext, max_retries=0)
        self.clients.append(client)
        return client

    def prices(self, model: str, route: int = 0) -> Prices:
        """The prices of a catalog model's route (its first unless said)."""
        return next(m for m in self.catalog.models if m.id == model).routes[route].effective_prices

    def balance(self, bucket: Bucket = Bucket.CREDIT) -> tuple[int, int]:
        wallet = self.store.get_wallet(self.key.account_id, bucket)
        return wallet.balance, wallet.held

    def receipt(self, request_id: str) -> Receipt:
        """The receipt as the client reads it: GET /v1/requests/{id}."""
        answer = httpx.get(
            f"{self.url}/v1/requests/{request_id}",
            headers={"Authorization": f"Bearer {self.plaintext}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return Receipt.model_validate(answer.json())

    def assert_money_whole(self) -> None:
        """No hold left anywhere, and the books balance."""
        assert self.balance()[1] == 0 and self.balance(Bucket.RMB)[1] == 0
        assert self.store.expired_holds(utcnow() + timedelta(days=1)) == []
        report = reconcile(self.store, utcnow())
        assert report.ok, report.drifts
        assert report.pending_holds == 0


def serve_app(
    store: DynamoStore, fakes: Fakes, catalog: Catalog | None = None, *, timeout: float = 5.0
) -> Iterator[Any]:
    """A funded customer and the app on a free port until the test ends (`timeout`: the
    gateway's per-call upstream timeout)."""
    plaintext, key = _funded(store)
    catalog = catalog or catalog_for_tests()
    app = create_app()
    gw = gateway(store, fakes, catalog, timeout=timeout)
    app.dependency_overrides[get_gateway] = lambda: gw
    with serving(app) as url:
        served = ServedApp(url, store, fakes, key, plaintext, catalog)
        try:
            yield served
        finally:
            for client in served.clients:
                client.close()


def _funded(store: DynamoStore) -> tuple[str, ApiKey]:
    """An account with 1 unit in each bucket and one key, shown in plain text once."""
    account_id = create_account(store, "sdk test")
    for bucket in Bucket:
        credit_wallet(store, account_id, bucket, "1", source="test", memo="fund")
    return issue_key(store, account_id)
