"""What the e2e tests compute independently of the gateway: the demo provider's documented
token counts times the catalog's prices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai

from forge.domain.catalog import load_catalog
from forge.domain.money import Bucket, Usage, charge_for, decimal_to_micros
from forge.domain.records import LedgerEntry
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.providers.demo import count_usage, reply_words
from forge.store.s3archive import S3Archive

if TYPE_CHECKING:
    from tests.e2e.conftest import LocalStack

open_clients: list[openai.OpenAI] = []  # closed after each test by an autouse fixture


def expected_reply_and_charge(
    model: str, messages: list[dict[str, Any]], max_tokens: int | None = None
) -> tuple[str, int]:
    words, _ = reply_words(messages, max_tokens)
    raw = count_usage(messages, len(words))
    usage = Usage(
        input_tokens=raw["prompt_tokens"],
        cached_input_tokens=raw["prompt_tokens_details"]["cached_tokens"],
        output_tokens=raw["completion_tokens"],
    )
    route = next(m for m in load_catalog().models if m.id == model).routes[0]
    return " ".join(words), charge_for(usage, route.effective_prices)


def new_customer(stack: LocalStack, credit: str = "1.00", rmb: str = "1.00") -> tuple[str, str]:
    store = stack.store()
    account_id = create_account(store, "e2e customer")
    for bucket, amount in ((Bucket.CREDIT, credit), (Bucket.RMB, rmb)):
        if decimal_to_micros(amount):
            credit_wallet(store, account_id, bucket, amount, source="test", memo="e2e")
    plaintext, _ = issue_key(store, account_id)
    return account_id, plaintext


def sdk(stack: LocalStack, key: str) -> openai.OpenAI:
    """The official client, without retries so every response is the gateway's first."""
    client = openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0)
    open_clients.append(client)
    return client


def forge_admin(stack: LocalStack, *args: str) -> str:
    """The operator CLI, configured only by the variables in .local/dev.env."""
    env = {"PATH": os.environ["PATH"], **stack.env}
    cli = Path(sys.executable).with_name("forge-admin")
    done = subprocess.run(
        [str(cli), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def credit_account(stack: LocalStack, account_id: str, amount: str) -> str:
    """Credit the account's credit bucket `amount` (a decimal) through the operator CLI."""
    args = ["--account", account_id, "--bucket", "credit", "--amount", amount]
    return forge_admin(stack, "wallet", "credit", *args)


# Real providers, faked: what the stack under test is told about them ---------------------------
E2E_MODELS: list[dict[str, Any]] = [
    {
        "id": "e2e-fallback",
        "description": "An official OpenAI route that the tests make fail, then a routed Claude.",
        "routes": [
            {
                "provider": "openai",
                "upstream_model": "e2e-primary",
                "route_type": "official",
                "prices": {"input": "1", "cached_input": "0.5", "output": "4"},
            },
            {
                "provider": "anthropic",
                "upstream_model": "e2e-secondary",
                "route_type": "routed",
                "prices": {"input": "6", "cached_input": "0.6", "output": "20"},
            },
        ],
    }
]


def e2e_catalog(*extra: dict[str, Any]) -> dict[str, Any]:
    shipped = load_catalog().model_dump(mode="json")
    return {"models": [*shipped["models"], *E2E_MODELS, *extra]}


def provider_environment(
    fakes: Any, state_dir: Path, extra_models: Sequence[dict[str, Any]] = ()
) -> dict[str, str]:
    """Point the stack's providers at the fakes, seed the catalog with the test models (and
    `extra_models`), and keep retries fast and route health out of the way (tests of it use
    their own gateway)."""
    catalog_file = state_dir / "catalog.json"
    catalog_file.write_text(json.dumps(e2e_catalog(*extra_models)), encoding="utf-8")
    return {
        "OPENAI_UPSTREAM_BASE_URL": f"{fakes.openai.base_url}/v1",
        "OPENAI_UPSTREAM_API_KEY": fakes.openai.api_key,
        "ANTHROPIC_UPSTREAM_BASE_URL": fakes.anthropic.base_url,
        "ANTHROPIC_UPSTREAM_API_KEY": fakes.anthropic.api_key,
        "GEMINI_UPSTREAM_BASE_URL": f"{fakes.gemini.base_url}/v1beta",
        "GEMINI_UPSTREAM_API_KEY": fakes.gemini.api_key,
        "FORGE_COMPAT_PROVIDERS": json.dumps({"deepseek": f"{fakes.openai.base_url}/v1"}),
        "FORGE_COMPAT_API_KEYS": json.dumps({"deepseek": fakes.openai.api_key}),
        "FORGE_CATALOG_FILE": str(catalog_file),
        "FORGE_CATALOG_TTL_SECONDS": "1",
        "FORGE_RETRY_BASE_DELAY": "0.01",
        "FORGE_RETRY_MAX_DELAY": "0.05",
        "FORGE_ROUTE_FAILURE_THRESHOLD": "1000",
    }


def wait_until_archived(
    stack: LocalStack, account_id: str, count: int, timeout: float = 30
) -> list[LedgerEntry]:
    """The stack's stream poller archives asynchronously, as Lambda would: the account's
    archived entries (each once, whatever objects hold them) once there are `count`; fewer if
    the archive has not caught up in `timeout` seconds, more if it archived too many."""
    archive = S3Archive(stack.client("s3"), stack.env["ARCHIVE_BUCKET"])
    deadline = time.monotonic() + timeout
    while len(archived := archive.entries(account_id)) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    return archived
