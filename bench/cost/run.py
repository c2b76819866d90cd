"""The measured run behind `make cost`: paid calls through the proxy's real app, and what each
one costs in AWS requests, counted where the code makes them.

Everything runs in this process on 127.0.0.1: the embedded emulator (DynamoDB, its ledger
stream, S3) with template.yaml's tables and bucket; the demo provider as the upstream, under
uvicorn; the proxy's app (`create_paid_app()`, as functions/proxy/run.sh serves it) under
uvicorn, with the environment template.yaml gives the proxy. A `CapacityRecorder` sits on the
DynamoDB client every store of the app is built from (forge.wiring), an `OperationCounter`
on its S3 client. After the calls, the ledger stream the run produced goes through
template.yaml's event filter to the archiver's real handler, in batches of the template's
BatchSize, and one statement is built for the account, as the statement function builds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import platform
import secrets
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bench.cost.recorder import CapacityRecorder, StoreCall, summarize

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
MODEL = "demo-official"
MESSAGES = [{"role": "user", "content": "Benchmark me: what does a paid call cost the operator?"}]
BODY = {"model": MODEL, "messages": MESSAGES, "max_tokens": 64}


# Counting ------------------------------------------------------------------------------------
class OperationCounter:
    """Counts the API calls a botocore client makes, by operation and by the first segment of
    the key or prefix they name ("PutObject ledger/"): failed calls too, which S3 bills."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()

    def install(self) -> OperationCounter:
        prefix = self._client.meta.service_model.service_id.hyphenize()
        self._client.meta.events.register(f"provide-client-params.{prefix}", self._count)
        return self

    def _count(self, params: Mapping[str, Any], model: Any, **_: Any) -> None:
        named = str(params.get("Key") or params.get("Prefix") or "")
        where = f" {named.split('/', 1)[0]}/" if "/" in named else ""
        with self._lock:
            self.calls[f"{model.name}{where}"] += 1

    def take(self) -> dict[str, int]:
        with self._lock:
            taken, self.calls = dict(self.calls), Counter()
        return taken


class CountingStream(io.TextIOBase):
    """Stands in for stdout or stderr: counts the UTF-8 bytes written (what CloudWatch Logs
    would ingest from the function's output), passing nothing on."""

    def __init__(self) -> None:
        self.bytes = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self.bytes += len(text.encode("utf-8"))
        return len(text)

    def writable(self) -> bool:
        return True


# The stack -----------------------------------------------------------------------------------
@contextmanager
def serving(app: Any, name: str) -> Iterator[str]:
    """`app` under uvicorn on 127.0.0.1 in a thread of its own (its own event loop)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(server.serve(),), daemon=True, name=name
    )
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(_close_upstream_pool(), loop).result(timeout=10)
        server.should_exit = True
        thread.join(timeout=10)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _close_upstream_pool() -> None:
    from forge.providers import http as upstream_http

    for client in upstream_http._pools.pop(asyncio.get_running_loop(), {}).values():
        await client.aclose()


def proxy_environment(template: Mapping[str, Any]) -> dict[str, str]:
    """The literal environment template.yaml gives the proxy (Globals, then its own); values
    that are intrinsics (table names, the secret) and the Web Adapter's own are left out."""
    resources = template["Resources"]
    merged = {
        **template.get("Globals", {})
        .get("Function", {})
        .get("Environment", {})
        .get("Variables", {}),
        **resources["ProxyFunction"]["Properties"].get("Environment", {}).get("Variables", {}),
    }
    return {k: v for k, v in merged.items() if isinstance(v, str) and not k.startswith("AWS_")}


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def counted_output() -> Iterator[CountingStream]:
    """stdout and stderr counted (and swallowed) for the duration: the EMF metric lines and
    any log line the app writes."""
    sink = CountingStream()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield sink


# One paid call -------------------------------------------------------------------------------
@dataclass
class Call:
    """One paid call: how long it took, what it sent back, what it cost in store calls and
    in output bytes (log lines)."""

    stream: bool
    gateway_seconds: float
    response_bytes: int
    request_id: str
    status: int
    completion_tokens: int
    store_calls: list[StoreCall]
    output_bytes: int

    def as_json(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "status": self.status,
            "gateway_ms": round(self.gateway_seconds * 1000, 3),
            "response_bytes": self.response_bytes,
            "completion_tokens": self.completion_tokens,
            "output_bytes": self.output_bytes,
            "store": summarize(self.store_calls),
        }


_SUMMED = ("response_bytes", "completion_tokens", "output_bytes", "gateway_ms")
_STORE_SUMMED = ("round_trips", "table_wru", "gsi_wru", "rru")


def summarize_calls(calls: list[Call]) -> dict[str, Any]:
    """A group of calls: their count, the mean and range of each figure, and the first call
    in full (its transactions item by item) as the example."""
    rows = [c.as_json() for c in calls]
    values = {k: [float(r[k]) for r in rows] for k in _SUMMED}
    values |= {k: [float(r["store"][k]) for r in rows] for k in _STORE_SUMMED}
    return {
        "count": len(rows),
        "streamed": sum(1 for c in calls if c.stream),
        "mean": {k: statistics.fmean(v) for k, v in values.items()},
        "response_bytes_by_kind": {
            kind: statistics.fmean(r["response_bytes"] for r in picked)
            for kind, picked in (
                ("non_stream", [r for r in rows if not r["stream"]]),
                ("stream", [r for r in rows if r["stream"]]),
            )
            if picked
        },
        "range": {k: [min(v), max(v)] for k, v in values.items()},
        "failed_store_calls": sum(r["store"]["failed_calls"] for r in rows),
        "example": rows[0],
    }


def _header_bytes(response: httpx.Response) -> int:
    """The response's status line and headers as sent on the wire (HTTP/1.1)."""
    lines = [f"HTTP/1.1 {response.status_code} {response.reason_phrase}"]
    lines += [f"{k}: {v}" for k, v in response.headers.items()]
    return len(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


@dataclass
class Answer:
    seconds: float  # to the last byte
    response: httpx.Response
    body: bytes
    wire_bytes: int  # status line, headers and body
    completion_tokens: int


def _call(client: httpx.Client, url: str, headers: Mapping[str, str], stream: bool) -> Answer:
    """One chat completion, read to its last byte."""
    body: dict[str, Any] = {**BODY, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    started = time.perf_counter()
    with client.stream("POST", url, headers=headers, json=body) as response:
        raw = b"".join(response.iter_raw())
        elapsed = time.perf_counter() - started
    tokens = 0
    if stream:
        for line in raw.decode("utf-8").splitlines():
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage")
                tokens = int(usage["completion_tokens"]) if usage else tokens
    elif response.status_code == 200:
        tokens = int(json.loads(raw)["usage"]["completion_tokens"])
    return Answer(elapsed, response, raw, _header_bytes(response) + len(raw), tokens)


# The run -------------------------------------------------------------------------------------
def measure(requests: int) -> dict[str, Any]:
    """The raw figures of a run: `requests` non-streamed and `requests` streamed plain paid
    calls (after one of each in a fresh container), `requests` calls of each variant (with an
    Idempotency-Key; with every envelope and a run), `requests` of each kind timed against
    the upstream direct, and everything downstream of them."""
    from forge_tools.emulator import Emulator
    from forge_tools.template import load_template

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per emulator request
    template = load_template(TEMPLATE)
    emulator = Emulator().start()
    try:
        resources = emulator.create_resources(TEMPLATE, prefix=f"cost{secrets.token_hex(3)}")
        from forge.providers.demo import create_demo_app

        with serving(create_demo_app(), "cost-demo-upstream") as demo_url:
            env = {
                **proxy_environment(template),
                **resources.environment(),
                "FORGE_DEMO_BASE_URL": f"{demo_url}/v1",
                # The recorder hooks botocore's events; the wire client sends the very same
                # calls (tests/contract runs the adapters through both).
                "FORGE_DYNAMO_CLIENT": "botocore",
            }
            with environment(env):
                return _measure(requests, emulator, resources, template, demo_url)
    finally:
        emulator.stop()


def _measure(
    requests: int, emulator: Any, resources: Any, template: Mapping[str, Any], demo_url: str
) -> dict[str, Any]:
    from forge import wiring
    from forge.api import create_paid_app
    from forge.store.dynamo.store import DynamoStore

    wiring.clear()
    reader = emulator.client("dynamodb")  # seeding, receipts, item images: never recorded
    recorder = CapacityRecorder(wiring.dynamodb_client(), reader).install()
    s3 = OperationCounter(wiring.s3_client()).install()
    budget, ledger = resources.tables["BudgetTable"], resources.tables["LedgerTable"]
    seeding = DynamoStore(reader, budget, ledger)
    plain = _seed(seeding)
    enveloped = _seed(seeding, every_envelope=True)
    seeded = ledger_stream(emulator, ledger)["summary"]["by_kind"]

    with (
        counted_output() as output,
        serving(create_paid_app(), "cost-proxy") as proxy_url,
        httpx.Client(timeout=60) as client,
    ):
        run = _Run(client, proxy_url, demo_url, seeding, recorder, output)
        # A fresh container's first calls (key, catalog and settings reads), then the
        # steady state: `requests` calls of each kind.
        first = [run.paid(plain, stream=False), run.paid(plain, stream=True)]
        calls = [run.paid(plain, stream=False) for _ in range(requests)]
        calls += [run.paid(plain, stream=True) for _ in range(requests)]
        variants = {
            "plain": calls,
            "with an Idempotency-Key": [
                run.paid(plain, stream=False, idempotency_key=True) for _ in range(requests)
            ],
            "every envelope and a run": run.warm_then(enveloped, requests),
        }
        # Timing without the recorder (its item reads would count as the gateway's time).
        with recorder.paused():
            timings = [
                run.timed(plain, stream) for stream in (False, True) for _ in range(requests)
            ]
    failed = [c for c in first + calls if c.status != 200]
    if failed:
        raise RuntimeError(f"{len(failed)} paid calls failed: {failed[0].status}")
    recorder.take()
    s3.take()

    stream = ledger_stream(emulator, ledger)
    made = Counter(stream["summary"]["by_kind"])
    made.subtract(seeded)
    stream["summary"]["by_the_calls"] = {k: n for k, n in made.items() if n}
    stream["summary"]["paid_calls"] = run.paid_calls
    archiver = run_archiver(template, stream, s3)
    statement = build_statement(plain.account_id, recorder, s3)
    wiring.clear()
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}",
        "requests_per_kind": requests,
        "body": BODY,
        "first_calls": [c.as_json() for c in first],
        "calls": summarize_calls(calls),
        "variants": {name: summarize_calls(made) for name, made in variants.items()},
        "overhead": _overhead(timings),
        "stream": stream["summary"],
        "archiver": archiver,
        "statement": statement,
    }


@dataclass
class _Caller:
    account_id: str
    headers: dict[str, str]


def _seed(store: Any, *, every_envelope: bool = False) -> _Caller:
    """An account with credit and a key; `every_envelope`: key caps (daily, monthly, total,
    run budget, per-request maximum) and project caps set, and its calls in a budgeted run."""
    from forge.domain.money import Bucket
    from forge.domain.records import KeyCaps, ProjectCaps
    from forge.money_in.accounts import create_account, credit_wallet, issue_key

    account_id = create_account(store, "cost")
    credit_wallet(store, account_id, Bucket.CREDIT, "1000", source="bench", memo="cost")
    if not every_envelope:
        return _Caller(account_id, {"Authorization": f"Bearer {issue_key(store, account_id)[0]}"})
    big = 10**9
    caps = KeyCaps(daily=big, monthly=big, total=big, run_budget=big, max_request_charge=10**8)
    key, _ = issue_key(store, account_id, project_id="cost", caps={Bucket.CREDIT: caps})
    store.put_project_caps(account_id, "cost", {Bucket.CREDIT: ProjectCaps(daily=big, monthly=big)})
    headers = {
        "Authorization": f"Bearer {key}",
        "X-Run-Id": "cost-run",
        "X-Run-Budget": "1000",
        "X-Max-Request-Charge": "100",
    }
    return _Caller(account_id, headers)


@dataclass
class _Run:
    client: httpx.Client
    proxy_url: str
    demo_url: str
    store: Any  # unrecorded: receipts are awaited through it
    recorder: CapacityRecorder
    output: CountingStream
    paid_calls: int = 0  # every paid call made, recorded or timed

    def paid(self, caller: _Caller, *, stream: bool, idempotency_key: bool = False) -> Call:
        """One paid call, and everything it cost once its receipt is written (a stream
        settles after its last byte)."""
        headers = dict(caller.headers)
        if idempotency_key:
            headers["Idempotency-Key"] = secrets.token_hex(16)
        written = self.output.bytes
        self.paid_calls += 1
        answer = _call(self.client, f"{self.proxy_url}/v1/chat/completions", headers, stream)
        request_id = answer.response.headers.get("x-request-id", "")
        deadline = time.monotonic() + 10
        while self.store.get_receipt(caller.account_id, request_id) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no receipt for {request_id}: {answer.response.status_code}"
                    f" {answer.body[:500]!r}"
                )
            time.sleep(0.005)
        self.recorder.wait_idle()
        return Call(
            stream=stream,
            gateway_seconds=answer.seconds,
            response_bytes=answer.wire_bytes,
            request_id=request_id,
            status=answer.response.status_code,
            completion_tokens=answer.completion_tokens,
            store_calls=self.recorder.take(),
            output_bytes=self.output.bytes - written,
        )

    def warm_then(self, caller: _Caller, requests: int) -> list[Call]:
        """A first call (the new key's lookups, not counted), then `requests` calls."""
        self.paid(caller, stream=False)
        return [self.paid(caller, stream=False) for _ in range(requests)]

    def timed(self, caller: _Caller, stream: bool) -> tuple[bool, float, float]:
        """(stream, seconds through the gateway, seconds direct to the same upstream)."""
        self.paid_calls += 1
        through = _call(
            self.client, f"{self.proxy_url}/v1/chat/completions", caller.headers, stream
        )
        direct = _call(
            self.client,
            f"{self.demo_url}/v1/chat/completions",
            {"Authorization": "Bearer demo"},
            stream,
        )
        return stream, through.seconds, direct.seconds


def _overhead(timings: list[tuple[bool, float, float]]) -> dict[str, Any]:
    """What the gateway adds to a call's duration: median through it minus median direct to
    the same upstream (as `make bench` measures it), per kind, to the last byte."""
    out: dict[str, Any] = {}
    for kind, stream in (("non_stream", False), ("stream", True)):
        picked = [t for t in timings if t[0] is stream]
        gateway = statistics.median(t[1] for t in picked) * 1000
        direct = statistics.median(t[2] for t in picked) * 1000
        out[kind] = {
            "calls": len(picked),
            "gateway_median_ms": round(gateway, 3),
            "direct_median_ms": round(direct, 3),
            "added_ms": round(max(gateway - direct, 0.0), 3),
        }
    return out


# Downstream of the calls ---------------------------------------------------------------------
def ledger_stream(emulator: Any, table: str) -> dict[str, Any]:
    """Every record the run put on the ledger table's stream, as Lambda delivers them."""
    from forge_tools.emulator import REGION
    from forge_tools.lambda_local import to_lambda_record

    dynamodb, streams = emulator.client("dynamodb"), emulator.client("dynamodbstreams")
    arn = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    records: list[dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            records += [to_lambda_record(r, arn, REGION) for r in page["Records"]]
            iterator = page.get("NextShardIterator") if page["Records"] else None
    kinds = Counter(f"{r['eventName']} {_record_kind(r)}" for r in records)
    return {"records": records, "summary": {"records": len(records), "by_kind": dict(kinds)}}


def _record_kind(record: Mapping[str, Any]) -> str:
    """An item's record_type. moto's INSERT for an item an update creates (a usage cell, a
    run total) carries only the item's keys, where DynamoDB sends the whole new image: those
    say "(keys only)"; the archiver's filter drops them either way."""
    image = record["dynamodb"].get("NewImage") or {}
    if "record_type" in image:
        return str(image["record_type"]["S"])
    return "(keys only)" if set(image) <= {"pk", "sk"} else "(no record_type)"


def matches(pattern: Any, value: Any) -> bool:
    """Lambda's event filter pattern, in the subset template.yaml uses: nested objects whose
    leaves are lists of allowed values."""
    if isinstance(pattern, list):
        return value in pattern
    if not isinstance(pattern, dict) or not isinstance(value, dict):
        return False
    return all(k in value and matches(p, value[k]) for k, p in pattern.items())


def archiver_source(template: Mapping[str, Any]) -> dict[str, Any]:
    """The archiver's stream event source as template.yaml declares it."""
    events = template["Resources"]["ArchiverFunction"]["Properties"]["Events"]
    return dict(events["LedgerStream"]["Properties"])


def run_archiver(
    template: Mapping[str, Any], stream: Mapping[str, Any], s3: OperationCounter
) -> dict[str, Any]:
    """The archiver's real handler over what passes the template's filter, in batches of its
    BatchSize; its S3 calls counted and each invocation timed."""
    from forge_tools.lambda_local import LambdaContext, load_handler_module

    source = archiver_source(template)
    filters = [json.loads(f["Pattern"]) for f in source["FilterCriteria"]["Filters"]]
    delivered = [r for r in stream["records"] if any(matches(f, r) for f in filters)]
    batch_size = int(source["BatchSize"])
    handler = load_handler_module("archiver").handler
    s3.take()
    # The first record alone, as a fresh container meets it (clients built on first use);
    # then the rest in full batches: the warm invocations a busy stream makes.
    batches = [delivered[:1]] + [
        delivered[start : start + batch_size] for start in range(1, len(delivered), batch_size)
    ]
    timings = []
    with counted_output() as output:
        for batch in batches:
            began = time.perf_counter()
            event = {"Records": batch}
            answer = handler(event, LambdaContext(function_name="ArchiverFunction"))
            timings.append({"records": len(batch), "ms": (time.perf_counter() - began) * 1000})
            if answer["batchItemFailures"]:
                raise RuntimeError(f"the archiver failed {answer['batchItemFailures']}")
    calls = s3.take()
    return {
        "batch_size": batch_size,
        "batching_window_seconds": source.get("MaximumBatchingWindowInSeconds"),
        "filter": filters,
        "delivered_records": len(delivered),
        "invocations": timings,
        "warm_ms_per_record": round(
            sum(t["ms"] for t in timings[1:]) / max(sum(t["records"] for t in timings[1:]), 1),
            3,
        ),
        "s3_calls": calls,
        "output_bytes": output.bytes,
    }


def build_statement(
    account_id: str, recorder: CapacityRecorder, s3: OperationCounter
) -> dict[str, Any]:
    """One final statement of the run's month for the run's account, as the statement
    function builds it (from the archive, checked against the ledger table)."""
    from forge.domain.calendar import Month
    from forge.ledger.statements import ensure_statement
    from forge.wiring import get_archive, get_ledger_views

    month = Month.of(datetime.now(UTC))
    archive = get_archive()
    entries = len(archive.entries(account_id, through=month))
    s3.take()
    recorder.take()
    ensure_statement(
        archive, get_ledger_views(), account_id, month, now=month.end + timedelta(hours=2)
    )
    recorder.wait_idle()
    store = recorder.take()
    return {
        "month": str(month),
        "entries": entries,
        "s3_calls": s3.take(),
        "dynamodb": summarize(store),
    }


if __name__ == "__main__":  # a raw run, printed: python -m bench.cost.run [requests]
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 3), indent=2))
