"""The account views over one run of N calls with the in-memory twin as the store: what the
gateway's own code costs per GET once the emulator's whole-table Query scan is out of the way
(moto sorts every item of a table for each Query). `python -m bench.views_on_twin [N]`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.__main__ import _summary_ms, seed_calls
from forge import wiring
from forge.api import create_app
from forge.store.dynamo.store import DynamoStore
from forge_tools.template import memory_stack

TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"


def measure(calls: int, samples: int = 100) -> dict[str, Any]:
    stack = memory_stack(TEMPLATE)
    store = DynamoStore(stack.client, stack.budget_table, stack.ledger_table)
    started = time.perf_counter()
    account_id, api_key = seed_calls(store, calls, "bench-run", workers=1)
    seeded = time.perf_counter() - started
    # The app's factories build their stores from this one client and these tables.
    os.environ.update(
        BUDGET_TABLE=stack.budget_table, LEDGER_TABLE=stack.ledger_table, ARCHIVE_BUCKET="none"
    )
    wiring.clear()
    wiring.dynamodb_client = lambda: stack.client  # type: ignore[assignment]
    app = create_app()
    headers = {"Authorization": f"Bearer {api_key}"}

    async def timed(path: str) -> list[float]:
        took = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            for _ in range(samples):
                t0 = time.perf_counter()
                answer = await client.get(path, headers=headers)
                took.append(time.perf_counter() - t0)
                assert answer.status_code == 200, answer.text
        return took

    run = asyncio.run(timed("/v1/runs/bench-run"))
    usage = asyncio.run(timed("/v1/usage"))
    return {
        "calls": calls,
        "samples": samples,
        "seeded_seconds": round(seeded, 1),
        "account_id": account_id,
        "run_view": _summary_ms(run),
        "usage_view": _summary_ms(usage),
    }


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000), indent=2))
