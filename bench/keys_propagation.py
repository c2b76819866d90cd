"""How long a revoked key keeps working on another container, and how often a busy key's
request waits for the store (`python -m bench.keys_propagation [--trials N]`).

Two app instances under uvicorn on the embedded emulator, each with its own key cache (two
containers), over real HTTP. Per trial: a new key is put to work on container B (a request
every 20 ms); after a random 0-1.5 s the owner revokes it through container A; the figure is
the time from A's answer to B's first 401. Meanwhile every read of the key on B is counted,
split into reads made before an answer (on a request's path) and background refreshes.
Writes bench/keys_propagation.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "keys_propagation.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the emulator's access log

    from forge import wiring
    from forge.api import create_app
    from forge.domain.records import ApiKey
    from forge.gateway.auth import Keys
    from forge.money_in.accounts import create_account_with_owner_key, issue_key
    from forge.settings import get_settings
    from forge.store.dynamo.store import DynamoStore
    from forge.wiring import get_keys
    from forge_tools.devstack import _free_port, _serve_in_thread
    from forge_tools.emulator import Emulator

    emulator = Emulator(port=0).start()
    resources = emulator.create_resources(ROOT / "template.yaml", prefix="keysbench")
    os.environ.update(resources.environment())
    wiring.clear()
    store = wiring.get_store()

    class CountingStore(DynamoStore):
        inline = 0
        background = 0

        def get_api_key(self, key_hash: str) -> ApiKey | None:
            if threading.current_thread().name.startswith("background"):
                self.background += 1
            else:
                self.inline += 1
            return super().get_api_key(key_hash)

    settings = get_settings()
    counted = CountingStore(wiring.dynamodb_client(), settings.budget_table, settings.ledger_table)

    def app(keys_store: DynamoStore) -> Any:
        built = create_app("account")
        keys = Keys(
            keys_store,
            time.monotonic,
            anyio.to_thread.run_sync,
            run_later=wiring.background_jobs().submit,
        )
        built.dependency_overrides[get_keys] = lambda: keys
        return built

    account_id, owner = create_account_with_owner_key(store, "bench")
    seconds: list[float] = []
    requests = 0
    ports = _free_port(), _free_port()
    servers = [
        _serve_in_thread(app(s), port) for s, port in zip((store, counted), ports, strict=True)
    ]
    url_a, url_b = (f"http://127.0.0.1:{port}" for port in ports)
    try:
        a = httpx.Client(base_url=url_a, headers={"Authorization": f"Bearer {owner}"})
        for _ in range(args.trials):
            plaintext, key = issue_key(store, account_id)
            b = httpx.Client(base_url=url_b, headers={"Authorization": f"Bearer {plaintext}"})
            assert b.get("/v1/balance").status_code == 200
            busy_until = time.monotonic() + random.uniform(0, 1.5)  # noqa: S311 - a delay
            while time.monotonic() < busy_until:
                assert b.get("/v1/balance").status_code == 200
                requests += 1
                time.sleep(0.02)
            assert a.post(f"/v1/keys/{key.key_id}/revoke").status_code == 200
            revoked = time.monotonic()
            while b.get("/v1/balance").status_code == 200:
                requests += 1
                time.sleep(0.02)
            seconds.append(time.monotonic() - revoked)
            b.close()
        a.close()
    finally:
        for server in servers:
            server.should_exit = True
        emulator.stop()

    ordered = sorted(seconds)
    result = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "trials": len(seconds),
        "revoke_to_refusal_s": {
            "median": round(statistics.median(ordered), 3),
            "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
            "max": round(ordered[-1], 3),
        },
        "busy_requests": requests,
        "key_reads_before_an_answer": counted.inline,
        "key_reads_in_the_background": counted.background,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
