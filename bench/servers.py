"""The processes a benchmark runs, each on 127.0.0.1, so each one's CPU can be told apart:

    python -m bench.servers emulator PORT          the embedded DynamoDB/S3 emulator
    python -m bench.servers demo PORT              the demo provider (the upstream)
    python -m bench.servers gateway PORT           the gateway, with its DynamoDB client
                                                   counted and timed (GET /bench/stats)
    python -m bench.servers gateway-twin PORT MS   the gateway on the in-memory twin, each
                                                   DynamoDB call answered after MS ms; it
                                                   prints one funded API key

The gateway here is the real app; only its DynamoDB client is wrapped, to count round trips
and the time spent waiting on them at the adapter boundary.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
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


class TwinEndpoint:
    """DynamoDB answered in this process by the in-memory twin, behind a real botocore client:
    the client validates, serialises, signs and parses as it would against AWS; only the socket
    is replaced (botocore's `before-send` hook). Each call waits `latency` seconds (the twin's
    latency fault, a sleep, so no CPU). The twin's own CPU (decoding the request, executing it,
    encoding the answer; what DynamoDB's servers would do) is timed per thread, so it can be
    taken out of the process's CPU."""

    def __init__(self, latency: float) -> None:
        from forge.store.memory import Faults
        from forge_tools.template import memory_stack

        self.stack = memory_stack(ROOT / "template.yaml", faults=Faults(latency=latency))
        self._lock = threading.Lock()
        self.cpu_seconds = 0.0

    def client(self) -> Any:
        from botocore.session import get_session

        client = get_session().create_client(
            "dynamodb",
            region_name="us-east-1",
            endpoint_url="http://dynamodb.twin.invalid",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",  # noqa: S106 - signs requests nobody checks
        )
        client.meta.events.register("before-send.dynamodb", self._answer)
        return client

    def wire_client(self) -> Any:
        """forge.store.dynamo.wire's client (the one the stack deploys), its connection pool
        replaced by the twin: it still encodes, signs and parses every call."""
        from forge.store.dynamo.wire import WireDynamoDB

        client = WireDynamoDB(
            "http://dynamodb.twin.invalid", "us-east-1", lambda: ("bench", "bench", None)
        )
        client._pool = _TwinPool(self)  # type: ignore[assignment]
        return client

    def _answer(self, request: Any, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        target = request.headers["X-Amz-Target"]
        target = target.decode() if isinstance(target, bytes) else target
        status, body = self.execute(target, request.body)
        headers = {"content-type": "application/x-amz-json-1.0", "x-amzn-requestid": "twin"}
        return AWSResponse(request.url, status, headers, _Body(body))

    def execute(self, target: str, body: bytes) -> tuple[int, bytes]:
        """One DynamoDB JSON call (`X-Amz-Target`, body) answered by the twin, its CPU timed."""
        import json

        from botocore import xform_name
        from botocore.exceptions import ClientError

        operation = target.split(".")[-1]
        started = time.thread_time()
        params = json.loads(body)
        try:
            status, answer = 200, getattr(self.stack.client, xform_name(operation))(**params)
        except ClientError as error:
            response = dict(error.response)
            status = response.pop("ResponseMetadata")["HTTPStatusCode"]
            code, message = response.pop("Error")["Code"], error.response["Error"]["Message"]
            answer = {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", **response}
            answer.setdefault("message", message)
        data = json.dumps(answer).encode()
        with self._lock:
            self.cpu_seconds += time.thread_time() - started
        return status, data


class _TwinPool:
    """The wire client's connection pool, answered by the twin."""

    def __init__(self, twin: TwinEndpoint) -> None:
        self._twin = twin

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        target = next(v for k, v in headers.items() if k.lower() == "x-amz-target")
        status, data = self._twin.execute(target, body)
        return status, {"content-type": "application/x-amz-json-1.0"}, data

    def close(self) -> None:
        pass


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


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


def run_gateway_twin(port: int, latency_ms: float, client: str = "wire") -> None:
    from forge import wiring as stores
    from forge.api import create_app
    from forge.domain.money import Bucket
    from forge.money_in.accounts import create_account, credit_wallet, issue_key
    from forge.store.dynamo.store import DynamoStore

    twin = TwinEndpoint(latency_ms / 1000)
    counting = CountingClient(twin.wire_client() if client == "wire" else twin.client())
    stack = twin.stack
    os.environ.update(
        BUDGET_TABLE=stack.budget_table, LEDGER_TABLE=stack.ledger_table, ARCHIVE_BUCKET="none"
    )
    stores.clear()
    setattr(stores, "dynamodb_client", lambda: counting)  # noqa: B010 - a module patch
    store = DynamoStore(counting, stack.budget_table, stack.ledger_table)
    account_id = create_account(store, "bench twin")
    credit_wallet(store, account_id, Bucket.CREDIT, "100000", source="bench", memo="bench")
    print(f"KEY={issue_key(store, account_id)[0]}", flush=True)
    app = create_app("paid")

    @app.get("/bench/stats")
    async def stats() -> dict[str, Any]:
        cpu = os.times()
        return {
            **counting.snapshot(),
            "cpu_seconds": cpu.user + cpu.system,
            "store_cpu_seconds": twin.cpu_seconds,
        }

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    role, port = sys.argv[1], int(sys.argv[2])
    if role == "gateway-twin":
        run_gateway_twin(port, float(sys.argv[3]), *sys.argv[4:5])
    else:
        {"emulator": run_emulator, "demo": run_demo, "gateway": run_gateway}[role](port)
