"""`forge-admin archive replay`: write the ledger archive objects the archiver missed, rebuilt
from the ledger table (the source of truth), either for a time window or for each on-failure
record in the archiver's failure queue. `forge-admin archive compact`: compact a closed month
(what the monthly statement run does first), e.g. months archived before compaction existed.
Each prints a one-line JSON summary."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any, NoReturn

from forge.domain.calendar import as_utc


def add_parser(groups: Any) -> None:
    archive = groups.add_parser("archive").add_subparsers(dest="action", required=True)
    replay = archive.add_parser(
        "replay",
        help="write the missing archive objects of a window's ledger entries (never twice)",
    )
    replay.add_argument("--from", dest="start", type=_instant, help="ISO time, UTC unless given")
    replay.add_argument("--to", dest="end", type=_instant, help="exclusive")
    replay.add_argument(
        "--from-queue",
        nargs="?",
        const="",
        metavar="QUEUE_URL",
        help="replay the window of each on-failure record in this SQS queue, deleting each"
        " message once replayed (no URL: the stack's ArchiveFailureQueueUrl)",
    )
    replay.add_argument(
        "--dry-run", action="store_true", help="only report; write and delete nothing"
    )
    compact = archive.add_parser(
        "compact",
        help="compact a closed month into one object per account and bucket (oldest first)",
    )
    compact.add_argument("--month", required=True, help="YYYY-MM, closed and settled")
    compact.add_argument("--account", help="one account (default: every account active then)")


def run(args: argparse.Namespace) -> None:
    if args.action == "compact":
        _compact(args)
        return
    from forge.domain.views import TimeRange
    from forge.ledger.archive_replay import replay_archive, replay_failure_queue
    from forge.settings import get_settings
    from forge.wiring import get_archive, get_failure_queue, get_store

    if args.from_queue is None:
        if args.start is None or args.end is None:
            _usage("archive replay needs --from and --to, or --from-queue")
        window = TimeRange.of(args.start, args.end)
        report = replay_archive(get_store(), get_archive(), window, dry_run=args.dry_run)
        _print_line(
            {
                "from": _iso(window.start),
                "to": _iso(window.end),
                "entries_seen": report.seen,
                "entries_archived": report.written,
                "already_archived": report.present,
                "entries_missing": report.missing,
                "dry_run": args.dry_run,
            }
        )
        return
    if args.start is not None or args.end is not None:
        _usage("--from-queue replays the windows its messages name: drop --from and --to")
    queue_url = args.from_queue or get_settings().archive_failure_queue_url
    if not queue_url:
        _usage("no queue: pass --from-queue QUEUE_URL, or --stack NAME to use its failure queue")
    queued = replay_failure_queue(
        get_failure_queue(queue_url), get_store(), get_archive(), dry_run=args.dry_run
    )
    _print_line(
        {
            "queue": queue_url,
            "messages": queued.messages,
            "windows": queued.windows,
            "messages_deleted": queued.deleted,
            "messages_unreadable": queued.unreadable,
            "entries_seen": queued.entries.seen,
            "entries_archived": queued.entries.written,
            "already_archived": queued.entries.present,
            "entries_missing": queued.entries.missing,
            "dry_run": args.dry_run,
        }
    )
    if queued.unreadable:
        print(
            f"forge-admin: {len(queued.unreadable)} message(s) are not on-failure records of a"
            " DynamoDB stream; left in the queue",
            file=sys.stderr,
        )
        raise SystemExit(1)


def _compact(args: argparse.Namespace) -> None:
    from forge.domain.calendar import Month
    from forge.domain.errors import ForgeError
    from forge.ledger.statements import compact_month
    from forge.wiring import get_archive, get_ledger_views

    month, archive, ledger = Month.parse(args.month), get_archive(), get_ledger_views()
    accounts = [args.account] if args.account else archive.accounts_with_activity(month)
    compacted, failed = [], {}
    for account_id in accounts:
        try:
            compact_month(archive, ledger, account_id, month)
            compacted.append(account_id)
        except ForgeError as exc:
            failed[account_id] = exc.code
    _print_line({"month": str(month), "compacted": compacted, "failed": failed})
    if failed:
        raise SystemExit(1)


def _instant(text: str) -> datetime:
    """A CLI date or time, UTC unless it says otherwise."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else as_utc(moment).isoformat().replace("+00:00", "Z")


def _print_line(value: dict[str, Any]) -> None:
    print(json.dumps(value))


def _usage(reason: str) -> NoReturn:
    print(f"forge-admin: {reason}", file=sys.stderr)
    raise SystemExit(2)
