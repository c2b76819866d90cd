"""The processes a benchmark runs, each on 127.0.0.1, so each one's CPU can be told apart:

    python -m bench.servers emulator PORT          the embedded DynamoDB/S3 emulator
    python -m bench.servers demo PORT              the demo provider (the upstream)
    python -m bench.servers gateway PORT           the gateway, with its DynamoDB client
                                                   counted and timed (GET /bench/stats)

The gateway here is the real app; only its DynamoDB client is wrapped, to count round trips
and the time spent waiting on them at the adapter boundary.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import uvicorn

ROOT = Path(__file__).resolve().parents[1]


class CountingClient:
    """A boto3 client proxy: calls per operation, and wall time spent inside them."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.wait_seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._client, name)
        if not callable(target) or name.startswith("_") or name in ("close", "meta"):
            return target

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return target(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                with self._lock:
                    self.calls[name] += 1
                    self.wait_seconds += elapsed

        return timed

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"calls": dict(self.calls), "wait_seconds": self.wait_seconds}


def run_emulator(port: int) -> None:
    import logging

    from forge_tools.emulator import Emulator

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    emulator = Emulator(port=port).start()
    resources = emulator.create_resources(ROOT / "template.yaml", prefix="bench")
    print(" ".join(f"{k}={v}" for k, v in resources.environment().items()), flush=True)
    threading.Event().wait()


def run_demo(port: int) -> None:
    from forge.providers.demo import create_demo_app

    uvicorn.run(create_demo_app(), host="127.0.0.1", port=port, log_level="warning")


def run_gateway(port: int) -> None:
    from forge import wiring as stores
    from forge.api import create_app
    from forge.wiring import dynamodb_client

    counting = CountingClient(dynamodb_client())
    # Every store this process builds (the gateway's and the account views' included) comes
    # from wiring, so one patch counts them all.
    setattr(stores, "dynamodb_client", lambda: counting)  # noqa: B010 - a module patch
    app = create_app()

    @app.get("/bench/stats")
    async def stats() -> dict[str, Any]:
        cpu = os.times()
        return {**counting.snapshot(), "cpu_seconds": cpu.user + cpu.system}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    role, port = sys.argv[1], int(sys.argv[2])
    {"emulator": run_emulator, "demo": run_demo, "gateway": run_gateway}[role](port)
