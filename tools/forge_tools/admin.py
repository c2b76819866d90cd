"""forge-admin: the operator CLI. Works against the local stack (after `source .local/dev.env`)
and against a deployed stack (`--stack NAME` reads table and bucket names from its outputs)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from forge.domain.errors import ForgeError
from forge.domain.money import Bucket, format_micros
from forge.domain.records import MAX_SHARDS
from forge_tools import archive_admin, catalog_admin, provider_admin

if TYPE_CHECKING:
    from forge.domain.money_in import RedeemCode
    from forge.domain.records import Wallet

_OUTPUT_TO_ENV = {
    "BudgetTableName": "BUDGET_TABLE",
    "LedgerTableName": "LEDGER_TABLE",
    "ArchiveBucketName": "ARCHIVE_BUCKET",
    "ArchiveFailureQueueUrl": "ARCHIVE_FAILURE_QUEUE_URL",
    "ProviderSecretArn": "FORGE_PROVIDER_SECRET_ID",
}


def _fail(reason: str) -> NoReturn:
    """A setup problem: one line saying what to do, exit 2 (as argparse does for usage)."""
    print(f"forge-admin: {reason}", file=sys.stderr)
    raise SystemExit(2)


def _use_stack(stack: str) -> None:
    """Point the settings at a deployed stack's resources, from its CloudFormation outputs."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        outputs = boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    except (BotoCoreError, ClientError) as exc:
        _fail(f"cannot read the outputs of stack {stack!r}: {exc}")
    # The template's name for it, for a stack deployed before it had the output.
    os.environ["FORGE_PROVIDER_SECRET_ID"] = f"{stack}/providers"
    for output in outputs.get("Outputs", []):
        if env_name := _OUTPUT_TO_ENV.get(output["OutputKey"]):
            os.environ[env_name] = output["OutputValue"]


def _require_stack() -> None:
    """The settings, validated up front: without a stack to work on, say how to name one
    instead of showing the validation error's traceback."""
    from forge.settings import get_settings

    try:
        get_settings()
    except ValidationError as exc:
        errors = exc.errors()
        missing = [str(e["loc"][0]) for e in errors if e["type"] == "missing"]
        if missing:
            _fail(
                f"no stack configured ({', '.join(missing)} unset): run"
                " `source .local/dev.env` (local) or pass --stack NAME"
            )
        _fail(f"invalid setting {errors[0]['loc'][0]}: {errors[0]['msg']}")


def _print(value: Any) -> None:
    # pydantic's JSON forms, the API's: instants as ISO 8601 in UTC with `Z`.
    print(json.dumps(to_jsonable_python(value), indent=2))


def _describe_wallet(wallet: Wallet, *, micros: bool) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "currency": wallet.bucket.currency,
        "balance": format_micros(wallet.balance),
        "held": format_micros(wallet.held),
        "available": format_micros(wallet.available),
        "seq": wallet.seq,
    }
    if wallet.shards > 1:
        shown["shards"] = wallet.shards  # seq: the entries of all its series
    if micros:
        shown |= {
            "balance_micros": wallet.balance,
            "held_micros": wallet.held,
            "available_micros": wallet.available,
        }
    return shown


def _describe_code(code: RedeemCode) -> dict[str, Any]:
    return {
        "code": code.code,
        "status": code.state(datetime.now(UTC)),
        "bucket": code.bucket.value,
        "amount": format_micros(code.amount),
        "claims": code.claim_count,
        "max_claims": code.max_claims,
        "expires_at": code.expires_at,
        "memo": code.memo,
        "created_at": code.created_at,
    }


_KEY_CAPS = ("daily", "monthly", "total", "run_budget", "max_request_charge")
_PROJECT_CAPS = ("daily", "monthly")


def _add_cap_flags(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    for name in names:
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            action="append",
            default=[],
            metavar="BUCKET=AMOUNT",
            help="e.g. credit=5.00 (repeat for the other bucket; AMOUNT 'none' removes it)",
        )


def _caps(args: argparse.Namespace, names: tuple[str, ...]) -> dict[Bucket, dict[str, int | None]]:
    """--daily credit=5 --daily rmb=30 ... -> {Bucket.CREDIT: {"daily": 5_000_000}, ...}."""
    from forge.domain.money import decimal_to_micros

    caps: dict[Bucket, dict[str, int | None]] = {}
    for name in names:
        for value in getattr(args, name):
            bucket, _, amount = value.partition("=")
            micros = None if amount == "none" else decimal_to_micros(amount)
            caps.setdefault(Bucket(bucket), {})[name] = micros
    return caps


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forge-admin", description=__doc__)
    parser.add_argument("--stack", help="deployed stack name (default: use the environment)")
    groups = parser.add_subparsers(dest="group", required=True)

    account = groups.add_parser("account").add_subparsers(dest="action", required=True)
    create = account.add_parser(
        "create", help="create an account; prints its id, then its first management key (once)"
    )
    create.add_argument("--name", required=True)

    key = groups.add_parser("key").add_subparsers(dest="action", required=True)
    key_create = key.add_parser("create", help="create an API key; prints it once")
    key_create.add_argument("--account", required=True)
    key_create.add_argument("--project", default="default")
    key_create.add_argument(
        "--route-types", default="official,routed", help="which route types it may use"
    )
    _add_cap_flags(key_create, _KEY_CAPS)
    key_caps = key.add_parser("caps", help="change a key's spend limits and retry ceiling")
    key_caps.add_argument("--account", required=True)
    key_caps.add_argument("--key-id", required=True)
    _add_cap_flags(key_caps, _KEY_CAPS)
    key_caps.add_argument(
        "--max-upstream-attempts",
        type=int,
        help="upstream calls one request may make, retries and fallbacks included (0: default)",
    )
    for status, verb in (("paused", "pause"), ("revoked", "revoke"), ("active", "activate")):
        change = key.add_parser(verb, help=f"mark a key {status} (applies within 2 s)")
        change.add_argument("--account", required=True)
        change.add_argument("--key-id", required=True)

    project = groups.add_parser("project").add_subparsers(dest="action", required=True)
    project_caps = project.add_parser("caps", help="set a project's daily/monthly limits")
    project_caps.add_argument("--account", required=True)
    project_caps.add_argument("--project", required=True)
    _add_cap_flags(project_caps, _PROJECT_CAPS)

    holds = groups.add_parser("holds").add_subparsers(dest="action", required=True)
    holds.add_parser("sweep", help="resolve expired holds now (the scheduled sweeper's job)")
    groups.add_parser("reconcile", help="check conservation of every account; exit 1 on drift")

    wallet = groups.add_parser("wallet").add_subparsers(dest="action", required=True)
    credit = wallet.add_parser("credit", help="top up a bucket (decimal amount)")
    credit.add_argument("--account", required=True)
    credit.add_argument("--bucket", choices=[b.value for b in Bucket], required=True)
    credit.add_argument("--amount", required=True, help="decimal, e.g. 12.50")
    credit.add_argument("--memo", default="operator top-up")
    show = wallet.add_parser("show", help="balances of both buckets, in their currencies")
    show.add_argument("--account", required=True)
    show.add_argument(
        "--micros",
        action="store_true",
        help="also the integer micro-units, as stored and as `reconcile` reports drift",
    )
    adjust = wallet.add_parser("adjust", help="correct a bucket by a signed amount, with a reason")
    adjust.add_argument("--account", required=True)
    adjust.add_argument("--bucket", choices=[b.value for b in Bucket], required=True)
    adjust.add_argument("--amount", required=True, help="signed decimal, e.g. -1.25 or 3")
    adjust.add_argument("--reason", required=True, help="kept on the ledger entry")
    shard = wallet.add_parser(
        "shard", help="split a busy bucket into more shards (docs/shards.md); never fewer"
    )
    shard.add_argument("--account", required=True)
    shard.add_argument("--bucket", choices=[b.value for b in Bucket], required=True)
    shard.add_argument(
        "--shards", type=int, required=True, choices=range(1, MAX_SHARDS + 1), metavar="N"
    )
    refund = wallet.add_parser("refund", help="credit back a request's charge (once per request)")
    refund.add_argument("--account", required=True)
    refund.add_argument("--request-id", required=True)
    refund.add_argument("--amount", help="decimal, at most the charge (default: all of it)")
    refund.add_argument("--reason", help="kept on the ledger entry")

    code = groups.add_parser("code").add_subparsers(dest="action", required=True)
    code_create = code.add_parser("create", help="create a redeem code; prints it")
    code_create.add_argument("--bucket", choices=[b.value for b in Bucket], required=True)
    code_create.add_argument("--amount", required=True, help="decimal granted per account")
    code_create.add_argument("--max-claims", type=int, help="how many accounts may claim it")
    code_create.add_argument(
        "--expires", type=date.fromisoformat, help="last UTC day it can be claimed (YYYY-MM-DD)"
    )
    code_create.add_argument("--memo", help="shown on each grant's ledger entry")
    code_disable = code.add_parser("disable", help="stop a code granting anything more")
    code_disable.add_argument("--code", required=True)
    code.add_parser("list", help="every code with its status and claims")

    statement = groups.add_parser("statement").add_subparsers(dest="action", required=True)
    build = statement.add_parser(
        "build", help="build a month's statement (CSV and HTML); a final one is only checked"
    )
    build.add_argument("--account", help="one account (default: every account with activity)")
    build.add_argument("--month", required=True, help="YYYY-MM")
    statement_list = statement.add_parser(
        "list", help="an account's statement months, and how each is stored (if it is)"
    )
    statement_list.add_argument("--account", required=True)

    ledger = groups.add_parser("ledger").add_subparsers(dest="action", required=True)
    ledger_show = ledger.add_parser("show", help="an account's ledger entries, newest first")
    ledger_show.add_argument("--account", required=True)
    ledger_show.add_argument("--bucket", choices=[b.value for b in Bucket])
    ledger_show.add_argument("--from", dest="start", type=_instant, help="YYYY-MM-DD[THH:MM]")
    ledger_show.add_argument("--to", dest="end", type=_instant, help="exclusive")
    ledger_show.add_argument("--limit", type=int, default=50)
    ledger_show.add_argument("--cursor", help="next_cursor of the previous page")
    catalog_admin.add_parser(groups)
    archive_admin.add_parser(groups)
    provider_admin.add_parser(groups)
    return parser


def _instant(text: str) -> datetime:
    """A CLI date or time, UTC unless it says otherwise."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run(args: argparse.Namespace) -> None:
    from forge.domain.money import RouteType
    from forge.domain.records import KeyCaps, KeyStatus, ProjectCaps
    from forge.domain.views import TimeRange, page_size
    from forge.ledger.reconcile import reconcile
    from forge.ledger.statements import (
        available_months,
        build_month_for_all,
        ensure_statement,
        statement_month,
    )
    from forge.ledger.sweeper import sweep
    from forge.money_in import accounts, adjustments, codes
    from forge.wiring import get_archive, get_ledger_views, get_store

    if args.group == "catalog":
        catalog_admin.run(args)
        return
    if args.group == "archive":
        archive_admin.run(args)
    if args.group == "providers":
        provider_admin.run(args)
        return
    store = get_store()
    match (args.group, getattr(args, "action", None)):
        case ("account", "create"):
            account_id, owner_key = accounts.create_account_with_owner_key(store, args.name)
            print(account_id)
            print(owner_key)
            print(
                "account id, then its first management key (shown once; only its hash is"
                " stored): it manages keys and projects through /v1/keys and /v1/projects",
                file=sys.stderr,
            )
        case ("key", "create"):
            plaintext, key = accounts.issue_key(
                store,
                args.account,
                args.project,
                route_types=frozenset(RouteType(t) for t in args.route_types.split(",")),
                caps={b: KeyCaps(**c) for b, c in _caps(args, _KEY_CAPS).items()},
            )
            print(plaintext)
            print(f"key id {key.key_id} (shown once; only its hash is stored)", file=sys.stderr)
        case ("key", "caps"):
            existing = store.update_api_key(args.account, args.key_id)
            key_caps = {b: c.model_dump() for b, c in existing.caps.items()}
            for bucket, bucket_caps in _caps(args, _KEY_CAPS).items():
                key_caps[bucket] = {**key_caps.get(bucket, {}), **bucket_caps}
            update: dict[str, Any] = {"caps": key_caps}
            if args.max_upstream_attempts is not None:
                update["max_upstream_attempts"] = args.max_upstream_attempts or None
            updated = store.update_api_key(args.account, args.key_id, **update)
            _print(
                updated.model_dump(mode="json", include={"key_id", "caps", "max_upstream_attempts"})
            )
        case ("key", "pause" | "revoke" | "activate" as verb):
            status = {"pause": KeyStatus.PAUSED, "revoke": KeyStatus.REVOKED}.get(
                verb, KeyStatus.ACTIVE
            )
            updated = store.update_api_key(args.account, args.key_id, status=status)
            _print(updated.model_dump(mode="json", include={"key_id", "status"}))
        case ("project", "caps"):
            merged = {
                b: c.model_dump()
                for b, c in store.get_project_caps(args.account, args.project).items()
            }
            for bucket, changes in _caps(args, _PROJECT_CAPS).items():
                merged[bucket] = {**merged.get(bucket, {}), **changes}
            project_caps = {b: ProjectCaps(**c) for b, c in merged.items()}
            store.put_project_caps(args.account, args.project, project_caps)
            _print({b.value: c.model_dump() for b, c in project_caps.items()})
        case ("holds", "sweep"):
            _print(sweep(store, datetime.now(UTC)).model_dump())
        case ("reconcile", _):
            report = reconcile(store, datetime.now(UTC))
            _print(report.model_dump(mode="json"))
            if not report.ok:
                raise SystemExit(1)
        case ("wallet", "credit"):
            entry = accounts.credit_wallet(
                store,
                args.account,
                Bucket(args.bucket),
                args.amount,
                source="forge-admin",
                memo=args.memo,
            )
            _print(
                {
                    "entry_id": entry.entry_id,
                    "bucket": entry.bucket.value,
                    "amount": format_micros(entry.amount),
                    "balance_after": format_micros(entry.balance_after),
                }
            )
        case ("wallet", "adjust"):
            entry = adjustments.adjust_wallet(
                store, args.account, Bucket(args.bucket), args.amount, reason=args.reason
            )
            _print(adjustments.describe_entry(entry))
        case ("code", "create"):
            created = codes.create_code(
                store,
                Bucket(args.bucket),
                args.amount,
                max_claims=args.max_claims,
                expires=args.expires,
                memo=args.memo,
            )
            print(created.code)
            print(
                f"{format_micros(created.amount)} {created.bucket.currency} per account"
                f" (max claims: {created.max_claims or 'unlimited'},"
                f" expires: {created.expires_at or 'never'})",
                file=sys.stderr,
            )
        case ("code", "disable"):
            _print(_describe_code(codes.disable_code(store, args.code)))
        case ("code", "list"):
            _print([_describe_code(c) for c in codes.list_codes(store)])
        case ("wallet", "show"):
            _print(
                {
                    b.value: _describe_wallet(store.get_wallet(args.account, b), micros=args.micros)
                    for b in Bucket
                }
            )
        case ("wallet", "shard"):
            if not store.account_exists(args.account):
                _fail(f"no account '{args.account}'")
            current = len(store.wallet_shards(args.account, Bucket(args.bucket)))
            if args.shards < current:
                _fail(f"the bucket has {current} shards already; shards are never merged")
            shards = store.shard_wallet(args.account, Bucket(args.bucket), args.shards)
            _print([{"shard": w.shard, **_describe_wallet(w, micros=True)} for w in shards])
        case ("wallet", "refund"):
            entry = adjustments.refund_charge(
                store, args.account, args.request_id, args.amount, reason=args.reason
            )
            _print(adjustments.describe_entry(entry))
        case ("statement", "build"):
            views = get_ledger_views()
            if args.account is None:
                run_all = build_month_for_all(get_archive(), views, args.month, rebuild=True)
                _print(run_all.model_dump())
                if run_all.failed:
                    raise SystemExit(1)
            else:
                # The months the API serves, no others: one before the account's first ledger
                # entry would otherwise be built, empty, and stored.
                first = views.first_entry_at(args.account)
                statement_month(args.account, first, args.month, datetime.now(UTC))
                key_name = ensure_statement(
                    get_archive(), views, args.account, args.month, rebuild=True
                )
                print(key_name)
                print(key_name.removesuffix(".csv") + ".html")
        case ("statement", "list"):
            months = available_months(
                get_ledger_views().first_entry_at(args.account), datetime.now(UTC)
            )
            archive = get_archive()
            _print(
                [
                    {
                        "month": m.month,
                        "status": "final" if m.final else "provisional",
                        "stored": archive.stored_statement(args.account, m.month),
                    }
                    for m in months
                ]
            )
        case ("ledger", "show"):
            page = get_ledger_views().entries(
                args.account,
                bucket=Bucket(args.bucket) if args.bucket else None,
                window=TimeRange.of(args.start, args.end),
                limit=page_size(args.limit),
                cursor=args.cursor,
            )
            _print(
                {
                    "entries": [
                        {**adjustments.describe_entry(e), "seq": e.seq, "created_at": e.created_at}
                        | {"request_id": e.request_id, "model": e.model, "route": e.route}
                        for e in page.items
                    ],
                    "next_cursor": page.next_cursor,
                }
            )


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.stack:
        _use_stack(args.stack)
    _require_stack()
    try:
        run(args)
    except ForgeError as exc:
        print(f"error: {exc.message} ({exc.code})", file=sys.stderr)
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
