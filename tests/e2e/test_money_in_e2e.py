"""Money in through the running local stack: a signed payment webhook tops up exactly once,
forged or stale ones move nothing, and a redeem code grants once per account over HTTP."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx

from forge.domain.money import Bucket
from forge.domain.records import LedgerKind
from forge.money_in.codes import create_code, normalize_code
from forge.money_in.webhooks import PAYMENT_SUCCEEDED, sign_payload
from tests.e2e.conftest import E2E_WEBHOOK_SECRET, LocalStack
from tests.e2e.helpers import new_customer
from tests.e2e.test_refusals import assert_openai_error, unchanged
from tests.e2e.test_statement_trip import forge_admin


def webhook_body(account_id: str, amount: str, bucket: str = "credit") -> tuple[str, bytes]:
    event_id = f"evt_{uuid.uuid4().hex}"
    event = {
        "id": event_id,
        "type": PAYMENT_SUCCEEDED,
        "created": int(time.time()),
        "data": {
            "account_id": account_id,
            "bucket": bucket,
            "amount": amount,
            "payment_id": f"pi_{uuid.uuid4().hex[:12]}",
        },
    }
    return event_id, json.dumps(event).encode()


def post_webhook(stack: LocalStack, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Forge-Signature"] = signature
    return httpx.post(f"{stack.base_url}/webhooks/payments", content=body, headers=headers)


def redeem(stack: LocalStack, key: str, code: str) -> httpx.Response:
    return httpx.post(
        f"{stack.base_url}/redeem",
        headers={"Authorization": f"Bearer {key}"},
        json={"code": code},
    )


def test_the_stack_verifies_with_the_secret_it_wrote_to_dev_env(local_stack: LocalStack) -> None:
    assert local_stack.env["FORGE_WEBHOOK_SECRET"] == E2E_WEBHOOK_SECRET


def test_a_signed_payment_tops_up_exactly_once(local_stack: LocalStack) -> None:
    account_id, _ = new_customer(local_stack, credit="1.00", rmb="0")
    store = local_stack.store()
    event_id, body = webhook_body(account_id, "12.345678")
    signature = sign_payload(E2E_WEBHOOK_SECRET, body, int(time.time()))

    first = post_webhook(local_stack, body, signature)

    assert first.status_code == 200, first.text
    ack: dict[str, Any] = first.json()
    assert ack["status"] == "credited" and ack["event_id"] == event_id
    assert first.headers["x-request-id"].startswith("req_")
    wallet = store.get_wallet(account_id, Bucket.CREDIT)
    assert wallet.balance == wallet.available == 1_000_000 + 12_345_678
    topups = [e for e in store.list_entries(account_id, Bucket.CREDIT) if e.source != "test"]
    assert len(topups) == 1
    assert topups[0].kind is LedgerKind.TOPUP and topups[0].amount == 12_345_678
    assert topups[0].entry_id == ack["ledger_entry_id"]
    assert topups[0].source == f"payment:{json.loads(body)['data']['payment_id']}"

    check = unchanged(local_stack, account_id)
    again = post_webhook(
        local_stack, body, sign_payload(E2E_WEBHOOK_SECRET, body, int(time.time()))
    )
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "duplicate"
    assert again.json()["ledger_entry_id"] == ack["ledger_entry_id"]
    check()


def test_forged_stale_or_unsigned_webhooks_move_nothing(local_stack: LocalStack) -> None:
    account_id, _ = new_customer(local_stack)
    check = unchanged(local_stack, account_id)
    _, body = webhook_body(account_id, "100")
    now = int(time.time())

    forged = post_webhook(local_stack, body, sign_payload("whsec_guess", body, now))
    assert_openai_error(forged, 400, "invalid_signature")
    assert forged.json()["error"]["reason"] == "mismatch"

    stale = post_webhook(local_stack, body, sign_payload(E2E_WEBHOOK_SECRET, body, now - 301))
    assert_openai_error(stale, 400, "invalid_signature")
    assert stale.json()["error"]["reason"] == "timestamp_too_old"

    tampered = body.replace(b'"100"', b'"1000"')
    assert tampered != body
    moved = post_webhook(local_stack, tampered, sign_payload(E2E_WEBHOOK_SECRET, body, now))
    assert_openai_error(moved, 400, "invalid_signature")

    assert_openai_error(post_webhook(local_stack, body, None), 400, "invalid_signature")
    check()


def test_a_signed_but_invalid_event_is_a_client_error_not_a_500(local_stack: LocalStack) -> None:
    account_id, _ = new_customer(local_stack)
    check = unchanged(local_stack, account_id)
    now = int(time.time())
    for body, status, code in [
        (b"{not json", 400, "invalid_json"),
        (webhook_body(account_id, "0.0000001")[1], 400, "invalid_request"),
        (webhook_body("acct_nobody", "1")[1], 404, "not_found"),
    ]:
        response = post_webhook(local_stack, body, sign_payload(E2E_WEBHOOK_SECRET, body, now))
        assert_openai_error(response, status, code)
    check()


def test_a_code_is_redeemed_once_per_account_through_the_api(local_stack: LocalStack) -> None:
    first_account, first_key = new_customer(local_stack, credit="0", rmb="1.00")
    second_account, second_key = new_customer(local_stack, credit="0", rmb="0")
    store = local_stack.store()
    code = create_code(store, Bucket.RMB, "8.88", max_claims=5).code

    granted = redeem(local_stack, first_key, code.lower().replace("-", " "))

    assert granted.status_code == 200, granted.text
    body = granted.json()
    assert body["code"] == code and body["kind"] == "grant" and body["bucket"] == "rmb"
    assert (body["amount"], body["amount_micros"]) == ("8.880000", 8_880_000)
    assert body["balance_micros"] == 1_000_000 + 8_880_000
    entries = store.list_entries(first_account, Bucket.RMB)
    assert entries[-1].entry_id == body["ledger_entry_id"]
    assert entries[-1].kind is LedgerKind.GRANT and entries[-1].source == f"code:{code}"

    check = unchanged(local_stack, first_account)
    assert_openai_error(redeem(local_stack, first_key, code), 409, "code_already_claimed")
    check()

    other = redeem(local_stack, second_key, code)
    assert other.status_code == 200, other.text
    assert store.get_wallet(second_account, Bucket.RMB).balance == 8_880_000


def test_redeem_refusals_are_openai_errors(local_stack: LocalStack) -> None:
    account_id, key = new_customer(local_stack)
    check = unchanged(local_stack, account_id)
    assert_openai_error(redeem(local_stack, key, "FORGE-0000-0000-0000"), 404, "code_not_found")
    assert_openai_error(redeem(local_stack, key, "x" * 65), 400, "invalid_request")
    response = httpx.post(f"{local_stack.base_url}/redeem", json={"code": "FORGE-0000-0000-0000"})
    assert_openai_error(response, 401, "invalid_api_key")
    check()


def test_operator_cli_creates_lists_and_disables_codes_and_adjusts(
    local_stack: LocalStack,
) -> None:
    _, first_key = new_customer(local_stack, credit="0", rmb="0")
    second_account, second_key = new_customer(local_stack, credit="2.00", rmb="0")
    code = forge_admin(
        local_stack,
        "code",
        "create",
        "--bucket",
        "credit",
        "--amount",
        "0.75",
        "--max-claims",
        "10",
        "--expires",
        "2999-12-31",
        "--memo",
        "cli promo",
    )
    assert normalize_code(code) == code

    assert redeem(local_stack, first_key, code).status_code == 200
    listed = {c["code"]: c for c in json.loads(forge_admin(local_stack, "code", "list"))}
    assert listed[code]["claims"] == 1 and listed[code]["status"] == "active"
    assert listed[code]["amount"] == "0.750000" and listed[code]["max_claims"] == 10

    disabled = json.loads(forge_admin(local_stack, "code", "disable", "--code", code))
    assert disabled["status"] == "disabled" and disabled["claims"] == 1
    assert_openai_error(redeem(local_stack, second_key, code), 409, "code_disabled")

    adjusted = json.loads(
        forge_admin(
            local_stack,
            "wallet",
            "adjust",
            "--account",
            second_account,
            "--bucket",
            "credit",
            "--amount",
            "-0.5",
            "--reason",
            "reversed test credit",
        )
    )
    assert adjusted["kind"] == "adjustment" and adjusted["amount"] == "-0.500000"
    assert adjusted["balance_after"] == "1.500000" and adjusted["memo"] == "reversed test credit"
    [entry] = [
        e
        for e in local_stack.store().list_entries(second_account, Bucket.CREDIT)
        if e.kind is LedgerKind.ADJUSTMENT
    ]
    assert entry.source == "operator" and entry.amount == -500_000
