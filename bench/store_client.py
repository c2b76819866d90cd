"""CPU of the DynamoDB client on a paid call's store operations: botocore's low-level client
against the lean wire client (forge.store.dynamo.wire), through the same store adapter.

    python -m bench.store_client [PAID_CALLS]      (default 300; not part of make test)

The emulator runs in another process, so this process's CPU (`time.process_time`) is the
adapter's and the client's alone. It is the embedded emulator's app (moto behind its lock)
served by uvicorn rather than werkzeug, which closes every connection: both clients keep
their connections open, as they do to DynamoDB. Each paid call runs the
store operations of the gateway's paid path: the API key read (GetItem), the reserve
(TransactWriteItems), the wallet read (GetItem) and the settle (its transaction, and whatever
else settle sends). The two clients take turns in rounds, so a noisy neighbour weighs on both;
the figures are the medians over rounds. Writes the `store_client` key of bench/results.json
(the other keys are left as they are).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.__main__ import RESULTS, ROOT, _free_port
from forge.domain.envelopes import envelopes_for
from forge.domain.money import Bucket
from forge.domain.records import ApiKey, Hold, LedgerKind, ProjectCaps, Receipt
from forge.store.aws import make_dynamodb_client
from forge.store.dynamo.store import DynamoStore
from forge.store.dynamo.wire import make_wire_client

OPERATIONS = ("key read", "reserve", "wallet read", "settle")
ROUNDS = 6
ACCOUNT = "acct_bench_store"
KEY_HASH = "bench-store-key-hash"


def serve_emulator(port: int) -> None:
    """The embedded emulator's app behind a keep-alive server; prints the tables' names."""
    import logging
    import threading

    import uvicorn
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from uvicorn.middleware.wsgi import WSGIMiddleware  # type: ignore[attr-defined]

    from forge_tools.emulator import CREDENTIALS, REGION, _LockedApp
    from forge_tools.template import create_tables

    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    app = WSGIMiddleware(_LockedApp(DomainDispatcherApplication(create_backend_app)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update({**CREDENTIALS, "AWS_DEFAULT_REGION": REGION})
    tables = create_tables(make_dynamodb_client(endpoint), ROOT / "template.yaml", "bench")
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": REGION,
        **CREDENTIALS,
        "BUDGET_TABLE": tables["BudgetTable"],
        "LEDGER_TABLE": tables["LedgerTable"],
    }
    print(" ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    threading.Event().wait()


def _emulator() -> tuple[subprocess.Popen[str], dict[str, str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.store_client", "--serve", str(_free_port())],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    env = dict(pair.split("=", 1) for pair in process.stdout.readline().split())
    return process, env


def _seed(store: DynamoStore) -> ApiKey:
    key = ApiKey(
        key_id="key_bench",
        account_id=ACCOUNT,
        project_id="default",
        prefix="sk-forge-bench",
        caps={},
        created_at=datetime.now(UTC),
    )
    store.create_account(ACCOUNT, "store client bench")
    store.credit(
        ACCOUNT, Bucket.CREDIT, 10**12, kind=LedgerKind.TOPUP, entry_id="le_bench", source="bench"
    )
    store.put_api_key(KEY_HASH, key)
    return key


def _steps(store: DynamoStore, key: ApiKey, request_id: str) -> list[Callable[[], object]]:
    """One paid call's store operations, in OPERATIONS' order."""
    now = datetime.now(UTC)
    hold = Hold(
        request_id=request_id,
        account_id=ACCOUNT,
        key_id=key.key_id,
        project_id=key.project_id,
        requested_model="demo-official",
        bucket=Bucket.CREDIT,
        amount=5_000,
        expires_at=now + timedelta(minutes=16),
        envelopes=envelopes_for(key, ProjectCaps(), Bucket.CREDIT, now, None, None),
    )
    receipt = Receipt.model_validate(
        {
            "request_id": request_id,
            "account_id": ACCOUNT,
            "key_id": key.key_id,
            "project_id": key.project_id,
            "requested_model": "demo-official",
            "status": "succeeded",
            "final_route": "demo/official",
            "hold": hold.amount,
            "created_at": now,
        }
    )
    return [
        lambda: store.get_api_key(KEY_HASH),
        lambda: store.reserve(hold),
        lambda: store.get_wallet(ACCOUNT, Bucket.CREDIT),
        lambda: store.settle(hold, 2_000, receipt),
    ]


def _paid_call(store: DynamoStore, key: ApiKey, request_id: str) -> list[float]:
    """One paid call's store operations; the CPU seconds of each."""
    spent = []
    for step in _steps(store, key, request_id):
        started = time.process_time()
        step()
        spent.append(time.process_time() - started)
    return spent


class _Counting:
    """A client proxy counting the calls each store operation makes (outside the timings)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def counted(**params: Any) -> Any:
            self.calls.append(name)
            return method(**params)

        return counted


def _calls_per_operation(client: Any, env: dict[str, str], key: ApiKey) -> dict[str, list[str]]:
    counting = _Counting(client)
    store = DynamoStore(counting, env["BUDGET_TABLE"], env["LEDGER_TABLE"])
    found: dict[str, list[str]] = {}
    for operation, step in zip(OPERATIONS, _steps(store, key, "req_counted"), strict=True):
        counting.calls.clear()
        step()
        found[operation] = list(counting.calls)
    return found


def measure(paid_calls: int) -> dict[str, Any]:
    process, env = _emulator()
    try:
        os.environ.update(env)
        endpoint = env["AWS_ENDPOINT_URL"]
        clients = {
            "botocore": make_dynamodb_client(endpoint),
            "wire": make_wire_client(endpoint),
        }
        stores = {
            name: DynamoStore(client, env["BUDGET_TABLE"], env["LEDGER_TABLE"])
            for name, client in clients.items()
        }
        key = _seed(stores["botocore"])
        calls = _calls_per_operation(clients["wire"], env, key)
        for name, store in stores.items():  # warm: connections, caches, first-call costs
            for n in range(20):
                _paid_call(store, key, f"req_warm_{name}_{n}")
        per_round = max(1, paid_calls // ROUNDS)
        rounds: dict[str, list[list[float]]] = {name: [] for name in stores}
        for r in range(ROUNDS):
            for name, store in stores.items():
                totals = [0.0] * len(OPERATIONS)
                for n in range(per_round):
                    spent = _paid_call(store, key, f"req_{name}_{r}_{n}")
                    totals = [t + s for t, s in zip(totals, spent, strict=True)]
                rounds[name].append([t / per_round for t in totals])
    finally:
        process.terminate()
        process.wait(timeout=10)

    def us(values: list[float]) -> float:
        return round(statistics.median(values) * 1e6, 1)

    figures: dict[str, Any] = {}
    for name, samples in rounds.items():
        per_op = {op: us([s[i] for s in samples]) for i, op in enumerate(OPERATIONS)}
        figures[name] = {
            "cpu_us_per_operation": per_op,
            "cpu_us_per_paid_call": us([sum(s) for s in samples]),
        }
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "what": "CPU (time.process_time) of the store adapter and its DynamoDB client per paid "
        "call's store operations; the emulator (moto) runs in another process, served keep-alive",
        "paid_calls_per_client": per_round * ROUNDS,
        "client_calls_per_operation": calls,
        "rounds": ROUNDS,
        **figures,
        "wire_to_botocore": round(
            figures["wire"]["cpu_us_per_paid_call"] / figures["botocore"]["cpu_us_per_paid_call"],
            3,
        ),
    }


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve_emulator(int(sys.argv[2]))
        return
    paid_calls = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    figures = measure(paid_calls)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["store_client"] = figures
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
