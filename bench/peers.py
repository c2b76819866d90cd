"""`make bench-peers`: Forge beside LiteLLM's proxy, each in front of the same fake upstream, driven
by the same load generator with the same request, interleaved in one run.

The targets, each its own process on 127.0.0.1:
- `direct`: the demo upstream itself (the others' added latency is measured against it);
- `forge`: the gateway on the embedded emulator (moto, in its own process: three store round
  trips per call, each a local HTTP call that moto answers in several ms of Python);
- `forge_twin`: the same gateway on the in-memory twin, each DynamoDB call answered after a
  fixed latency (`--store-latency-ms`, 4 by default) behind the store client the stack deploys
  (forge.store.dynamo.wire; only its connection pool is replaced: bench/servers.py
  TwinEndpoint); the twin's own CPU is taken out;
- `forge_twin_botocore`: the same, behind botocore's client (only the socket replaced): the
  store client lever's "before";
- `litellm`: LiteLLM's proxy from .venv-peers, pinned by the Makefile, without a database (so
  no virtual keys, budgets or spend tracking: only its master key is checked).

CPU is each server process's utime+stime from /proc (all its threads and children), not wall
time, with the CPU the process burns while idle (measured first) taken out. Writes the `peers`
part of bench/results.json and the section of docs/performance.md between the peers markers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.__main__ import (
    MESSAGES,
    REPORT,
    RESULTS,
    ROOT,
    _free_port,
    _percentile,
    _row,
    _wait_http,
    running_stack,
    seed,
)

# Absolute, not resolved: the venv's python is a symlink to the interpreter it was made from.
PEERS_PYTHON = Path(
    os.path.abspath(os.environ.get("PEERS_PYTHON", ROOT / ".venv-peers/bin/python"))
)
COMPROMISED = ("1.82.7", "1.82.8")  # LiteLLM releases that shipped malware: never run them
BODY = {"messages": MESSAGES, "max_tokens": 64}
TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """utime+stime in seconds of `pid` and every process below it (threads are included)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICK
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(p, 0.0) for p in tree)


@dataclass
class Target:
    """One server under test: where to call it, and how to read its CPU."""

    name: str
    base_url: str
    headers: dict[str, str]
    model: str
    pid: int
    # CPU of this process that is not the server's own work (the twin standing for DynamoDB).
    excluded_cpu: Callable[[], float] = lambda: 0.0
    idle_cpu_per_second: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)

    def cpu(self) -> tuple[float, float]:
        """The process's CPU less the excluded part, and the excluded part."""
        excluded = self.excluded_cpu()  # its stats call first: its own CPU falls outside
        return process_cpu(self.pid) - excluded, excluded

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"


class CpuWindow:
    """Each target's CPU over one phase, less what it burns idle over the phase's wall time."""

    def __init__(self, targets: list[Target]) -> None:
        self.targets = targets

    def __enter__(self) -> CpuWindow:
        self.before = {t.name: t.cpu() for t in self.targets}
        self.started = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self.started
        after = {t.name: t.cpu() for t in self.targets}
        self.used, self.excluded = {}, {}
        for t in self.targets:
            (used, excluded), (used_before, excluded_before) = after[t.name], self.before[t.name]
            self.used[t.name] = used - used_before - t.idle_cpu_per_second * self.seconds
            self.excluded[t.name] = excluded - excluded_before


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _p50_p99(values: list[float]) -> dict[str, float]:
    return {"p50_ms": _ms(statistics.median(values)), "p99_ms": _ms(_percentile(values, 0.99))}


def litellm_version() -> str | None:
    if not PEERS_PYTHON.is_file():
        return None
    probe = subprocess.run(
        [str(PEERS_PYTHON), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


@contextmanager
def litellm_proxy(upstream: str, workdir: Path) -> Iterator[tuple[int, str, str]]:
    """LiteLLM's proxy with one model on the demo upstream, no database, logs to a file."""
    master_key = f"sk-bench-{secrets.token_hex(16)}"
    config = workdir / "litellm.yaml"
    config.write_text(
        json.dumps(  # YAML is a superset of JSON
            {
                "model_list": [
                    {
                        "model_name": "demo-official",
                        "litellm_params": {
                            "model": "openai/demo-official-1",
                            "api_base": upstream,
                            "api_key": "demo",
                        },
                    }
                ],
                "litellm_settings": {"set_verbose": False, "suppress_debug_info": True},
            }
        )
    )
    port = _free_port()
    log = (workdir / "litellm.log").open("wb")
    process = subprocess.Popen(
        [
            *(str(PEERS_PYTHON.parent / "litellm"), "--config", str(config)),
            *("--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"),
        ],
        cwd=workdir,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(workdir),
            "LITELLM_MASTER_KEY": master_key,
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=300)
        yield process.pid, f"http://127.0.0.1:{port}/v1", master_key
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@contextmanager
def forge_on_twin(
    upstream: str, latency_ms: float, client: str = "wire"
) -> Iterator[tuple[int, str, str]]:
    """The gateway of bench.servers on the in-memory twin, its store behind `client` (wire or
    botocore); yields its pid, URL and a key."""
    port = _free_port()
    role = ["gateway-twin", str(port), str(latency_ms), client]
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.servers", *role],
        cwd=ROOT,
        env={**os.environ, "FORGE_DEMO_BASE_URL": upstream, "AWS_DEFAULT_REGION": "us-east-1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        key = process.stdout.readline().strip().removeprefix("KEY=")
        _wait_http(f"http://127.0.0.1:{port}/bench/stats")
        yield process.pid, f"http://127.0.0.1:{port}/v1", key
    finally:
        process.terminate()
        process.wait(timeout=10)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _stats(base_url: str) -> dict[str, Any]:
    return dict(httpx.get(base_url.removesuffix("/v1") + "/bench/stats").json())


def call(client: httpx.Client, target: Target) -> float:
    started = time.perf_counter()
    response = client.post(target.url, headers=target.headers, json={**BODY, "model": target.model})
    response.raise_for_status()
    return time.perf_counter() - started


def stream(client: httpx.Client, target: Target) -> tuple[float, int]:
    """Time to the first data line, and the data lines of the whole stream (drained)."""
    started = time.perf_counter()
    first, chunks = 0.0, 0
    body = {**BODY, "model": target.model, "stream": True}
    with client.stream("POST", target.url, headers=target.headers, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data:") and line != "data: [DONE]":
                chunks += 1
                first = first or time.perf_counter() - started
    return first, chunks


async def _load(target: Target, concurrency: int, seconds: float) -> int:
    """`concurrency` clients calling back to back for `seconds`: the calls answered 200."""
    done = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                answer = await http.post(
                    target.url, headers=target.headers, json={**BODY, "model": target.model}
                )
                done += answer.status_code == 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def measure(targets: list[Target], requests: int, load_seconds: float) -> dict[str, Any]:
    with httpx.Client(timeout=60) as client:
        for _ in range(20):  # connections, caches, key lookups, lazy imports
            for target in targets:
                call(client, target)
                stream(client, target)
        with CpuWindow(targets) as idle:  # what each burns doing nothing
            time.sleep(3)
        for target in targets:
            target.idle_cpu_per_second = max(0.0, idle.used[target.name] / idle.seconds)
        with CpuWindow(targets) as plain:
            for _ in range(requests):
                for target in targets:
                    target.latencies.append(call(client, target))
        with CpuWindow(targets) as streamed:
            for _ in range(requests // 2):
                for target in targets:
                    ttfb, chunks = stream(client, target)
                    target.ttfbs.append(ttfb)
                    target.chunks.append(chunks)
    served = {t.name: 0 for t in targets}
    loaded_seconds = {t.name: 0.0 for t in targets}
    loaded_cpu = {t.name: 0.0 for t in targets}
    for _ in range(2):  # two rounds, alternating, so a burst of other work hits all alike
        for target in targets:
            with CpuWindow([target]) as window:
                served[target.name] += asyncio.run(_load(target, 16, load_seconds / 2))
            loaded_seconds[target.name] += window.seconds
            loaded_cpu[target.name] += window.used[target.name]

    out: dict[str, Any] = {}
    for target in targets:
        chunks_per_stream = statistics.median(target.chunks)
        per_stream = streamed.used[target.name] / len(target.ttfbs)
        figures: dict[str, Any] = {
            "latency": _p50_p99(target.latencies),
            "stream_ttfb": _p50_p99(target.ttfbs),
            "cpu_ms_per_request": _ms(plain.used[target.name] / requests),
            "cpu_ms_per_stream": _ms(per_stream),
            "chunks_per_stream": chunks_per_stream,
            "cpu_ms_per_chunk": _ms(per_stream / chunks_per_stream),
            "throughput_c16_rps": round(served[target.name] / loaded_seconds[target.name], 1),
            "cpu_ms_per_request_c16": _ms(loaded_cpu[target.name] / max(1, served[target.name])),
            "idle_cpu_ms_per_second": _ms(target.idle_cpu_per_second),
        }
        if plain.excluded[target.name]:
            figures["excluded_store_cpu_ms_per_request"] = _ms(
                plain.excluded[target.name] / requests
            )
        for kind in ("latency", "stream_ttfb") if target.name != "direct" else ():
            figures[f"added_{kind}"] = {
                q: round(figures[kind][q] - out["direct"][kind][q], 3) for q in ("p50_ms", "p99_ms")
            }
        out[target.name] = figures
    return out


RATIOS = (
    ("added latency p50", ("added_latency", "p50_ms")),
    ("added latency p99", ("added_latency", "p99_ms")),
    ("throughput at c=16", ("throughput_c16_rps",)),
    ("stream TTFB p50", ("stream_ttfb", "p50_ms")),
    ("CPU per request", ("cpu_ms_per_request",)),
    ("CPU per streamed chunk", ("cpu_ms_per_chunk",)),
)


def _get(figures: dict[str, Any], path: tuple[str, ...]) -> float:
    value: Any = figures
    for key in path:
        value = value[key]
    return float(value)


def ratios(figures: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Forge's figure over LiteLLM's, for Forge on the emulator and on the twin."""
    out: dict[str, dict[str, float | None]] = {}
    for forge in ("forge", "forge_twin"):
        out[forge] = {}
        for label, path in RATIOS:
            theirs = _get(figures["litellm"], path)
            out[forge][label] = round(_get(figures[forge], path) / theirs, 2) if theirs else None
    return out


LABELS = {
    "direct": "direct to the upstream",
    "forge": "Forge, store: the emulator (moto, own process)",
    "forge_twin": "Forge, store: in-process twin, {latency} ms per call (its CPU taken out)",
    "forge_twin_botocore": "the same, store client botocore (the lever's before)",
    "litellm": "LiteLLM {version} proxy, no database",
}


def write_report(peers: dict[str, Any]) -> None:
    """Replace the section of docs/performance.md between the peers markers."""
    figures = peers["figures"]
    labels = {
        name: label.format(latency=peers["store_latency_ms"], version=peers["litellm_version"])
        for name, label in LABELS.items()
    }
    header = (
        "target",
        "latency p50 / p99",
        "added p50 / p99",
        "stream TTFB p50 / p99",
        "req/s at c=16",
        "CPU per request",
        "CPU per request at c=16",
        "CPU per stream (chunks)",
        "CPU per chunk",
    )

    def pair(d: dict[str, float] | None) -> str:
        return f"{d['p50_ms']} / {d['p99_ms']} ms" if d else "—"

    lines = [
        "<!-- peers:start (written by `make bench-peers`; edit outside these markers) -->",
        f"Measured {peers['measured_at']} on {peers['machine']} (load average"
        f" {peers['load_average_at_start']} at the start): {peers['requests']} non-stream and"
        f" {peers['requests'] // 2} streamed calls to each target, interleaved, one at a time;"
        f" then 16 concurrent clients for {peers['load_seconds']} s per target.",
        "",
        _row(*header),
        _row(*("---" for _ in header)),
        *(
            _row(
                labels[name],
                pair(f["latency"]),
                pair(f.get("added_latency")),
                pair(f["stream_ttfb"]),
                f["throughput_c16_rps"],
                f"{f['cpu_ms_per_request']} ms",
                f"{f['cpu_ms_per_request_c16']} ms",
                f"{f['cpu_ms_per_stream']} ms ({f['chunks_per_stream']})",
                f"{f['cpu_ms_per_chunk']} ms",
            )
            for name, f in figures.items()
        ),
        "",
        _row("Forge / LiteLLM", *(label for label, _ in RATIOS)),
        _row("---", *("---" for _ in RATIOS)),
        *(
            _row(labels[name], *(r[label] for label, _ in RATIOS))
            for name, r in peers["ratios"].items()
        ),
        "",
        "The twin's own CPU (decoding each DynamoDB request, executing it, encoding the answer:"
        " DynamoDB's side) was"
        f" {figures['forge_twin']['excluded_store_cpu_ms_per_request']} ms per non-stream"
        " request, taken out of `forge_twin`'s figures (and likewise for"
        " `forge_twin_botocore`).",
        "<!-- peers:end -->",
    ]
    head, _, rest = REPORT.read_text().partition("<!-- peers:start")
    _, _, tail = rest.partition("<!-- peers:end -->")
    REPORT.write_text(head + "\n".join(lines) + tail)


def main() -> None:
    parser = argparse.ArgumentParser(prog="make bench-peers", description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--load-seconds", type=float, default=20, help="c=16 time per target")
    parser.add_argument("--store-latency-ms", type=float, default=4.0)
    args = parser.parse_args()
    version = litellm_version()
    if version is None:
        sys.exit(f"make bench-peers: no LiteLLM in {PEERS_PYTHON.parent.parent}; skipped")
    if version in COMPROMISED:
        sys.exit(f"make bench-peers: LiteLLM {version} is a compromised release; not run")
    import platform

    peers: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}",
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "litellm_version": version,
        "store_latency_ms": args.store_latency_ms,
        "requests": args.requests,
        "load_seconds": args.load_seconds,
        "cpu": "server process utime+stime from /proc, threads and children, idle rate taken out",
    }
    with ExitStack() as stack, tempfile.TemporaryDirectory() as workdir:
        forge = stack.enter_context(running_stack())
        _, key = seed("100000")
        twin_pid, twin_url, twin_key = stack.enter_context(
            forge_on_twin(forge.demo_url, args.store_latency_ms)
        )
        boto_pid, boto_url, boto_key = stack.enter_context(
            forge_on_twin(forge.demo_url, args.store_latency_ms, "botocore")
        )
        litellm_pid, litellm_url, master_key = stack.enter_context(
            litellm_proxy(forge.demo_url, Path(workdir))
        )
        _, demo, gateway = forge.processes  # Stack starts the emulator, demo, gateway

        def twin_cpu(url: str) -> Callable[[], float]:
            return lambda: float(_stats(url)["store_cpu_seconds"])

        targets = [
            Target("direct", forge.demo_url, _bearer("demo"), "demo-official-1", demo.pid),
            Target("forge", forge.gateway_url, _bearer(key), "demo-official", gateway.pid),
            Target("forge_twin", twin_url, _bearer(twin_key), "demo-official", twin_pid),
            Target("forge_twin_botocore", boto_url, _bearer(boto_key), "demo-official", boto_pid),
            Target("litellm", litellm_url, _bearer(master_key), "demo-official", litellm_pid),
        ]
        targets[2].excluded_cpu = twin_cpu(twin_url)
        targets[3].excluded_cpu = twin_cpu(boto_url)
        peers["figures"] = measure(targets, args.requests, args.load_seconds)
    peers["ratios"] = ratios(peers["figures"])
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results["peers"] = peers
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    write_report(peers)
    print(json.dumps(peers, indent=2))


if __name__ == "__main__":
    main()
