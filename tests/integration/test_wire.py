"""The wire as the official SDKs read it: the `openai` and `anthropic` clients against the app
in process (their own transport, httpx2, over ASGI) and the emulated store, with the demo
provider upstream. What the SDKs parse (stream chunks, embeddings, models, errors, request
ids) is what they must get."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import anthropic
import httpx
import httpx2
import openai
import pytest
from fastapi import FastAPI

from forge.api import create_app
from forge.api.deps import get_gateway
from forge.domain.catalog import load_catalog
from forge.domain.money import Bucket
from forge.gateway import Gateway
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.providers.demo import create_demo_app
from forge.providers.openai import OpenAICompatProvider
from forge.store.dynamo.store import DynamoStore
from forge.wiring import get_store
from forge_tools.emulator import Resources

MESSAGES = [{"role": "user", "content": "What did my last call cost?"}]


@dataclass
class Wire:
    """The app, a funded key, and the official clients pointed at it."""

    app: FastAPI
    key: str
    account_id: str
    store: DynamoStore

    def _transport(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=self.app))

    def openai(self) -> openai.AsyncOpenAI:
        """No retries: every answer is the gateway's first."""
        return openai.AsyncOpenAI(
            base_url="http://gw/v1", api_key=self.key, max_retries=0, http_client=self._transport()
        )

    def anthropic(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            base_url="http://gw", api_key=self.key, max_retries=0, http_client=self._transport()
        )

    def raw(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://gw",
            headers={"Authorization": f"Bearer {self.key}"},
        )


def wire_over(store: DynamoStore, gateway: Gateway) -> Wire:
    account_id = create_account(store, "wire")
    for bucket in Bucket:
        credit_wallet(store, account_id, bucket, "1", source="test", memo="fund")
    plaintext, _ = issue_key(store, account_id)
    app = create_app()
    app.dependency_overrides[get_gateway] = lambda: gateway
    return Wire(app, plaintext, account_id, store)


def demo_gateway(store: DynamoStore, upstream: httpx.AsyncBaseTransport | None = None) -> Gateway:
    transport = upstream or httpx.ASGITransport(app=create_demo_app())
    provider = OpenAICompatProvider("http://demo.test/v1", "k", transport=transport)
    return Gateway(store, {"demo": provider}, load_catalog(), hold_ttl_seconds=960)


@pytest.fixture
def wire(aws_stack: Resources) -> Iterator[Wire]:
    store = get_store()
    yield wire_over(store, demo_gateway(store))


def charges(wire: Wire) -> int:
    return sum(1 for bucket in Bucket for e in wire.store.list_entries(wire.account_id, bucket))


# Validation answers 400 ------------------------------------------------------------------
def test_an_invalid_body_is_a_bad_request_for_both_sdks(wire: Wire) -> None:
    # Given a funded key; when each SDK sends a body with a field out of its range
    async def calls() -> tuple[openai.BadRequestError, anthropic.BadRequestError]:
        async with wire.openai() as oai, wire.anthropic() as claude:
            with pytest.raises(openai.BadRequestError) as chat:
                await oai.chat.completions.create(
                    model="demo-official",
                    messages=MESSAGES,  # type: ignore[arg-type]
                    max_tokens=0,
                )
            with pytest.raises(anthropic.BadRequestError) as message:
                await claude.messages.create(
                    model="demo-official",
                    max_tokens=16,
                    messages=[{"role": "user", "content": "hi"}],
                    extra_body={"temperature": 1.5},  # Anthropic's range ends at 1
                )
            return chat.value, message.value

    chat, message = asyncio.run(calls())

    # Then both raise their BadRequestError (400), naming the field, and nothing is charged
    assert chat.status_code == 400 and chat.code == "invalid_request"
    assert chat.param == "max_tokens"
    assert message.status_code == 400
    assert message.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert message.body["error"]["param"] == "temperature"  # type: ignore[index]
    balance_only = 2  # the two top-ups
    assert charges(wire) == balance_only
