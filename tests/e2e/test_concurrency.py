"""Concurrent requests through the running stack: a wallet that can afford about 10 of 40,
and 100 requests against key, project and run budgets. Never below zero, never over an
envelope, every charge in the ledger exactly once, every refusal a 402 naming its envelope."""

from __future__ import annotations

import asyncio
import json

import httpx

from forge.domain.catalog import load_catalog
from forge.domain.money import Bucket, format_micros, token_cost
from forge.domain.records import LedgerKind
from forge.domain.requests import ChatCompletionRequest
from forge.gateway import worst_case_input_tokens
from tests.e2e.conftest import LocalStack
from tests.e2e.helpers import (
    credit_account,
    expected_reply_and_charge,
    forge_admin,
    new_customer,
)

REQUESTS = 40
MAX_TOKENS = 8
MESSAGES = [{"role": "user", "content": "Count my tokens, concurrently."}]


def hold_per_request() -> int:
    prices = load_catalog().models[0].routes[0].effective_prices
    request = ChatCompletionRequest.model_validate({"model": "demo-official", "messages": MESSAGES})
    return token_cost(worst_case_input_tokens(request), prices.input) + token_cost(
        MAX_TOKENS, prices.output
    )


async def _fire(stack: LocalStack, key: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=REQUESTS)) as c:
        start = asyncio.Event()

        async def one() -> httpx.Response:
            await start.wait()
            return await c.post(
                f"{stack.base_url}/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "demo-official", "messages": MESSAGES, "max_tokens": MAX_TOKENS},
            )

        tasks = [asyncio.create_task(one()) for _ in range(REQUESTS)]
        await asyncio.sleep(0.05)
        start.set()
        return await asyncio.gather(*tasks)


def test_forty_concurrent_requests_never_overdraw(local_stack: LocalStack) -> None:
    _, charge = expected_reply_and_charge("demo-official", MESSAGES, MAX_TOKENS)
    hold = hold_per_request()
    assert hold >= charge > 0
    balance = 10 * hold + hold // 2  # about ten requests' worth of holds
    account_id, key = new_customer(local_stack, credit=format_micros(balance), rmb="0")

    responses = asyncio.run(_fire(local_stack, key))

    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    for response in refused:
        assert response.status_code == 402, response.text
        assert response.json()["error"]["code"] == "budget_exceeded"
        assert response.json()["error"]["envelope"] == "bucket:credit"
    assert 10 <= len(ok) < REQUESTS  # the wallet ran out, and what it held was honoured

    store = local_stack.store()
    wallet = store.get_wallet(account_id, Bucket.CREDIT)
    charges = [int(r.headers["x-forge-charge-micros"]) for r in ok]
    assert wallet.balance >= 0 and wallet.available >= 0 and wallet.held == 0
    assert balance - wallet.balance == sum(charges)

    entries = store.list_entries(account_id, Bucket.CREDIT)
    charge_entries = [e for e in entries if e.kind is LedgerKind.CHARGE]
    assert len(charge_entries) == len(ok)
    assert {e.request_id for e in charge_entries} == {r.headers["x-request-id"] for r in ok}
    running = 0
    for seq, entry in enumerate(entries, start=1):  # the chain explains every balance
        running += entry.amount
        assert (entry.seq, entry.balance_after) == (seq, running)
        assert entry.balance_after >= 0
    assert running == wallet.balance


def test_forty_concurrent_requests_on_a_split_wallet_never_overdraw_it(
    local_stack: LocalStack,
) -> None:
    """The same race on a bucket split into 4 shards by the operator CLI: shards run short
    at different times and borrow from each other, and the bucket pays what it can."""
    hold = hold_per_request()
    balance = 10 * hold + hold // 2
    account_id, key = new_customer(local_stack, credit=format_micros(balance), rmb="0")
    shards = json.loads(
        forge_admin(
            local_stack,
            "wallet",
            "shard",
            "--account",
            account_id,
            "--bucket",
            "credit",
            "--shards",
            "4",
        )
    )
    assert [s["shard"] for s in shards] == [0, 1, 2, 3]
    assert sum(s["available_micros"] for s in shards) == balance

    responses = asyncio.run(_fire(local_stack, key))

    ok = [r for r in responses if r.status_code == 200]
    for response in (r for r in responses if r.status_code != 200):
        assert response.status_code == 402, response.text
        assert response.json()["error"]["envelope"] == "bucket:credit"
    assert 10 <= len(ok) < REQUESTS
    # The bucket's balance after one call is the shards' sum, which the call did not read.
    assert all("x-forge-balance-after-micros" not in r.headers for r in ok)
    store = local_stack.store()
    wallet = store.get_wallet(account_id, Bucket.CREDIT)
    assert (wallet.held, wallet.shards) == (0, 4) and wallet.available >= 0
    charges = [int(r.headers["x-forge-charge-micros"]) for r in ok]
    assert balance - wallet.balance == sum(charges)
    charged: set[str] = set()
    for part in store.wallet_shards(account_id, Bucket.CREDIT):
        entries = store.list_entries(account_id, Bucket.CREDIT, part.shard)
        running = 0
        for seq, entry in enumerate(entries, start=1):  # each shard's chain explains it
            running += entry.amount
            assert (entry.shard, entry.seq, entry.balance_after) == (part.shard, seq, running)
        assert running == part.balance >= 0
        charged |= {e.request_id or "" for e in entries if e.kind is LedgerKind.CHARGE}
    assert charged == {r.headers["x-request-id"] for r in ok}
    assert json.loads(forge_admin(local_stack, "reconcile"))["drifts"] == []


def test_a_hundred_concurrent_requests_never_exceed_key_project_or_run_budgets(
    local_stack: LocalStack,
) -> None:
    """Two keys of one project, three agent runs, caps all far below the balance."""
    _, charge = expected_reply_and_charge("demo-official", MESSAGES, MAX_TOKENS)
    balance = 1_000_000
    account_id = forge_admin(local_stack, "account", "create", "--name", "capped").splitlines()[0]
    credit_account(local_stack, account_id, format_micros(balance))
    key_cap, project_cap, run_budget = 35 * charge, 50 * charge, 30 * charge
    keys = [
        forge_admin(
            local_stack,
            "key",
            "create",
            "--account",
            account_id,
            "--project",
            "agents",
            "--daily",
            f"credit={format_micros(key_cap)}",
        )
        for _ in range(2)
    ]
    forge_admin(
        local_stack,
        "project",
        "caps",
        "--account",
        account_id,
        "--project",
        "agents",
        "--daily",
        f"credit={format_micros(project_cap)}",
    )

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100)) as c:
            return await asyncio.gather(
                *(
                    c.post(
                        f"{local_stack.base_url}/chat/completions",
                        headers={
                            "Authorization": f"Bearer {keys[i % 2]}",
                            "X-Run-Id": f"run-{i % 3}",
                            "X-Run-Budget": format_micros(run_budget),
                        },
                        json={
                            "model": "demo-official",
                            "messages": MESSAGES,
                            "max_tokens": MAX_TOKENS,
                        },
                    )
                    for i in range(100)
                )
            )

    responses = asyncio.run(fire())

    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert ok and refused
    assert {r.status_code for r in refused} == {402}
    assert {r.json()["error"]["envelope"] for r in refused} <= {"key:daily", "project:daily", "run"}
    charges = [int(r.headers["x-forge-charge-micros"]) for r in ok]
    store = local_stack.store()
    wallet = store.get_wallet(account_id, Bucket.CREDIT)
    assert balance - wallet.balance == sum(charges) <= project_cap
    assert wallet.held == 0
    entries = store.list_entries(account_id, Bucket.CREDIT)
    assert sum(e.amount for e in entries) == wallet.balance
    assert len([e for e in entries if e.kind is LedgerKind.CHARGE]) == len(ok)
    # Every envelope in the store, read back: never over its limit, nothing left held.
    envelopes = [item for item in store.scan_budget() if str(item["pk"]).startswith("ENV#")]
    runs = {str(e["pk"]) for e in envelopes if str(e["pk"]).startswith(f"ENV#RUN#{account_id}")}
    assert len(runs) == 3
    for item in envelopes:
        assert item["held"] == 0
        assert item["consumed"] == item["settled"] <= item["limit"]
    report = json.loads(forge_admin(local_stack, "reconcile"))
    assert [d for d in report["drifts"] if d["account_id"] == account_id] == []
