"""`make bench-statements`: what one statement costs for an account with 12 months of 5,000
ledger entries, built from the per-entry objects of all its history (before compaction) and
from its compacted month (after), on the embedded emulator (moto's S3 and DynamoDB over HTTP).

The history is generated, not served: 60,000 entries of a realistic mix (charges over four
keys, three projects and five routes through both buckets, a top-up or grant every 250
entries, times spread over each month), each chain valid (seq gap-free, balance_after the
running sum). Each entry is written as the store writes it (its ledger-table item, in batches
of 25), and its archive object (the key and bytes S3Archive.put_entry writes) is put straight
into the emulator's S3 backend: 60,000 PUTs over HTTP take half an hour on this machine.
S3 requests are counted at the archive's boto3 client (forge_tools.s3_requests), by operation.

Writes bench/statements.json and the table between the statements markers of
docs/performance.md. `python -m bench.statements [--months 12] [--entries 5000]`.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends

from forge.domain.archive import archive_key, archive_line, statement_key
from forge.domain.calendar import Month
from forge.domain.money import Bucket
from forge.domain.records import LedgerEntry, LedgerKind
from forge.ledger.statements import compact_month, ensure_statement
from forge.store.dynamo.ledger import put_entry
from forge.store.dynamo.views import LedgerViews
from forge.store.s3archive import S3Archive
from forge_tools.emulator import Emulator
from forge_tools.s3_requests import S3Requests

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
RESULTS = ROOT / "bench" / "statements.json"
REPORT = ROOT / "docs" / "performance.md"
ACCOUNT = "acct_bench_year"
FIRST = Month(2025, 1)
ROUTES = [  # (model, route, bucket)
    ("gpt-4o-mini", "openai:gpt-4o-mini", Bucket.CREDIT),
    ("claude-sonnet-4", "anthropic:claude-sonnet-4", Bucket.CREDIT),
    ("gemini-2.5-flash", "google:gemini-2.5-flash", Bucket.CREDIT),
    ("gpt-4o-mini", "reseller:gpt-4o-mini", Bucket.RMB),
    ("deepseek-chat", "deepseek:deepseek-chat", Bucket.RMB),
]
T = TypeVar("T")


def generate(months: int, per_month: int) -> list[LedgerEntry]:
    """The account's history: per month, `per_month` entries over both buckets."""
    seqs = dict.fromkeys(Bucket, 0)
    balances = dict.fromkeys(Bucket, 0)
    entries: list[LedgerEntry] = []
    month = FIRST
    for _ in range(months):
        step = (month.end - month.start) / per_month
        for i in range(per_month):
            when = month.start + step * i + timedelta(milliseconds=i % 997)
            model, route, bucket = ROUTES[(i * 7) % len(ROUTES)]
            if i % 250 == 0:  # money in, before the charges it pays for
                bucket = Bucket.CREDIT if i % 500 == 0 else Bucket.RMB
                kind, amount = (LedgerKind.TOPUP, 50_000_000)
                fields: dict[str, Any] = {"source": f"pi_{month}_{i}"}
            else:
                kind, amount = LedgerKind.CHARGE, -(1_000 + (i * 7919) % 90_000)
                fields = {
                    "request_id": f"req_{month}_{i}",
                    "key_id": f"key_{i % 4}",
                    "project_id": f"proj_{i % 3}",
                    "model": model,
                    "route": route,
                }
            seqs[bucket] += 1
            balances[bucket] += amount
            entries.append(
                LedgerEntry(
                    entry_id=f"le_{bucket.value}_{seqs[bucket]}",
                    account_id=ACCOUNT,
                    bucket=bucket,
                    seq=seqs[bucket],
                    kind=kind,
                    amount=amount,
                    balance_after=balances[bucket],
                    created_at=when,
                    **fields,
                )
            )
        month = month.next()
    return entries


def write_history(
    entries: list[LedgerEntry], dynamodb: Any, ledger_table: str, bucket: str
) -> None:
    for start in range(0, len(entries), 25):
        items = [put_entry(ledger_table, e)["Put"]["Item"] for e in entries[start : start + 25]]
        pending: dict[str, Any] = {ledger_table: [{"PutRequest": {"Item": i}} for i in items]}
        while pending:
            pending = dynamodb.batch_write_item(RequestItems=pending)["UnprocessedItems"]
    # 60,000 PUTs through the emulator's HTTP front take half an hour here, so the objects go
    # straight into its S3 backend: the same keys and bytes S3Archive.put_entry writes.
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for entry in entries:
        backend.put_object(bucket, archive_key(entry), archive_line(entry))


def timed(action: Callable[[], T], requests: S3Requests) -> tuple[T, dict[str, Any]]:
    requests.reset()
    started = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - started
    return result, {
        "seconds": round(seconds, 3),
        "s3_seconds": round(requests.seconds, 3),
        "s3_requests": requests.total,
        "s3_gets": requests.gets,
        "by_operation": dict(sorted(requests.by_operation.items())),
    }


def measure(months: int, per_month: int) -> dict[str, Any]:
    emulator = Emulator(port=0).start()
    try:
        resources = emulator.create_resources(TEMPLATE, prefix="benchstmt")
        s3 = emulator.client("s3")
        bucket = resources.buckets["ArchiveBucket"]
        archive = S3Archive(s3, bucket)
        ledger = LedgerViews(emulator.client("dynamodb"), resources.tables["LedgerTable"])
        requests = S3Requests(s3)
        entries = generate(months, per_month)
        started = time.perf_counter()
        write_history(entries, emulator.client("dynamodb"), resources.tables["LedgerTable"], bucket)
        written = time.perf_counter() - started
        last = Month.of(entries[-1].created_at)
        after_all = last.end + timedelta(days=1)

        def statement() -> dict[str, Any]:
            for fmt in ("csv", "html"):  # built every time, never found stored
                key = statement_key(ACCOUNT, last).removesuffix(".csv") + f".{fmt}"
                s3.delete_object(Bucket=bucket, Key=key)
            build = partial(ensure_statement, archive, ledger, ACCOUNT, last, now=after_all)
            return timed(build, requests)[1]

        before = statement()
        compactions = []
        month = FIRST
        for _ in range(months):
            compact = partial(compact_month, archive, ledger, ACCOUNT, month, now=after_all)
            _, cost = timed(compact, requests)
            compactions.append({"month": str(month), **cost})
            month = month.next()
        afters = [statement() for _ in range(5)]
        after = min(afters, key=lambda a: a["seconds"])
        return {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {platform.system()}, "
            f"Python {platform.python_version()}",
            "months": months,
            "entries_per_month": per_month,
            "entries": len(entries),
            "history_written_seconds": round(written, 1),
            "statement_before": before,
            "statement_after": after,
            "statement_after_runs_seconds": [a["seconds"] for a in afters],
            "compaction_per_month": compactions,
        }
    finally:
        emulator.stop()


def report_lines(results: dict[str, Any]) -> list[str]:
    before, after = results["statement_before"], results["statement_after"]
    comps = results["compaction_per_month"]
    compact_s = sorted(c["seconds"] for c in comps)[len(comps) // 2]
    compact_gets = sorted(c["s3_gets"] for c in comps)[len(comps) // 2]
    compact_s3 = sorted(c["s3_seconds"] for c in comps)[len(comps) // 2]
    return [
        "<!-- statements:start (written by `make bench-statements`; edit outside the markers) -->",
        f"Run of {results['when']} on {results['machine']}: one account, "
        f"{results['months']} months x {results['entries_per_month']:,} entries "
        f"({results['entries']:,} per-entry objects), the statement of its last month.",
        "",
        "| Statement of the last month | build time | of which in S3 | S3 requests | GETs |",
        "|---|---:|---:|---:|---:|",
        f"| before: per-entry objects of all history | {before['seconds']:.2f} s "
        f"| {before['s3_seconds']:.2f} s | {before['s3_requests']:,} | {before['s3_gets']:,} |",
        f"| after: the compacted month + its closing record | {after['seconds']:.2f} s "
        f"| {after['s3_seconds']:.3f} s | {after['s3_requests']:,} | {after['s3_gets']:,} |",
        f"| compacting one month (median of {len(comps)}) | {compact_s:.2f} s "
        f"| {compact_s3:.2f} s "
        f"| {sorted(c['s3_requests'] for c in comps)[len(comps) // 2]:,} | {compact_gets:,} |",
        "",
        f"After: {json.dumps(after['by_operation'])}; before: "
        f"{json.dumps(before['by_operation'])}.",
        "<!-- statements:end -->",
    ]


def write_report(results: dict[str, Any]) -> None:
    text = REPORT.read_text()
    head, found, rest = text.partition("<!-- statements:start")
    if not found:
        raise SystemExit("docs/performance.md has no statements markers")
    tail = rest.partition("<!-- statements:end -->")[2]
    REPORT.write_text(head + "\n".join(report_lines(results)) + tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--entries", type=int, default=5_000, help="entries per month")
    args = parser.parse_args()
    results = measure(args.months, args.entries)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    write_report(results)
    print(json.dumps({k: v for k, v in results.items() if k != "compaction_per_month"}, indent=2))


if __name__ == "__main__":
    main()
