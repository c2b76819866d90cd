"""A simulated month through the running local stack: its history written through the real
store on chosen days (payments, a redeemed code, calls from two keys and projects in two runs,
a refund, an adjustment), archived by the stack's own stream poller, then read back over HTTP
as statements (CSV and HTML, by presigned link), ledger pages, usage and runs, and by the
operator CLI. Another tenant's key finds none of it."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import botocore.auth
import httpx
import pytest
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from forge.domain.calendar import Month
from forge.domain.money import Bucket, format_micros
from forge.domain.records import LedgerEntry, LedgerKind
from tests.e2e.conftest import LocalStack
from tests.e2e.helpers import forge_admin, new_customer, sdk, wait_until_archived
from tests.e2e.test_chat_completions import MESSAGES
from tests.ledger_history import History, MonthStory, simulate_month
from tests.statement_check import (
    assert_csv_tells,
    assert_html_tells,
    csv_rows,
    ledger_month,
)


def api(stack: LocalStack, key: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{stack.base_url}{path}", params=params, headers={"Authorization": f"Bearer {key}"}
    )


def ledger_of(stack: LocalStack, account_id: str) -> list[LedgerEntry]:
    return [e for b in Bucket for e in stack.store().list_entries(account_id, b)]


def archived(stack: LocalStack, account_id: str) -> None:
    """Wait until the archive holds exactly the account's ledger, as the table has it."""
    ledger = ledger_of(stack, account_id)
    found = wait_until_archived(stack, account_id, len(ledger))
    assert len(found) == len(ledger), "the archive did not catch up"
    assert sorted(found, key=lambda e: e.entry_id) == sorted(ledger, key=lambda e: e.entry_id)


@pytest.fixture(scope="module")
def month(local_stack: LocalStack) -> MonthStory:
    """Two months ago (closed and settled whatever today is), through the stack's store."""
    history = History(
        local_stack.client("dynamodb"),
        local_stack.env["BUDGET_TABLE"],
        local_stack.env["LEDGER_TABLE"],
    )
    story = simulate_month(history, Month.of(datetime.now(UTC)).previous().previous())
    archived(local_stack, story.account_id)
    return story


def key(story: MonthStory, project: str = "alpha") -> str:
    return story.keys[project][1]


def download(stack: LocalStack, story: MonthStory, fmt: str) -> tuple[dict[str, Any], bytes]:
    link = api(stack, key(story), f"/statements/{story.month}", format=fmt)
    assert link.status_code == 200, link.text
    got = httpx.get(link.json()["url"])
    assert got.status_code == 200, got.text
    name = f"tokens-forge-{story.account_id}-{story.month}.{fmt}"
    assert got.headers["content-disposition"] == f'attachment; filename="{name}"'
    return link.json(), got.content


def test_the_months_statement_is_the_ledgers_story_in_csv_and_html(
    local_stack: LocalStack, month: MonthStory
) -> None:
    # Given the month's history, archived by the stack
    ledger = ledger_of(local_stack, month.account_id)
    kinds = {e.kind for e in ledger if Month.of(e.created_at) == month.month}
    # top-up, grant, charges, refund, adjustment: every kind but transfers, which move money
    # between the shards of a split bucket (this account's are not split)
    assert kinds == set(LedgerKind) - {LedgerKind.TRANSFER}

    # When the statement is listed and downloaded in both formats
    listed = api(local_stack, key(month), "/statements").json()["data"]
    assert [m["month"] for m in listed][-2:] == [str(month.month), str(month.month.previous())]
    link, csv_body = download(local_stack, month, "csv")
    _, html_body = download(local_stack, month, "html")

    # Then both are final, and per bucket both say what the ledger says: the opening, every
    # entry, the totals by kind, charges by key, project, model, route and day, and a closing
    # balance equal to the ledger's at the end of the month; the chart has one bar per day
    # with charges
    assert link["status"] == "final" and link["expires_in"] <= 900
    for bucket in Bucket:
        expected = ledger_month([e for e in ledger if e.bucket is bucket], month.month)
        at_month_end = [e for e in ledger if e.bucket is bucket and e.created_at < month.month.end]
        assert expected.closing == at_month_end[-1].balance_after
        assert_csv_tells(csv_body, bucket, expected, final=True)
        page = assert_html_tells(html_body, bucket, expected, final=True)
        bars = [e for e in page.section(bucket) if e.tag == "rect"]
        assert len(bars) == len(expected.daily) >= 3
    assert len({r["key_id"] for r in csv_rows(csv_body) if r["row_type"] == "entry"} - {""}) == 2

    # And it is immutable: the operator's rebuild checks it and changes no byte
    printed = forge_admin(
        local_stack,
        "statement",
        "build",
        "--account",
        month.account_id,
        "--month",
        str(month.month),
    )
    assert printed.splitlines() == [
        f"statements/{month.account_id}/{month.month}.csv",
        f"statements/{month.account_id}/{month.month}.html",
    ]
    assert download(local_stack, month, "csv")[1] == csv_body
    assert download(local_stack, month, "html")[1] == html_body
    statements = forge_admin(local_stack, "statement", "list", "--account", month.account_id)
    assert f'"month": "{month.month}",\n    "status": "final",\n    "stored": "final"' in statements


# Presigned links -----------------------------------------------------------------------------
def resign(url: str, access_key: str, secret_key: str, region: str) -> str:
    """Sign the URL's request again with botocore's own SigV4 query signer, at the instant and
    for the lifetime the URL states, and return the signature it computes."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    auth = {k: v for k, v in query if k.startswith("X-Amz-")}
    operation = urlencode([(k, v) for k, v in query if not k.startswith("X-Amz-")], quote_via=quote)
    request = AWSRequest(
        method="GET", url=urlunsplit((parts.scheme, parts.netloc, parts.path, operation, ""))
    )
    signed_at = datetime.strptime(auth["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    signer = S3SigV4QueryAuth(
        Credentials(access_key, secret_key), "s3", region, expires=int(auth["X-Amz-Expires"])
    )
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda: signed_at  # type: ignore[assignment]
    try:
        signer.add_auth(request)
    finally:
        botocore.auth.get_current_datetime = original
    return dict(parse_qsl(urlsplit(request.url).query))["X-Amz-Signature"]


@pytest.mark.parametrize("fmt", ["csv", "html"])
def test_the_presigned_link_is_signed_for_that_statement_only(
    local_stack: LocalStack, month: MonthStory, fmt: str
) -> None:
    link = api(local_stack, key(month), f"/statements/{month.month}", format=fmt).json()
    url = link["url"]
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    env = local_stack.env

    # The bucket and key are the caller's own statement, the name a sensible download
    assert (
        parts.path == f"/{env['ARCHIVE_BUCKET']}/statements/{month.account_id}/{month.month}.{fmt}"
    )
    assert params["response-content-disposition"] == (
        f'attachment; filename="tokens-forge-{month.account_id}-{month.month}.{fmt}"'
    )
    assert params["response-content-type"] == f"text/{fmt}; charset=utf-8"
    # Short-lived: at most 15 minutes from a signing instant that is now
    assert int(params["X-Amz-Expires"]) <= 900 and link["expires_in"] <= 900
    signed_at = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - signed_at) < timedelta(minutes=2)
    assert params["X-Amz-Credential"] == (
        f"{env['AWS_ACCESS_KEY_ID']}/{signed_at:%Y%m%d}/{env['AWS_DEFAULT_REGION']}/s3/aws4_request"
    )
    assert params["X-Amz-SignedHeaders"] == "host"

    # The signature is SigV4's over exactly this request (the emulator does not check it)
    region = env["AWS_DEFAULT_REGION"]
    secret = env["AWS_SECRET_ACCESS_KEY"]
    assert resign(url, env["AWS_ACCESS_KEY_ID"], secret, region) == params["X-Amz-Signature"]
    # and it covers the key, the disposition and the lifetime: change one, it no longer fits
    assert resign(url, env["AWS_ACCESS_KEY_ID"], secret + "x", region) != params["X-Amz-Signature"]
    for original, forged in (
        (f"{month.month}.{fmt}", f"{month.month.previous()}.{fmt}"),
        ("attachment", "inline"),
        ("X-Amz-Expires=900", "X-Amz-Expires=3600"),
    ):
        assert original in url
        tampered = url.replace(original, forged)
        assert (
            resign(tampered, env["AWS_ACCESS_KEY_ID"], secret, region) != params["X-Amz-Signature"]
        )


# Tenant isolation ----------------------------------------------------------------------------
def test_another_tenants_key_finds_none_of_its_statements_receipts_runs_or_ledger(
    local_stack: LocalStack, month: MonthStory
) -> None:
    account_a, key_a = new_customer(local_stack)  # active this month only
    archived(local_stack, account_a)  # until then its statement is not ready (503)
    b = month

    # Statements: every one of B's months is 404 for A (A's own current month is A's)
    b_months = [m["month"] for m in api(local_stack, key(b), "/statements").json()["data"]]
    a_months = [m["month"] for m in api(local_stack, key_a, "/statements").json()["data"]]
    assert a_months == [str(Month.of(datetime.now(UTC)))]
    for b_month in b_months:
        response = api(local_stack, key_a, f"/statements/{b_month}")
        if b_month in a_months:
            assert response.status_code == 200
            assert f"/statements/{account_a}/" in response.json()["url"]
            assert b.account_id not in response.json()["url"]
        else:
            assert response.status_code == 404, (b_month, response.text)
            assert response.json()["error"]["code"] == "not_found"

    # Receipts and runs
    for receipt in b.receipts:
        assert api(local_stack, key(b), f"/requests/{receipt.request_id}").status_code == 200
        assert api(local_stack, key_a, f"/requests/{receipt.request_id}").status_code == 404
    for run_id in b.runs:
        assert api(local_stack, key(b), f"/runs/{run_id}").status_code == 200
        assert api(local_stack, key_a, f"/runs/{run_id}").status_code == 404

    # Ledger pages: every cursor of B's ledger is 404 for A, and A's pages hold only A's
    cursor, b_cursors = None, []
    while True:
        page = api(
            local_stack, key(b), "/ledger", limit=4, **({"cursor": cursor} if cursor else {})
        )
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
        b_cursors.append(cursor)
    assert len(b_cursors) >= 3
    for b_cursor in b_cursors:
        refused = api(local_stack, key_a, "/ledger", limit=4, cursor=b_cursor)
        assert refused.status_code == 404, refused.text
        assert b.account_id not in refused.text
    a_entries = api(local_stack, key_a, "/ledger", limit=200).json()["data"]
    assert {e["entry_id"] for e in a_entries} == {
        e.entry_id for e in ledger_of(local_stack, account_a)
    }


# Today, over HTTP ------------------------------------------------------------------------------
def admin_fails(stack: LocalStack, *args: str) -> str:
    env = {"PATH": os.environ["PATH"], **stack.env}
    cli = Path(sys.executable).with_name("forge-admin")
    done = subprocess.run(
        [str(cli), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1, done.stdout
    return done.stderr


def test_todays_calls_redeem_and_refund_tell_the_same_story_everywhere(
    local_stack: LocalStack, month: MonthStory
) -> None:
    # Given calls through the gateway in a run, a redeemed code and an operator refund
    client = sdk(local_stack, key(month, "beta"))
    calls = [
        client.chat.completions.with_raw_response.create(
            model=model,
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_headers={"X-Run-Id": "run-today"},
        )
        for model in ("demo-official", "demo-routed", "demo-official")
    ]
    request_ids = [c.headers["x-request-id"] for c in calls]
    charges = [int(c.headers["x-forge-charge-micros"]) for c in calls]
    code = forge_admin(local_stack, "code", "create", "--bucket", "rmb", "--amount", "3.33")
    redeemed = httpx.post(
        f"{local_stack.base_url}/redeem",
        headers={"Authorization": f"Bearer {key(month, 'beta')}"},
        json={"code": code},
    )
    assert redeemed.status_code == 200, redeemed.text
    refund_args = ["wallet", "refund", "--account", month.account_id, "--request-id"]
    refunded = forge_admin(local_stack, *refund_args, request_ids[0], "--reason", "test refund")
    assert f'"amount": "{format_micros(charges[0])}"' in refunded
    assert "already been refunded" in admin_fails(local_stack, *refund_args, request_ids[0])
    archived(local_stack, month.account_id)
    today = Month.of(datetime.now(UTC))
    ledger = ledger_of(local_stack, month.account_id)
    this_month = [e for e in ledger if Month.of(e.created_at) == today]
    assert [e.kind for e in sorted(this_month, key=lambda e: e.created_at)] == [
        LedgerKind.CHARGE,
        LedgerKind.CHARGE,
        LedgerKind.CHARGE,
        LedgerKind.GRANT,
        LedgerKind.REFUND,
    ]

    # Then the run lists the three calls with their charges
    run = api(local_stack, key(month), "/runs/run-today").json()
    assert [c["request_id"] for c in run["calls"]] == request_ids
    assert [c["charge_micros"] for c in run["calls"]] == charges
    assert {t["bucket"]: t["charge_micros"] for t in run["totals"]} == {
        "credit": charges[0] + charges[2],
        "rmb": charges[1],
    }
    assert {t["bucket"]: t["refunded_micros"] for t in run["totals"]} == {
        "credit": charges[0],  # the first call's refund counts in its run
        "rmb": 0,
    }

    # The usage of this month is the ledger's charges (and refund) of this month, per bucket
    usage = api(local_stack, key(month), "/usage", group_by="project").json()
    assert {(u["group"], u["bucket"], u["charge_micros"]) for u in usage["data"]} == {
        ("beta", "credit", charges[0] + charges[2]),
        ("beta", "rmb", charges[1]),
    }
    assert {(u["group"], u["bucket"], u["refunded_micros"]) for u in usage["data"]} == {
        ("beta", "credit", charges[0]),
        ("beta", "rmb", 0),
    }

    # The ledger view of this month is the store's, newest first, refund on top
    view = api(local_stack, key(month), "/ledger", **{"from": str(today.start.date())}).json()
    assert [e["entry_id"] for e in view["data"]] == [
        e.entry_id for e in sorted(this_month, key=lambda e: e.created_at, reverse=True)
    ]
    assert view["data"][0]["source"] == f"refund:{request_ids[0]}"
    shown = forge_admin(
        local_stack, "ledger", "show", "--account", month.account_id, "--limit", "1"
    )
    assert f'"source": "refund:{request_ids[0]}"' in shown

    # And this month's provisional statement closes on the balance right now
    link = api(local_stack, key(month), f"/statements/{today}").json()
    assert link["status"] == "provisional"
    rows = csv_rows(httpx.get(link["url"]).content)
    for bucket in Bucket:
        [closing] = [
            r
            for r in rows
            if r["bucket"] == bucket.value and r["row_type"] == "closing_provisional"
        ]
        balance = local_stack.store().get_wallet(month.account_id, bucket).balance
        assert closing["balance_after"] == format_micros(balance)
    [refund_row] = [r for r in rows if r["row_type"] == "entry" and r["kind"] == "refund"]
    assert refund_row["source"] == f"refund:{request_ids[0]}"
    assert refund_row["memo"] == "test refund"
