"""40 concurrent requests against a wallet that can afford about 10: never below zero, every
charge in the ledger exactly once, every refusal a 402 in OpenAI's error shape."""

from __future__ import annotations

import asyncio

import httpx

from forge.api.schemas import ChatCompletionRequest
from forge.catalog import load_catalog
from forge.gateway import worst_case_input_tokens
from forge.money import Bucket, format_micros, token_cost
from forge.records import LedgerKind
from tests.e2e.conftest import LocalStack
from tests.e2e.helpers import expected_reply_and_charge, new_customer

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
