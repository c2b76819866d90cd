"""From a measured run and a dated price file to dollars per million paid requests, by part.

Every quantity comes from the run (bench.cost.run) or from template.yaml (memory,
architecture, the archiver's batch size); every price from the price file, by its key. Each
part carries its trace: the measured quantity, times the price line it uses.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

MILLION = 1_000_000
GB = 2**30
DURATIONS = (1.0, 2.0, 10.0, 60.0)  # seconds of upstream time per call (issue 16)
HEADLINE = 2.0
X = "\u00d7"  # the multiplication sign of the traces


@dataclass(frozen=True)
class Function:
    """A function's billing configuration, as template.yaml sets it."""

    name: str
    memory_mb: int
    architecture: str

    @property
    def memory_gb(self) -> float:
        return self.memory_mb / 1024

    @classmethod
    def of(cls, template: Mapping[str, Any], logical_id: str) -> Function:
        shared = template.get("Globals", {}).get("Function", {})
        props = template["Resources"][logical_id]["Properties"]
        memory = int(props.get("MemorySize", shared.get("MemorySize", 128)))
        architectures = props.get("Architectures", shared.get("Architectures", ["x86_64"]))
        return cls(logical_id, memory, str(architectures[0]))


@dataclass(frozen=True)
class Part:
    """One line of the bill: dollars per million paid requests at each upstream duration."""

    name: str
    usd: dict[float, float]
    trace: str

    def cents(self, seconds: float) -> Decimal:
        return Decimal(repr(self.usd[seconds])).quantize(Decimal("0.01"), ROUND_HALF_UP)


@dataclass
class Costs:
    parts: list[Part]
    quantities: dict[str, Any]  # the measured quantities per paid call the parts use
    notes: list[str] = field(default_factory=list)

    def total(self, seconds: float) -> Decimal:
        """The sum of the parts as shown (each rounded to the cent), so a reader adding up
        the column gets the total."""
        return sum((p.cents(seconds) for p in self.parts), Decimal("0.00"))

    def as_json(self) -> dict[str, Any]:
        return {
            "durations_seconds": list(DURATIONS),
            "headline_seconds": HEADLINE,
            "parts": [
                {
                    "name": p.name,
                    "usd_per_million": {str(s): p.usd[s] for s in DURATIONS},
                    "cents_per_million": {str(s): str(p.cents(s)) for s in DURATIONS},
                    "trace": p.trace,
                }
                for p in self.parts
            ],
            "total_usd_per_million": {str(s): str(self.total(s)) for s in DURATIONS},
            "quantities_per_paid_call": self.quantities,
            "notes": self.notes,
        }


class Prices:
    """The price file: `usd(key)` is the price of one unit of that line."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self._lines: Mapping[str, Mapping[str, Any]] = document["prices"]

    def usd(self, key: str) -> float:
        line = self._lines[key]
        return float(line["usd"]) / float(line.get("per", 1))

    def value(self, key: str) -> float:
        return float(self._lines[key]["value"])

    def line(self, key: str) -> Mapping[str, Any]:
        return self._lines[key]

    def shown(self, key: str) -> str:
        """'$3.50 per 1M (apigateway_rest_request)': the price as its file states it."""
        line = self._lines[key]
        per = int(line.get("per", 1))
        digits = f"{float(line['usd']):.10f}".rstrip("0")
        whole, _, decimals = digits.partition(".")
        amount = f"${whole}.{decimals.ljust(2, '0')}"
        unit = {1000: "1,000", MILLION: "1M"}.get(per, f"{per:,}")
        if per == 1:
            unit = str(line.get("per_unit", "unit"))
        return f"{amount} per {unit} ({key})"


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def _per_million(per_call_usd: float) -> dict[float, float]:
    return {s: per_call_usd * MILLION for s in DURATIONS}


def access_log_bytes(template: Mapping[str, Any], response_bytes: int, latency_ms: int) -> int:
    """One API Gateway access log line, template.yaml's format filled with the run's status,
    bytes and latency, a UUID request id and an IPv4 address (as CloudWatch ingests it)."""
    fmt = template["Resources"]["ProxyApi"]["Properties"]["AccessLogSetting"]["Format"]
    values = {
        "$context.requestId": "0f6b6c4e-9c1e-4a43-8d7e-1c2b3a4d5e6f",
        "$context.identity.sourceIp": "203.0.113.10",
        "$context.requestTime": "02/Dec/2026:02:33:11 +0000",
        "$context.httpMethod": "POST",
        "$context.resourcePath": "/v1/chat/completions",
        "$context.status": "200",
        "$context.responseLength": str(response_bytes),
        "$context.responseLatency": str(latency_ms),
        "$context.integration.status": "200",
        "$context.integration.latency": str(latency_ms),
        "$context.error.message": "-",
    }
    line = " ".join(str(fmt).split())  # YAML folds the format onto one line
    for name in sorted(values, key=len, reverse=True):
        line = line.replace(name, values[name])
    return len(line.encode("utf-8"))


def price(measurement: Mapping[str, Any], prices: Prices, template: Mapping[str, Any]) -> Costs:
    """Dollars per million paid requests, by part, at each upstream duration."""
    calls = measurement["calls"]
    mean, largest = calls["mean"], calls["range"]["response_bytes"][1]
    proxy = Function.of(template, "ProxyFunction")
    archiver = Function.of(template, "ArchiverFunction")
    q: dict[str, Any] = {"calls": calls["count"], "streamed": calls["streamed"]}

    # API Gateway: one REST call per paid call, metered per started 10 MB streamed.
    metering = prices.value("apigateway_stream_metering_bytes")
    q["api_calls"] = 1.0 if largest <= metering else math.ceil(mean["response_bytes"] / metering)
    q["response_bytes"] = mean["response_bytes"]
    parts = [
        Part(
            "API Gateway REST calls",
            _per_million(q["api_calls"] * prices.usd("apigateway_rest_request")),
            f"{q['api_calls']:.2f} metered call per paid call (the largest response"
            f" {largest:,.0f} bytes, under {metering / 2**20:.0f} MB)"
            f" {X} {prices.shown('apigateway_rest_request')}",
        ),
        Part(
            "API Gateway data out",
            _per_million(q["response_bytes"] / GB * prices.usd("apigateway_data_transfer_out_gb")),
            f"{q['response_bytes']:,.0f} bytes per response (measured mean: status line, headers,"
            f" body) {X} {prices.shown('apigateway_data_transfer_out_gb')}",
        ),
    ]

    # The proxy: one invocation per call, billed for the upstream's time plus the gateway's.
    overhead = measurement["overhead"]
    q["overhead_ms"] = _mean([overhead[k]["added_ms"] for k in ("non_stream", "stream")])
    stream_free = float(prices.line("lambda_response_stream_gb")["free_bytes_per_response"])
    streamed_gb = 0.0 if largest <= stream_free else (mean["response_bytes"] - stream_free) / GB
    q["lambda_streamed_gb_beyond_free"] = streamed_gb
    invocation = prices.usd("lambda_request") + streamed_gb * prices.usd(
        "lambda_response_stream_gb"
    )
    parts.append(
        Part(
            "Proxy Lambda requests",
            _per_million(invocation),
            f"1 invocation per paid call {X} {prices.shown('lambda_request')}; streamed bytes"
            f" beyond the free 6 MB per response: {streamed_gb:.0f} GB"
            f" ({prices.shown('lambda_response_stream_gb')})",
        )
    )
    gb_second = prices.usd(f"lambda_gb_second_{proxy.architecture}")
    billed_ms = {s: math.ceil(s * 1000 + q["overhead_ms"]) for s in DURATIONS}
    q["proxy_billed_ms"] = {str(s): ms for s, ms in billed_ms.items()}
    parts.append(
        Part(
            "Proxy Lambda GB-s",
            {s: billed_ms[s] / 1000 * proxy.memory_gb * gb_second * MILLION for s in DURATIONS},
            f"(upstream seconds + {q['overhead_ms']:.1f} ms added by the gateway, measured)"
            f" {X} {proxy.memory_mb} MB {proxy.architecture} (template.yaml ProxyFunction)"
            f" {X} {prices.shown(f'lambda_gb_second_{proxy.architecture}')}",
        )
    )

    # DynamoDB: the units of every call the store adapter made, recorded at its client.
    for name in ("table_wru", "gsi_wru", "rru", "round_trips"):
        q[name] = mean[name]
    wru = q["table_wru"] + q["gsi_wru"]
    parts += [
        Part(
            "DynamoDB writes",
            _per_million(wru * prices.usd("dynamodb_write_request_unit")),
            f"{wru:.2f} WRU per paid call ({q['table_wru']:.2f} on the tables,"
            f" {q['gsi_wru']:.2f} on their indexes; recorded)"
            f" {X} {prices.shown('dynamodb_write_request_unit')}",
        ),
        Part(
            "DynamoDB reads",
            _per_million(q["rru"] * prices.usd("dynamodb_read_request_unit")),
            f"{q['rru']:.2f} RRU per paid call (recorded)"
            f" {X} {prices.shown('dynamodb_read_request_unit')}",
        ),
    ]

    # The ledger stream, the archive and the statement that reads it back.
    stream = measurement["stream"]
    q["ledger_entries"] = (
        stream["by_the_calls"].get("INSERT ledger_entry", 0) / stream["paid_calls"]
    )
    arch = measurement["archiver"]
    puts = arch["s3_calls"].get("PutObject ledger/", 0) / max(arch["delivered_records"], 1)
    statement = measurement["statement"]
    gets = statement["s3_calls"].get("GetObject ledger/", 0) / max(statement["entries"], 1)
    q["s3_put_per_entry"], q["s3_get_per_entry_per_statement"] = puts, gets
    s3_per_call = q["ledger_entries"] * (
        puts * prices.usd("s3_put_request") + gets * prices.usd("s3_get_request")
    )
    parts.append(
        Part(
            "S3",
            _per_million(s3_per_call),
            f"{q['ledger_entries']:.2f} ledger entry per paid call (its stream)"
            f" {X} ({puts:.3f} PutObject per entry (archiver: one object per run of an account's"
            f" entries in a batch) {X} {prices.shown('s3_put_request')}"
            f" + {gets:.3f} GetObject per entry per monthly statement"
            f" {X} {prices.shown('s3_get_request')})",
        )
    )
    batch = int(arch["batch_size"])
    ms_per_record = float(arch["warm_ms_per_record"])
    per_entry_gb_s = math.ceil(batch * ms_per_record) / batch / 1000 * archiver.memory_gb
    arch_price = f"lambda_gb_second_{archiver.architecture}"
    arch_gb_second = prices.usd(arch_price)
    per_entry = prices.usd("lambda_request") / batch + per_entry_gb_s * arch_gb_second
    q["archiver_invocations_per_entry"] = 1 / batch
    q["archiver_gb_s_per_entry"] = per_entry_gb_s
    parts.append(
        Part(
            "Archiver Lambda",
            _per_million(q["ledger_entries"] * per_entry),
            f"{q['ledger_entries']:.2f} entry per paid call {X} (1/{batch} invocation per entry,"
            f" full batches of the template's BatchSize, {X} {prices.shown('lambda_request')}"
            f" + {ms_per_record:.1f} ms per entry (measured, warm) {X} {archiver.memory_mb} MB"
            f" {archiver.architecture} {X} {prices.shown(arch_price)})",
        )
    )

    # Logs: what the proxy writes (EMF metric lines) and API Gateway's access log line.
    q["proxy_log_bytes"] = mean["output_bytes"]
    gateway_ms = measurement["overhead"]["non_stream"]["gateway_median_ms"]
    q["access_log_bytes"] = access_log_bytes(
        template, round(q["response_bytes"]), round(gateway_ms)
    )
    log_bytes = q["proxy_log_bytes"] + q["access_log_bytes"]
    parts.append(
        Part(
            "CloudWatch Logs",
            _per_million(log_bytes / GB * prices.usd("cloudwatch_logs_ingest_gb")),
            f"({q['proxy_log_bytes']:.0f} bytes the proxy writes per call, measured, + "
            f"{q['access_log_bytes']} bytes of access log line, template.yaml's format)"
            f" {X} {prices.shown('cloudwatch_logs_ingest_gb')}",
        )
    )
    costs = Costs(parts, q)
    costs.notes = _notes(measurement, prices, q, archiver, batch, per_entry_gb_s)
    return costs


def _notes(
    measurement: Mapping[str, Any],
    prices: Prices,
    q: Mapping[str, Any],
    archiver: Function,
    batch: int,
    per_entry_gb_s: float,
) -> list[str]:
    """What the table leaves out or assumes, each with its figure."""
    notes = []
    gb_second = prices.usd(f"lambda_gb_second_{archiver.architecture}")
    ms_per_record = float(measurement["archiver"]["warm_ms_per_record"])
    lone = prices.usd("lambda_request") + math.ceil(ms_per_record) / 1000 * (
        archiver.memory_gb * gb_second
    )
    full = prices.usd("lambda_request") / batch + per_entry_gb_s * gb_second
    window = measurement["archiver"]["batching_window_seconds"]
    notes.append(
        f"Archiver batches: the table assumes full batches of {batch} (a stream with at least"
        f" {batch} entries per {window} s window per shard). At low traffic a window holds few"
        f" entries; at one entry per invocation the archiver costs"
        f" ${q['ledger_entries'] * lone * MILLION:.2f} per 1M paid calls instead of"
        f" ${q['ledger_entries'] * full * MILLION:.2f}."
    )
    per_entry_put = q["ledger_entries"] * prices.usd("s3_put_request") * MILLION
    notes.append(
        f"Archive objects: the archiver writes one object per account and series with entries"
        f" in a batch, so its PUTs follow how many accounts share a window, not how many calls"
        f" they make. This run's stream is one account's (as a busy tenant's is):"
        f" {q['s3_put_per_entry']:.3f} PutObject per entry. An account making k calls in a"
        f" {window} s window costs 1/k PutObject per entry; at one call per account and window"
        f" it is one per entry again, ${per_entry_put:.2f} per 1M paid calls, the bill before"
        f" this lever."
    )
    statement = measurement["statement"]
    fixed = {k: v for k, v in statement["s3_calls"].items() if k != "GetObject ledger/"}
    fixed_put = sum(v for k, v in fixed.items() if k.startswith(("Put", "List")))
    fixed_get = sum(v for k, v in fixed.items() if k.startswith(("Get", "Head")))
    per_statement = fixed_put * prices.usd("s3_put_request") + fixed_get * prices.usd(
        "s3_get_request"
    )
    notes.append(
        "Statements: once the months before it are compacted (the run on the 1st does it), a"
        " statement reads only its own month: a compacted month's one object per series, or,"
        " for a month not compacted yet (the run's), its entry objects after the latest closing"
        " record. The S3 line counts the latter: each entry object is read once by its month's"
        f" statement (and once by its compaction, not counted). Per statement on top:"
        f" {_calls_text(fixed)}"
        f" (${per_statement * 1000:.4f} per 1,000 statements, LIST pages included) and"
        f" {statement['dynamodb']['rru']:.0f} RRU of ledger Queries for"
        f" {statement['entries']} entries."
    )
    by_kind = measurement["calls"].get("response_bytes_by_kind", {})
    tokens = measurement["calls"]["mean"]["completion_tokens"]
    if {"stream", "non_stream"} <= set(by_kind) and tokens:
        # Both kinds carry the same answer; what a stream sends on top is per-chunk framing.
        per_token = (by_kind["stream"] - by_kind["non_stream"]) / tokens
        streamed_200 = by_kind["non_stream"] + 200 * per_token
        at_200 = streamed_200 / GB * prices.usd("apigateway_data_transfer_out_gb") * MILLION
        notes.append(
            "Data out grows with the answer, most for streams (one SSE event per chunk): the"
            f" run's streamed calls sent {by_kind['stream']:,.0f} bytes for {tokens:g}"
            f" completion tokens, the non-streamed {by_kind['non_stream']:,.0f}, so about"
            f" {per_token:.0f} bytes more a streamed token; a 200-token streamed answer would"
            f" send about {streamed_200 / 1000:.0f} KB: ${at_200:.2f} per 1M calls."
        )
    first = measurement["first_calls"][0]["store"]
    notes.append(
        f"A fresh container's first call made {first['round_trips']} DynamoDB round trips"
        f" ({first['rru']:.1f} RRU: it also read the key, the catalog index and the project's"
        " caps, which a container then caches)"
        f" against {q['round_trips']:.0f} ({q['rru']:.1f} RRU) once warm; the table counts"
        " warm calls."
    )
    doubled = q["gsi_wru"] * prices.usd("dynamodb_write_request_unit") * MILLION
    notes.append(
        "Global secondary index writes are counted at 1 WRU per KB even inside a"
        " transaction (whether AWS doubles them there is not documented); doubled, DynamoDB"
        f" writes would cost ${doubled:.2f} more per 1M paid calls."
    )
    notes.append(
        "Not counted: storage (DynamoDB items and indexes, point-in-time recovery, S3 objects,"
        " log retention), Lambda's own START/END/REPORT log lines, the INIT duration of cold"
        " starts, the provider secret read once a minute per container (Secrets Manager), the"
        " sweeper, reconciliation and account functions, and the archiver's on-failure queue"
        " (SQS, used only when a batch fails every retry)."
    )
    return notes


def _calls_text(calls: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(calls.items()))
