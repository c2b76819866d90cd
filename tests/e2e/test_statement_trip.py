"""The whole trip through the running stack: charge → ledger stream → archive → statement →
download through the presigned URL → the statement explains the balance."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx

from forge.domain.money import Bucket, format_micros
from tests.e2e.conftest import LocalStack
from tests.e2e.helpers import (
    credit_account,
    forge_admin,
    new_customer,
    sdk,
    wait_until_archived,
)
from tests.e2e.test_chat_completions import MESSAGES


def statement_rows(stack: LocalStack, key: str, month: str) -> tuple[httpx.Response, list[dict]]:
    link = httpx.get(
        f"{stack.base_url}/statements/{month}", headers={"Authorization": f"Bearer {key}"}
    )
    assert link.status_code == 200, link.text
    body = link.json()
    assert body["expires_in"] <= 900
    download = httpx.get(body["url"])
    assert download.status_code == 200
    return download, list(csv.DictReader(io.StringIO(download.text)))


def test_charge_is_archived_and_listed_on_the_downloaded_statement(local_stack: LocalStack) -> None:
    account_id, key = new_customer(local_stack, credit="2.00", rmb="0")
    raw = sdk(local_stack, key).chat.completions.with_raw_response.create(
        model="demo-official",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    charge = int(raw.headers["x-forge-charge-micros"])
    entry_id = raw.headers["x-forge-ledger-entry"]

    entries = local_stack.store().list_entries(account_id, Bucket.CREDIT)
    assert wait_until_archived(local_stack, account_id, len(entries)) == entries
    assert len(entries) == 2

    month = datetime.now(UTC).strftime("%Y-%m")
    download, rows = statement_rows(local_stack, key, month)
    assert f"tokens-forge-{account_id}-{month}.csv" in download.headers["content-disposition"]

    charged = [r for r in rows if r["entry_id"] == entry_id]
    assert len(charged) == 1
    assert charged[0]["kind"] == "charge"
    assert charged[0]["amount"] == format_micros(-charge)
    assert charged[0]["request_id"] == raw.headers["x-request-id"]

    balance = local_stack.store().get_wallet(account_id, Bucket.CREDIT).balance
    closing = [r for r in rows if r["row_type"].startswith("closing") and r["bucket"] == "credit"]
    assert len(closing) == 1
    assert (
        closing[0]["balance_after"] == format_micros(balance) == format_micros(2_000_000 - charge)
    )


def test_a_statement_link_only_ever_reaches_the_callers_own_account(
    local_stack: LocalStack,
) -> None:
    account_a, _ = new_customer(local_stack)
    account_b, key_b = new_customer(local_stack)
    wait_until_archived(local_stack, account_a, 2)
    wait_until_archived(local_stack, account_b, 2)
    month = datetime.now(UTC).strftime("%Y-%m")
    download, rows_b = statement_rows(local_stack, key_b, month)
    assert f"/statements/{account_b}/" in str(download.url)
    assert account_a not in str(download.url)
    assert rows_b and {r["account_id"] for r in rows_b} == {account_b}


def test_admin_cli_creates_an_account_key_and_credit_that_work(local_stack: LocalStack) -> None:
    account_id = forge_admin(
        local_stack, "account", "create", "--name", "CLI customer"
    ).splitlines()[0]
    assert account_id.startswith("acct_")
    key = forge_admin(local_stack, "key", "create", "--account", account_id)
    assert key.startswith("sk-forge-")
    credit_account(local_stack, account_id, "2.50")
    shown = json.loads(forge_admin(local_stack, "wallet", "show", "--account", account_id))
    assert (shown["credit"]["balance"], shown["credit"]["currency"]) == ("2.500000", "USD")

    raw = sdk(local_stack, key).chat.completions.with_raw_response.create(
        model="demo-official",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    assert int(raw.headers["x-forge-balance-after-micros"]) == 2_500_000 - int(
        raw.headers["x-forge-charge-micros"]
    )
    wait_until_archived(local_stack, account_id, 2)
    month = datetime.now(UTC).strftime("%Y-%m")
    statement_keys = forge_admin(
        local_stack, "statement", "build", "--account", account_id, "--month", month
    )
    assert statement_keys.splitlines() == [
        f"statements/{account_id}/{month}.csv",
        f"statements/{account_id}/{month}.html",
    ]


def test_admin_cli_refuses_bad_amounts_clearly(local_stack: LocalStack) -> None:
    env = {"PATH": os.environ["PATH"], **local_stack.env}
    cli = Path(sys.executable).with_name("forge-admin")
    done = subprocess.run(
        [
            str(cli),
            "wallet",
            "credit",
            "--account",
            local_stack.account_id,
            "--bucket",
            "rmb",
            "--amount",
            "1.0000001",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "more than 6 decimal places" in done.stderr
