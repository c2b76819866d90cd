"""The whole app under uvicorn on 127.0.0.1, its OpenAI, Anthropic and Gemini providers pointed
at the fake providers and its store at the emulator, with the shipped catalog: what the
official `openai` and `anthropic` SDKs call in the tests that use it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anthropic
import httpx
import openai
import pytest

from forge.api import create_app
from forge.domain.money import Bucket
from forge.domain.records import Receipt, utcnow
from forge.ledger.reconcile import reconcile
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.store.dynamo.store import DynamoStore
from forge.wiring import get_store
from tests.conftest import clear_cached_factories
from tests.integration.providers_kit import Fakes
from tests.serving import serving


@dataclass
class LiveApp:
    url: str
    key: str
    account_id: str
    store: DynamoStore
    fakes: Fakes

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.key, max_retries=0)

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=self.key, max_retries=0)

    def receipt(self, request_id: str) -> Receipt:
        deadline = time.monotonic() + 10
        while (receipt := self.store.get_receipt(self.account_id, request_id)) is None:
            assert time.monotonic() < deadline, f"no receipt for {request_id}"
            time.sleep(0.05)
        return receipt

    def receipt_json(self, request_id: str) -> dict[str, Any]:
        """GET /v1/requests/{id}, as the customer reads it."""
        response = httpx.get(
            f"{self.url}/v1/requests/{request_id}",
            headers={"Authorization": f"Bearer {self.key}"},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def balance(self) -> tuple[int, int]:
        wallet = self.store.get_wallet(self.account_id, Bucket.CREDIT)
        return wallet.balance, wallet.held

    def assert_money_whole(self) -> None:
        """No hold left anywhere, and the books reconcile."""
        assert self.balance()[1] == 0
        assert self.store.expired_holds(utcnow() + timedelta(days=1)) == []
        report = reconcile(self.store, utcnow())
        assert report.ok, report


@contextmanager
def live_app(
    fakes: Fakes, monkeypatch: pytest.MonkeyPatch, credit: str = "5.00"
) -> Iterator[LiveApp]:
    """Serve the app for one test (its stack already set up by `aws_stack`)."""
    monkeypatch.setenv("OPENAI_UPSTREAM_BASE_URL", f"{fakes.openai.base_url}/v1")
    monkeypatch.setenv("OPENAI_UPSTREAM_API_KEY", fakes.openai.api_key)
    monkeypatch.setenv("ANTHROPIC_UPSTREAM_BASE_URL", fakes.anthropic.base_url)
    monkeypatch.setenv("ANTHROPIC_UPSTREAM_API_KEY", fakes.anthropic.api_key)
    monkeypatch.setenv("GEMINI_UPSTREAM_BASE_URL", f"{fakes.gemini.base_url}/v1beta")
    monkeypatch.setenv("GEMINI_UPSTREAM_API_KEY", fakes.gemini.api_key)
    monkeypatch.setenv("FORGE_RETRY_BASE_DELAY", "0.01")
    monkeypatch.setenv("FORGE_RETRY_MAX_DELAY", "0.05")
    monkeypatch.setenv("FORGE_ROUTE_FAILURE_THRESHOLD", "1000")
    clear_cached_factories()
    store = get_store()
    account_id = create_account(store, "sdk")
    credit_wallet(store, account_id, Bucket.CREDIT, credit, source="test", memo="top-up")
    plaintext, _ = issue_key(store, account_id)

    with serving(create_app()) as url:
        yield LiveApp(url, plaintext, account_id, store, fakes)
