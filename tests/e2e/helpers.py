"""What the e2e tests compute independently of the gateway: the demo provider's documented
token counts times the catalog's prices."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai

from forge.accounts import create_account, credit_wallet, issue_key
from forge.catalog import load_catalog
from forge.demo_upstream import count_usage, reply_words
from forge.money import Bucket, Usage, charge_for, decimal_to_micros

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
