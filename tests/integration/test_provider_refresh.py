"""A provider key set after deploying is offered by the running gateway, no restart: the app
as wired from the environment (provider secret in the emulator's Secrets Manager, OpenAI
pointed at the fake OpenAI server), `forge-admin providers set/unset` in between, and
FORGE_PROVIDER_REFRESH_SECONDS made small. The key reaches the upstream and nothing else:
not the logs, not the CLI's output, not the answers."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from forge.api import create_app
from forge.domain.money import Bucket, charge_for
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.wiring import get_gateway, get_store
from forge_tools import admin
from forge_tools.emulator import Emulator, Resources
from tests.fakes import FakeOpenAI
from tests.integration.providers_kit import reported_usage

KEY = "sk-live-refresh-9c41e7d2b8"
REFRESH = 0.5  # FORGE_PROVIDER_REFRESH_SECONDS for this test; 60 when deployed
OPENAI_MODELS = {"gpt-4o-mini", "gpt-4o", "text-embedding-3-small"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    fake.api_key = KEY  # it answers 401 to any other key
    yield fake
    fake.stop()


@pytest.fixture
def deployed(
    aws_stack: Resources,
    emulator: Emulator,
    fake_openai: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    """The environment of a freshly deployed proxy: the stack's empty provider secret, no
    provider key anywhere else."""
    secret_id = f"{aws_stack.tables['BudgetTable']}/providers"
    emulator.client("secretsmanager").create_secret(Name=secret_id, SecretString="{}")
    for name in (
        "OPENAI_UPSTREAM_API_KEY",
        "ANTHROPIC_UPSTREAM_API_KEY",
        "GEMINI_UPSTREAM_API_KEY",
        "FORGE_COMPAT_PROVIDERS",
        "FORGE_COMPAT_API_KEYS",
        "FORGE_DEMO_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FORGE_PROVIDER_SECRET_ID", secret_id)
    monkeypatch.setenv("FORGE_PROVIDER_REFRESH_SECONDS", str(REFRESH))
    monkeypatch.setenv("OPENAI_UPSTREAM_BASE_URL", f"{fake_openai.base_url}/v1")
    yield secret_id


def providers(
    action: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> str:
    """`forge-admin providers <action> openai`, the key piped in; what it printed."""
    monkeypatch.setattr("sys.stdin", io.StringIO(KEY + "\n"))
    admin.main(["providers", action, "openai"])
    said = capsys.readouterr()
    return said.out + said.err


def test_a_key_set_after_deploy_is_offered_and_charged_then_withdrawn_without_a_restart(
    deployed: str,
    fake_openai: FakeOpenAI,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO)  # as deployed (POWERTOOLS_LOG_LEVEL)
    caplog.set_level(logging.DEBUG, logger="forge")
    store = get_store()
    account_id = create_account(store, "refresh test")
    credit_wallet(store, account_id, Bucket.CREDIT, "5", source="test", memo="fund")
    plaintext, _ = issue_key(store, account_id)
    app = create_app()
    printed: list[str] = []
    answers: list[httpx.Response] = []

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gw",
            headers={"Authorization": f"Bearer {plaintext}"},
        ) as client:

            async def offered() -> set[str]:
                answer = await client.get("/v1/models")
                answers.append(answer)
                return {m["id"] for m in answer.json()["data"]} & OPENAI_MODELS

            async def chat() -> httpx.Response:
                answer = await client.post("/v1/chat/completions", json=CHAT)
                answers.append(answer)
                return answer

            # Given the running gateway with the empty placeholder secret
            seen["before"] = await offered()
            seen["refused"] = await chat()
            seen["gateway"] = get_gateway()

            # When the operator sets the OpenAI key and the refresh interval passes
            printed.append(providers("set", capsys, monkeypatch))
            await asyncio.sleep(REFRESH + 0.2)
            seen["after_set"] = await offered()
            seen["served"] = await chat()

            # When the key is unset and the interval passes again
            printed.append(providers("unset", capsys, monkeypatch))
            await asyncio.sleep(REFRESH + 0.2)
            seen["after_unset"] = await offered()
            seen["refused_again"] = await chat()
            seen["same_gateway"] = get_gateway() is seen["gateway"]
        return seen

    seen = asyncio.run(scenario())

    # Before any key: no OpenAI model, and a call is a clear 404 that charges nothing
    assert seen["before"] == set()
    refused = seen["refused"]
    assert refused.status_code == 404, refused.text
    error = refused.json()["error"]
    assert error["code"] == "model_not_found" and "not available" in error["message"]

    # After `providers set`: the same gateway offers OpenAI and serves a charged call with it
    assert seen["after_set"] == OPENAI_MODELS
    served = seen["served"]
    assert served.status_code == 200, served.text
    assert len(fake_openai.calls) == 1
    upstream = fake_openai.calls[0]
    assert upstream.status == 200 and upstream.usage is not None
    receipt = store.get_receipt(account_id, served.headers["x-request-id"])
    assert receipt is not None and receipt.prices is not None
    assert receipt.final_route == "openai:gpt-4o-mini" and receipt.bucket is Bucket.CREDIT
    expected = charge_for(reported_usage("openai", upstream.usage), receipt.prices)
    assert receipt.charge == expected > 0
    wallet = store.get_wallet(account_id, Bucket.CREDIT)
    assert (wallet.balance, wallet.held) == (5_000_000 - expected, 0)

    # After `providers unset`: withdrawn again, refused as before, nothing more upstream
    assert seen["after_unset"] == set()
    assert seen["refused_again"].status_code == 404
    assert len(fake_openai.calls) == 1
    assert seen["same_gateway"]  # never rebuilt: no restart

    # The key went upstream, and nowhere else
    assert upstream.headers.get("authorization") == f"Bearer {KEY}"
    shown = "\n".join(printed) + "\n".join(a.text + str(a.headers) for a in answers)
    assert "openai: key set" in shown and KEY not in shown
    assert "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records).count(KEY) == 0
