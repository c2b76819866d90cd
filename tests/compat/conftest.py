"""The compatibility suite's stack: `make dev` in a subprocess (the whole app under uvicorn on
127.0.0.1, the embedded DynamoDB/S3 emulator), its providers pointed at the fakes that speak
each provider's wire format (the catalog's routes pick which serves a model), and one funded
customer whose key every client uses. Each test module drives one client (its `CLIENT`); a
test's `client` parameter names the versions installed, so they show in its id."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.compat.clients import JS_DIR, Client
from tests.compat.table import Cell, collected_cells
from tests.e2e.conftest import run_local_stack
from tests.e2e.helpers import new_customer, provider_environment
from tests.integration.providers_kit import Fakes, start_fakes

CHAT_MODEL = "gpt-4o-mini"  # an official OpenAI route: the fake OpenAI serves it
CLAUDE_MODEL = "claude-haiku-4-5"  # the fake Anthropic serves it
EMBEDDING_MODEL = "text-embedding-3-small"  # the fake OpenAI serves it
DEMO_EMBEDDING_MODEL = "demo-embedding"  # the built-in demo provider serves it
# Models whose upstream refuses a prompt over SMALL_CONTEXT tokens, as each provider does.
SMALL_CONTEXT = 200
SMALL_CONTEXT_MODELS = {"openai": "compat-gpt-small-context", "anthropic": "compat-claude-small"}
NODE = JS_DIR / "node_modules" / ".bin" / "node"
NODE_TIMEOUT = 90  # seconds for one client's whole script


def _small_context_model(provider: str) -> dict[str, Any]:
    return {
        "id": SMALL_CONTEXT_MODELS[provider],
        "description": f"A {provider} model with a {SMALL_CONTEXT}-token context window.",
        "routes": [
            {
                "provider": provider,
                "upstream_model": f"{provider}-small-context",
                "route_type": "official",
                "prices": {"input": "1", "cached_input": "0.5", "output": "4"},
            }
        ],
    }


@dataclass(frozen=True)
class Gateway:
    base_url: str  # with /v1, as OpenAI clients take it
    api_key: str

    @property
    def origin(self) -> str:
        """The base URL Anthropic clients take (they add /v1 themselves)."""
        return self.base_url.removesuffix("/v1")


@pytest.fixture(scope="package")  # stopped once tests/compat is done
def compat_fakes() -> Iterator[Fakes]:
    for fakes in start_fakes():
        for provider in SMALL_CONTEXT_MODELS:
            fakes[provider].context_windows[f"{provider}-small-context"] = SMALL_CONTEXT
        yield fakes


@pytest.fixture(scope="package")
def gateway(tmp_path_factory: pytest.TempPathFactory, compat_fakes: Fakes) -> Iterator[Gateway]:
    state_dir = tmp_path_factory.mktemp("compat")
    models = [_small_context_model(provider) for provider in SMALL_CONTEXT_MODELS]
    environment = provider_environment(compat_fakes, state_dir, models)
    for stack in run_local_stack(state_dir, environment):
        _, key = new_customer(stack, credit="100.00", rmb="100.00")
        yield Gateway(stack.base_url, key)


def run_node(script: str, gateway: Gateway) -> dict[str, Any]:
    """Run one client's script under the pinned Node.js, pointed at the gateway; it prints
    {case: result} as one JSON line."""
    if not NODE.exists():
        pytest.fail("the JS clients are not installed: run `make compat-deps`")
    models = {
        "chat": CHAT_MODEL,
        "embedding": EMBEDDING_MODEL,
        "demo_embedding": DEMO_EMBEDDING_MODEL,
        "unknown": "no-such-model",
    }
    done = subprocess.run(
        [str(NODE), str(JS_DIR / script)],
        cwd=JS_DIR,
        env={
            "PATH": os.environ.get("PATH", ""),
            "OPENAI_BASE_URL": gateway.base_url,
            "OPENAI_API_KEY": gateway.api_key,
            "FORGE_COMPAT_MODELS": json.dumps(models),
        },
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stderr[-3000:]}"
    results: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


# The table's source: which tests exist, for which client and feature, pending or not ------
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "compat(feature, note=None): one feature of the module's CLIENT, a row of the README's "
        "compatibility table (a note says how it differs from the provider's own API)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    client: Client | None = getattr(metafunc.module, "CLIENT", None)
    if client is not None and "client" in metafunc.fixturenames:
        metafunc.parametrize("client", [client], ids=[client.test_id], scope="module")


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselect anything: the table wants them all
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[collected_cells] = [cell for item in items if (cell := Cell.of(item))]
