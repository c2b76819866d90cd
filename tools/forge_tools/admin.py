"""forge-admin: the operator CLI. Works against the local stack (after `source .local/dev.env`)
and against a deployed stack (`--stack NAME` reads table and bucket names from its outputs)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from forge.errors import ForgeError
from forge.money import Bucket, format_micros

_OUTPUT_TO_ENV = {
    "BudgetTableName": "BUDGET_TABLE",
    "LedgerTableName": "LEDGER_TABLE",
    "ArchiveBucketName": "ARCHIVE_BUCKET",
}


def _use_stack(stack: str) -> None:
    """Point the settings at a deployed stack's resources, from its CloudFormation outputs."""
    import boto3

    outputs = boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    for output in outputs.get("Outputs", []):
        if env_name := _OUTPUT_TO_ENV.get(output["OutputKey"]):
            os.environ[env_name] = output["OutputValue"]


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forge-admin", description=__doc__)
    parser.add_argument("--stack", help="deployed stack name (default: use the environment)")
    groups = parser.add_subparsers(dest="group", required=True)

    account = groups.add_parser("account").add_subparsers(dest="action", required=True)
    create = account.add_parser("create", help="create an account; prints its id")
    create.add_argument("--name", required=True)

    key = groups.add_parser("key").add_subparsers(dest="action", required=True)
    key_create = key.add_parser("create", help="create an API key; prints it once")
    key_create.add_argument("--account", required=True)
    key_create.add_argument("--project", default="default")

    wallet = groups.add_parser("wallet").add_subparsers(dest="action", required=True)
    credit = wallet.add_parser("credit", help="top up a bucket (decimal amount)")
    credit.add_argument("--account", required=True)
    credit.add_argument("--bucket", choices=[b.value for b in Bucket], required=True)
    credit.add_argument("--amount", required=True, help="decimal, e.g. 12.50")
    credit.add_argument("--memo", default="operator top-up")
    show = wallet.add_parser("show", help="balances of both buckets")
    show.add_argument("--account", required=True)

    statement = groups.add_parser("statement").add_subparsers(dest="action", required=True)
    build = statement.add_parser("build", help="build (or rebuild) a monthly statement")
    build.add_argument("--account", required=True)
    build.add_argument("--month", required=True, help="YYYY-MM")
    return parser


def run(args: argparse.Namespace) -> None:
    from forge import accounts
    from forge.statements import ensure_statement
    from forge.stores import get_archive, get_store

    store = get_store()
    match (args.group, args.action):
        case ("account", "create"):
            print(accounts.create_account(store, args.name))
        case ("key", "create"):
            plaintext, key = accounts.issue_key(store, args.account, args.project)
            print(plaintext)
            print(f"key id {key.key_id} (shown once; only its hash is stored)", file=sys.stderr)
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
        case ("wallet", "show"):
            _print({b.value: store.get_wallet(args.account, b).model_dump() for b in Bucket})
        case ("statement", "build"):
            key_name = ensure_statement(get_archive(), args.account, args.month, rebuild=True)
            print(key_name)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.stack:
        _use_stack(args.stack)
    try:
        run(args)
    except ForgeError as exc:
        print(f"error: {exc.message} ({exc.code})", file=sys.stderr)
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
