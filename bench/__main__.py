"""`make bench`: gateway overhead, storage round trips, cold starts, a busy wallet and the
account views over a run of 10,000 calls.

Writes bench/results.json and the tables in docs/performance.md. Every process runs on this
machine: the emulator, the demo upstream and the gateway each in their own process, so the
gateway's CPU is its own. Numbers are for comparing runs on one machine, not absolute truths.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
REPORT = ROOT / "docs" / "performance.md"
MESSAGES = [{"role": "user", "content": "Benchmark me: how much does the gateway add?"}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(values) * 1000, 3),
        "p99_ms": round(_percentile(values, 0.99) * 1000, 3),
    }


class Stack:
    """Emulator, demo upstream and gateway as three processes."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[str]] = []
        self.env: dict[str, str] = {}

    def _spawn(self, role: str, port: int, env: dict[str, str]) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.servers", role, str(port)],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            text=True,
        )
        self.processes.append(process)
        return process

    def start(self) -> Stack:
        emulator = self._spawn("emulator", _free_port(), {})
        assert emulator.stdout is not None
        self.env = dict(pair.split("=", 1) for pair in emulator.stdout.readline().split())
        demo_port, gateway_port = _free_port(), _free_port()
        self.demo_url = f"http://127.0.0.1:{demo_port}/v1"
        self.gateway_url = f"http://127.0.0.1:{gateway_port}/v1"
        self.env["FORGE_DEMO_BASE_URL"] = self.demo_url
        self._spawn("demo", demo_port, self.env)
        self._spawn("gateway", gateway_port, self.env)
        _wait_http(f"http://127.0.0.1:{demo_port}/docs")
        _wait_http(f"http://127.0.0.1:{gateway_port}/bench/stats")
        os.environ.update(self.env)  # the seeding below talks to the same emulator
        return self

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(self.gateway_url.removesuffix("/v1") + "/bench/stats").json())

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=10)


@contextmanager
def running_stack() -> Iterator[Stack]:
    stack = Stack().start()
    try:
        yield stack
    finally:
        stack.stop()


def seed(credit: str, **key_options: Any) -> tuple[str, str]:
    from forge.domain.money import Bucket
    from forge.money_in.accounts import create_account, credit_wallet, issue_key
    from forge.wiring import get_store

    store = get_store()
    account_id = create_account(store, "bench")
    credit_wallet(store, account_id, Bucket.CREDIT, credit, source="bench", memo="bench")
    return account_id, issue_key(store, account_id, **key_options)[0]


def overhead(stack: Stack, requests: int) -> dict[str, Any]:
    """Same upstream, same body: called directly, and through the gateway, interleaved."""
    _, key = seed("1000")
    gateway_headers = {"Authorization": f"Bearer {key}"}
    direct_headers = {"Authorization": "Bearer demo"}
    body = {"messages": MESSAGES, "max_tokens": 64}
    timings: dict[str, list[float]] = {
        k: [] for k in ("direct", "gateway", "direct_ttfb", "gateway_ttfb")
    }
    with httpx.Client(timeout=30) as client:

        def call(url: str, headers: dict[str, str], model: str) -> float:
            started = time.perf_counter()
            response = client.post(url, headers=headers, json={**body, "model": model})
            response.raise_for_status()
            return time.perf_counter() - started

        def first_byte(url: str, headers: dict[str, str], model: str) -> float:
            started = time.perf_counter()
            with client.stream(
                "POST", url, headers=headers, json={**body, "model": model, "stream": True}
            ) as response:
                lines = response.iter_lines()
                for line in lines:
                    if line.startswith("data:"):
                        elapsed = time.perf_counter() - started
                        break
                for _ in lines:  # drain: the stream settles at its end
                    pass
            return elapsed

        direct = f"{stack.demo_url}/chat/completions"
        gateway = f"{stack.gateway_url}/chat/completions"
        for _ in range(20):  # warm connections, caches and the key lookup
            call(direct, direct_headers, "demo-official-1")
            call(gateway, gateway_headers, "demo-official")
        before = stack.stats()
        for _ in range(requests):
            timings["direct"].append(call(direct, direct_headers, "demo-official-1"))
            timings["gateway"].append(call(gateway, gateway_headers, "demo-official"))
        after = stack.stats()
        for _ in range(requests // 2):
            timings["direct_ttfb"].append(first_byte(direct, direct_headers, "demo-official-1"))
            timings["gateway_ttfb"].append(first_byte(gateway, gateway_headers, "demo-official"))
    direct_s, gateway_s = _summary_ms(timings["direct"]), _summary_ms(timings["gateway"])
    ttfb_d, ttfb_g = _summary_ms(timings["direct_ttfb"]), _summary_ms(timings["gateway_ttfb"])
    return {
        "requests": requests,
        "direct": direct_s,
        "gateway": gateway_s,
        "added": {k: round(gateway_s[k] - direct_s[k], 3) for k in direct_s},
        "stream_ttfb_direct": ttfb_d,
        "stream_ttfb_gateway": ttfb_g,
        "stream_ttfb_added": {k: round(ttfb_g[k] - ttfb_d[k], 3) for k in ttfb_d},
        "gateway_cpu_ms_per_request": round(
            (after["cpu_seconds"] - before["cpu_seconds"]) / requests * 1000, 3
        ),
        "store_wait_ms_per_request": round(
            (after["wait_seconds"] - before["wait_seconds"]) / requests * 1000, 3
        ),
    }


def round_trips(stack: Stack, requests: int = 30) -> dict[str, Any]:
    """DynamoDB calls per request, counted at the adapter, after the caches are warm."""
    from forge.domain.money import Bucket
    from forge.domain.records import KeyCaps, ProjectCaps
    from forge.wiring import get_store

    plain_account, plain_key = seed("1000")
    caps = KeyCaps(
        daily=10**9, monthly=10**9, total=10**9, run_budget=10**9, max_request_charge=10**8
    )
    full_account, full_key = seed("1000", project_id="bench", caps={Bucket.CREDIT: caps})
    get_store().put_project_caps(
        full_account, "bench", {Bucket.CREDIT: ProjectCaps(daily=10**9, monthly=10**9)}
    )
    cases = {
        "plain": ({"Authorization": f"Bearer {plain_key}"}, "demo-official"),
        "every_envelope": (
            {
                "Authorization": f"Bearer {full_key}",
                "X-Run-Id": "bench-run",
                "X-Run-Budget": "1000",
                "X-Max-Request-Charge": "100",
            },
            "demo-official",
        ),
    }
    out: dict[str, Any] = {}
    with httpx.Client(timeout=30) as client:
        for name, (headers, model) in cases.items():
            body = {"model": model, "messages": MESSAGES, "max_tokens": 64}
            client.post(f"{stack.gateway_url}/chat/completions", headers=headers, json=body)
            before = stack.stats()["calls"]
            for _ in range(requests):
                response = client.post(
                    f"{stack.gateway_url}/chat/completions", headers=headers, json=body
                )
                response.raise_for_status()
            after = stack.stats()["calls"]
            per = {
                op: round((after.get(op, 0) - before.get(op, 0)) / requests, 2)
                for op in after
                if after.get(op, 0) != before.get(op, 0)
            }
            out[name] = {"per_request": per, "total": round(sum(per.values()), 2)}
        # A fallback, counted on the first call only: after it the failing route is skipped
        # for a while (route health), and later calls look like plain ones.
        headers = cases["plain"][0]
        body = {"model": "demo-fallback", "messages": MESSAGES, "max_tokens": 64}
        before = stack.stats()["calls"]
        response = client.post(f"{stack.gateway_url}/chat/completions", headers=headers, json=body)
        response.raise_for_status()
        after = stack.stats()["calls"]
        per = {
            op: after.get(op, 0) - before.get(op, 0)
            for op in after
            if after.get(op, 0) != before.get(op, 0)
        }
        out["fallback (first call)"] = {
            "per_request": per,
            "total": sum(per.values()),
            "attempts": response.headers.get("x-forge-attempts"),
        }
    del plain_account
    return out


def busy_wallet(stack: Stack, clients: int = 50, per_client: int = 20) -> dict[str, Any]:
    """50 clients, one wallet that affords about 60% of what they ask; invariants after."""
    from forge.domain.records import utcnow
    from forge.ledger.reconcile import reconcile
    from forge.wiring import get_store

    body = {"model": "demo-official", "messages": MESSAGES, "max_tokens": 16}
    account_id, key = seed("0.02")  # about 600 of the 1,000 calls at ~33 µ each
    statuses: list[int] = []

    async def client_loop(http: httpx.AsyncClient) -> None:
        for _ in range(per_client):
            response = await http.post(
                f"{stack.gateway_url}/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
            )
            statuses.append(response.status_code)

    async def run() -> float:
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            started = time.perf_counter()
            await asyncio.gather(*(client_loop(http) for _ in range(clients)))
            return time.perf_counter() - started

    elapsed = asyncio.run(run())
    report = reconcile(get_store(), utcnow())
    from forge.domain.money import Bucket

    wallet = get_store().get_wallet(account_id, Bucket.CREDIT)
    return {
        "clients": clients,
        "requests": len(statuses),
        "seconds": round(elapsed, 2),
        "requests_per_second": round(len(statuses) / elapsed, 1),
        "served_per_second": round(statuses.count(200) / elapsed, 1),
        "served": statuses.count(200),
        "refused_402": statuses.count(402),
        "other": len(statuses) - statuses.count(200) - statuses.count(402),
        "balance_after": wallet.balance,
        "held_after": wallet.held,
        "reconciled": report.ok,
    }


def seed_run(calls: int, run_id: str, workers: int = 4) -> tuple[str, str]:
    """An account whose key made one run of `calls` calls, each reserved and settled through
    the store's real transactions (HTTP would spend an hour in the gateway to write them)."""

    from botocore.config import Config
    from botocore.session import get_session

    from forge.settings import get_settings
    from forge.store.dynamo.store import DynamoStore

    # Seeding is not what is measured: no 5 s timeout and no retry, so a pause of the big
    # emulator never turns into a retried transaction that finds its own work done.
    settings = get_settings()
    patient = Config(read_timeout=300, retries={"mode": "standard", "max_attempts": 1})
    client = get_session().create_client(
        "dynamodb", endpoint_url=settings.aws_endpoint_url, config=patient
    )
    store = DynamoStore(client, settings.budget_table, settings.ledger_table)
    return seed_calls(store, calls, run_id, workers)


def seed_calls(store: Any, calls: int, run_id: str, workers: int = 4) -> tuple[str, str]:
    """One run of `calls` reserved-and-settled calls on `store` (a DynamoStore)."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import timedelta

    from forge.domain.catalog import load_catalog
    from forge.domain.ids import new_id
    from forge.domain.money import Bucket, Usage, charge_for
    from forge.domain.records import Attempt, Hold, Receipt, utcnow
    from forge.money_in.accounts import create_account, credit_wallet, issue_key

    account_id = create_account(store, "bench views")
    credit_wallet(store, account_id, Bucket.CREDIT, "100000", source="bench", memo="bench")
    plaintext, key = issue_key(store, account_id)
    route = next(m for m in load_catalog().models if m.id == "demo-official").routes[0]

    def call(n: int) -> None:
        usage = Usage(input_tokens=200 + n % 50, cached_input_tokens=n % 20, output_tokens=64)
        charge = charge_for(usage, route.effective_prices)
        hold = Hold(
            request_id=new_id("req"),
            account_id=account_id,
            key_id=key.key_id,
            project_id=key.project_id,
            requested_model="demo-official",
            run_id=run_id,
            bucket=Bucket.CREDIT,
            amount=charge + 1_000,
            expires_at=utcnow() + timedelta(minutes=16),
        )
        store.reserve(hold)
        attempt = Attempt(
            route=route.name,
            upstream_model=route.upstream_model,
            status=200,
            latency_ms=12,
            outcome="ok",
        )
        receipt = Receipt(
            request_id=hold.request_id,
            account_id=account_id,
            key_id=key.key_id,
            project_id=key.project_id,
            run_id=run_id,
            requested_model="demo-official",
            status="succeeded",
            attempts=[attempt],
            final_route=route.name,
            route_type=route.route_type,
            upstream_model=route.upstream_model,
            usage=usage,
            prices=route.effective_prices,
            hold=hold.amount,
            bucket=Bucket.CREDIT,
        )
        store.settle(hold, charge, receipt)

    # A few threads: their reservations overlap; settles of the one wallet take turns anyway.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(call, range(calls)))
    return account_id, plaintext


def views_at_scale(stack: Stack, calls: int, samples: int) -> dict[str, Any]:
    """One run of `calls` calls, then the run view (its first page of 100 calls and its
    totals) and this month's usage, each fetched `samples` times through the gateway's HTTP
    app; with the time the gateway spent waiting on the (emulated) store, and its calls."""
    run_id = "bench-run-at-scale"
    started = time.perf_counter()
    _, key = seed_run(calls, run_id)
    seeded = time.perf_counter() - started
    headers = {"Authorization": f"Bearer {key}"}
    paths = {"run_view": f"/runs/{run_id}", "usage_view": "/usage"}
    out: dict[str, Any] = {"calls": calls, "samples": samples, "seed_seconds": round(seeded, 1)}
    with httpx.Client(base_url=stack.gateway_url, headers=headers, timeout=300) as client:
        for name, path in paths.items():
            client.get(path).raise_for_status()  # warm the key cache
            before = stack.stats()
            timings = []
            for _ in range(samples):
                began = time.perf_counter()
                response = client.get(path)
                timings.append(time.perf_counter() - began)
                response.raise_for_status()
            after = stack.stats()
            [total] = response.json()["totals"]
            assert total["requests"] == calls, total  # the totals are the whole run's
            out[name] = {
                **_summary_ms(timings),
                "gateway_cpu_ms": round(
                    (after["cpu_seconds"] - before["cpu_seconds"]) / samples * 1000, 3
                ),
                "store_wait_ms": round(
                    (after["wait_seconds"] - before["wait_seconds"]) / samples * 1000, 3
                ),
                "store_calls": {
                    op: round((n - before["calls"].get(op, 0)) / samples, 2)
                    for op, n in after["calls"].items()
                    if n != before["calls"].get(op, 0)
                },
            }
    return out


_IMPORT_HANDLER = """
import importlib.util, time
started = time.perf_counter()
spec = importlib.util.spec_from_file_location("app", {path!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(time.perf_counter() - started)
"""

_PAID_MANGUM = """
import time
started = time.perf_counter()
from mangum import Mangum
from forge.api import create_paid_app
handler = Mangum(create_paid_app(), lifespan="off")
print(time.perf_counter() - started)
"""

# What the proxy builds before its first paid answer, as the baseline builds its clients:
# `python -m uvicorn`'s module, the paid app, the store's client, the gateway (providers,
# catalog) and one upstream HTTP client.
_PROXY_READY = """
import time
started = time.perf_counter()
import uvicorn.main
from forge.api import create_paid_app
app = create_paid_app()
import httpx
from forge import wiring
store, gateway, upstream = wiring.get_store(), wiring.get_gateway(), httpx.AsyncClient()
print(time.perf_counter() - started)
"""

_BASELINE = """
import time
started = time.perf_counter()
import boto3, fastapi, httpx, mangum, pydantic
from aws_lambda_powertools import Logger, Metrics, Tracer
app = fastapi.FastAPI()
handler = mangum.Mangum(app)
client = boto3.client("dynamodb", region_name="us-east-1")
http = httpx.Client()
logger, metrics, tracer = Logger(), Metrics(namespace="bench"), Tracer(disabled=True)
print(time.perf_counter() - started)
"""


def _cold_env() -> dict[str, str]:
    return {
        **os.environ,
        "BUDGET_TABLE": "b",
        "LEDGER_TABLE": "l",
        "ARCHIVE_BUCKET": "a",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_SERVICE_NAME": "bench",
    }


def _timed_run(command: list[str], env: dict[str, str]) -> float:
    """Seconds the command prints as its last line (it times itself)."""
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def _interleaved_ms(
    variants: dict[str, tuple[list[str], dict[str, str]]], runs: int
) -> dict[str, float]:
    """Median of `runs` fresh interpreters per variant, the variants taking turns, so a burst of
    other work on the machine falls on all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs):
        for name, (command, env) in variants.items():
            samples[name].append(_timed_run(command, env))
    return {name: round(statistics.median(s) * 1000, 1) for name, s in samples.items()}


PROXY_READY = "proxy: uvicorn module, paid app, store client, gateway, one upstream client"


def cold_starts(runs: int = 10) -> dict[str, Any]:
    """Import + init of each handler in a fresh interpreter (median of `runs`), timed from
    the first line of its code (the interpreter's own start is in no row but run.sh's)."""
    env = _cold_env()
    python = [sys.executable, "-c"]
    variants = {
        handler.parent.name: ([*python, _IMPORT_HANDLER.format(path=str(handler))], env)
        for handler in sorted((ROOT / "functions").glob("*/app.py"))
    }
    variants["proxy: Mangum handler over create_paid_app (the old shape)"] = (
        [*python, _PAID_MANGUM],
        env,
    )
    variants[PROXY_READY] = ([*python, _PROXY_READY], env)
    variants["baseline_naive"] = ([*python, _BASELINE], env)
    out = _interleaved_ms(variants, runs)
    out["proxy: run.sh (uvicorn up, first answer)"] = round(
        statistics.median(_uvicorn_cold_start(env) for _ in range(runs)) * 1000, 1
    )
    baseline = out["baseline_naive"]
    return {
        "runs": runs,
        "median_ms": out,
        "ratio_to_baseline": {
            name: round(ms / baseline, 2) for name, ms in out.items() if name.startswith("proxy")
        },
    }


def cold_start_levers(runs: int, before_ref: str | None) -> dict[str, Any]:
    """Before and after of each cold-start lever, the proxy's figure (PROXY_READY) each time.

    - bytecode: the layer as `make build` makes it (.aws-sam/build), run as Lambda runs it
      (python3.12 -S -B: the layer only, nothing written), with its .pyc files and a copy
      without them (what a build without the compile step ships);
    - imports (with `before_ref`): this checkout's forge package against `before_ref`'s, in
      this venv."""
    import shutil
    import tempfile

    from forge_tools.native import runnable_copy

    out: dict[str, Any] = {"runs": runs}
    env = _cold_env()
    built = ROOT / ".aws-sam" / "build" / "ForgeLayer"
    python312 = subprocess.run(
        ["bash", str(ROOT / "tools" / "sam.sh"), "--python312"], capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as scratch:
        if built.is_dir() and python312:
            # Built for arm64: its native extensions swapped for this machine's (same versions).
            cache = ROOT / ".aws-sam" / "host-wheels"
            layer = runnable_copy(built, "python", Path(scratch) / "layer", python312, cache)
            layer = layer / "python"
            bare = Path(scratch) / "layer-without-pyc"
            shutil.copytree(layer, bare, ignore=shutil.ignore_patterns("__pycache__"))
            # The baseline's Tracer needs the X-Ray SDK, which the layer does not ship: beside
            # it, as source only, and compiled like the layer.
            xray, xray_pyc = Path(scratch) / "xray", Path(scratch) / "xray-pyc"
            pip = [python312, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile"]
            subprocess.run([*pip, "--target", str(xray), "aws-xray-sdk", "wrapt"], check=True)
            shutil.copytree(xray, xray_pyc)
            compile_all = [python312, "-m", "compileall", "-q", "--invalidation-mode"]
            subprocess.run([*compile_all, "unchecked-hash", str(xray_pyc)], check=True)

            def on(path: str, code: str) -> tuple[list[str], dict[str, str]]:
                return [python312, "-S", "-B", "-c", code], {**env, "PYTHONPATH": path}

            measured = _interleaved_ms(
                {
                    "proxy, source only": on(str(bare), _PROXY_READY),
                    "proxy, with .pyc": on(str(layer), _PROXY_READY),
                    "baseline_naive, source only": on(f"{bare}:{xray}", _BASELINE),
                    "baseline_naive, with .pyc": on(f"{layer}:{xray_pyc}", _BASELINE),
                },
                runs,
            )
            out["bytecode in the layer (python3.12, the built layer only)"] = {
                "before": measured["proxy, source only"],
                "after": measured["proxy, with .pyc"],
            }
            out["on the built layer"] = {
                **measured,
                "proxy with .pyc / baseline_naive source only": round(
                    measured["proxy, with .pyc"] / measured["baseline_naive, source only"], 2
                ),
                "proxy with .pyc / baseline_naive with .pyc": round(
                    measured["proxy, with .pyc"] / measured["baseline_naive, with .pyc"], 2
                ),
            }
        else:
            out["bytecode in the layer"] = "not measured: run `make build` first"
        if before_ref:
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", before_ref, "layers/forge/forge"],
                capture_output=True,
                check=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", scratch], input=archive, check=True)
            before = str(Path(scratch) / "layers" / "forge")
            proxy = [sys.executable, "-c", _PROXY_READY]
            measured = _interleaved_ms(
                {
                    "before": (proxy, {**env, "PYTHONPATH": before}),
                    "after": (proxy, {**env, "PYTHONPATH": str(ROOT / "layers" / "forge")}),
                },
                runs,
            )
            out[f"imports only what the path uses (forge of {before_ref} vs this checkout)"] = (
                measured
            )
    return out


def _uvicorn_cold_start(env: dict[str, str]) -> float:
    """What the Web Adapter waits for: run.sh's uvicorn from exec to its first answer (an
    unauthenticated GET /v1/models, which imports and builds everything a call needs but the
    store and upstream clients)."""
    port = _free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "forge.api:create_paid_app", "--factory"),
            *("--port", str(port), "--lifespan", "off", "--log-level", "warning"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)
                return time.perf_counter() - started
            except httpx.TransportError:
                if process.poll() is not None:
                    raise RuntimeError("uvicorn exited") from None
                time.sleep(0.005)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _timing_row(label: str, timing: dict[str, float], bold: bool = False) -> str:
    median, p99 = f"{timing['median_ms']} ms", f"{timing['p99_ms']} ms"
    if bold:
        label, median, p99 = f"**{label}**", f"**{median}**", f"**{p99}**"
    return _row(label, median, p99)


def _calls(case: dict[str, Any]) -> str:
    detail = ", ".join(f"{op} {n}" for op, n in sorted(case["per_request"].items()))
    return f"{case['total']} ({detail})"


def write_report(results: dict[str, Any]) -> None:
    """Replace the measured section of docs/performance.md (between the bench markers)."""
    o, rt, cs, bw, vs = (
        results[k]
        for k in ("overhead", "round_trips", "cold_start", "busy_wallet", "views_at_scale")
    )
    lines = [
        "<!-- bench:start (written by `make bench`; edit outside these markers) -->",
        f"Measured {results['measured_at']} on {results['machine']}"
        f" (load average {results['load_average_at_start']} at the start).",
        "",
        _row("gateway overhead (same demo upstream, 127.0.0.1)", "median", "p99"),
        _row("---", "---", "---"),
        _timing_row("direct to upstream, non-stream", o["direct"]),
        _timing_row("through the gateway, non-stream", o["gateway"]),
        _timing_row("added by the gateway", o["added"], bold=True),
        _timing_row("stream time to first byte, direct", o["stream_ttfb_direct"]),
        _timing_row("stream time to first byte, through the gateway", o["stream_ttfb_gateway"]),
        "",
        f"Per request the gateway process spent **{o['gateway_cpu_ms_per_request']} ms of CPU**"
        f" and **{o['store_wait_ms_per_request']} ms waiting on the (emulated) budget store**"
        f" ({o['requests']} sequential requests).",
        "",
        _row("storage round trips per request", "calls"),
        _row("---", "---"),
        *(_row(name, _calls(case)) for name, case in rt.items()),
        "",
        _row("cold start: import + init, fresh interpreter", "median", "÷ baseline_naive"),
        _row("---", "---", "---"),
        *(
            _row(name, f"{ms} ms", cs["ratio_to_baseline"].get(name, ""))
            for name, ms in cs["median_ms"].items()
        ),
        "",
        _row(f"cold-start lever (`{PROXY_READY}`)", "before", "after"),
        _row("---", "---", "---"),
        *(
            _row(name, f"{m['before']} ms", f"{m['after']} ms")
            if isinstance(m, dict)
            else _row(name, m, "")
            for name, m in cs["levers"].items()
            if name not in ("runs", "on the built layer")
        ),
        "",
        _row("on the built layer (python3.12 -S -B, as Lambda runs it)", "median or ratio"),
        _row("---", "---"),
        *(
            _row(name, f"{v} ms" if "/" not in name else f"**{v}**")
            for name, v in cs["levers"].get("on the built layer", {}).items()
        ),
        "",
        f"Busy wallet: {bw['clients']} clients, {bw['requests']} requests in {bw['seconds']} s"
        f" = {bw['requests_per_second']} req/s ({bw['served_per_second']} served/s);"
        f" {bw['served']} served, {bw['refused_402']} refused with 402, {bw['other']} other;"
        f" balance after {bw['balance_after']} µ, held {bw['held_after']} µ,"
        f" reconciled: {bw['reconciled']}.",
        "",
        _row(
            f"account views over one run of {vs['calls']:,} calls ({vs['samples']} GETs each)",
            "median",
            "p99",
            "gateway CPU",
            "waiting on the store",
            "store calls",
        ),
        _row("---", "---", "---", "---", "---", "---"),
        *(
            _row(
                f"`GET /v1/{label}`",
                f"{view['median_ms']} ms",
                f"{view['p99_ms']} ms",
                f"{view['gateway_cpu_ms']} ms",
                f"{view['store_wait_ms']} ms",
                ", ".join(f"{op} {n}" for op, n in sorted(view["store_calls"].items())),
            )
            for label, view in (("runs/{id}", vs["run_view"]), ("usage", vs["usage_view"]))
        ),
        "<!-- bench:end -->",
    ]
    head, _, rest = REPORT.read_text().partition("<!-- bench:start")
    _, _, tail = rest.partition("<!-- bench:end -->")
    REPORT.write_text(head + "\n".join(lines) + tail)


def main() -> None:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="fewer requests (smoke run)")
    parser.add_argument("--calls", type=int, default=10_000, help="calls in the views' run")
    parser.add_argument("--view-samples", type=int, default=100)
    parser.add_argument(
        "--cold-start-before",
        metavar="REF",
        help="also measure the import lever: this checkout's forge against REF's (e.g. main)",
    )
    parser.add_argument(
        "--cold-start-only",
        action="store_true",
        help="only the cold starts and their levers; print the figures, write nothing",
    )
    parser.add_argument(
        "--views-only",
        action="store_true",
        help="only the views at scale; print the figures, write nothing (before/after runs)",
    )
    args = parser.parse_args()
    requests = 40 if args.quick else args.requests
    calls, samples = (500, 20) if args.quick else (args.calls, args.view_samples)
    cold_runs = 3 if args.quick else 10
    if args.cold_start_only:
        cold = cold_starts(cold_runs)
        cold["levers"] = cold_start_levers(cold_runs, args.cold_start_before)
        print(json.dumps(cold, indent=2))
        return
    if args.views_only:
        with running_stack() as stack:
            print(json.dumps(views_at_scale(stack, calls, samples), indent=2))
        return
    results: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}",
        # Other work on the machine (a shared one: other test runs) shows in every figure.
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }
    with running_stack() as stack:
        results["overhead"] = overhead(stack, requests)
        results["round_trips"] = round_trips(stack)
        results["busy_wallet"] = busy_wallet(stack, per_client=5 if args.quick else 20)
        results["views_at_scale"] = views_at_scale(stack, calls, samples)
    results["cold_start"] = cold_starts(cold_runs)
    results["cold_start"]["levers"] = cold_start_levers(cold_runs, args.cold_start_before)
    if RESULTS.is_file():  # `make bench-peers` writes its own part
        results = {
            **{k: v for k, v in json.loads(RESULTS.read_text()).items() if k == "peers"},
            **results,
        }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    write_report(results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
