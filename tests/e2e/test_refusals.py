"""Requests the gateway refuses: the right status and OpenAI error shape, and no money moves."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai
import pytest

from forge.domain.money import Bucket
from tests.e2e.conftest import LocalStack
from tests.e2e.helpers import new_customer, sdk
from tests.e2e.test_chat_completions import MESSAGES


def assert_openai_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["message"]
    assert response.headers["x-request-id"].startswith("req_")


def unchanged(stack: LocalStack, account_id: str) -> Callable[[], None]:
    store = stack.store()
    before = {b: store.get_wallet(account_id, b) for b in Bucket}
    entries = {b: len(store.list_entries(account_id, b)) for b in Bucket}

    def check() -> None:
        for bucket in Bucket:
            assert store.get_wallet(account_id, bucket) == before[bucket]
            assert store.get_wallet(account_id, bucket).held == 0
            assert len(store.list_entries(account_id, bucket)) == entries[bucket]

    return check


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "missing"),
        ({"Authorization": "Bearer sk-forge-not-a-real-key"}, "wrong"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "not bearer"),
    ],
)
def test_missing_or_wrong_key_is_401(
    local_stack: LocalStack, headers: dict[str, str], why: str
) -> None:
    response = httpx.post(
        f"{local_stack.base_url}/chat/completions",
        headers=headers,
        json={"model": "demo-official", "messages": MESSAGES},
    )
    assert_openai_error(response, 401, "invalid_api_key")


def test_wrong_key_through_the_sdk_is_an_authentication_error(local_stack: LocalStack) -> None:
    with pytest.raises(openai.AuthenticationError) as raised:
        sdk(local_stack, "sk-forge-wrong").chat.completions.create(
            model="demo-official",
            messages=MESSAGES,  # type: ignore[arg-type]
        )
    assert raised.value.code == "invalid_api_key"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b'{"model": "demo-official"}', 400, "invalid_request"),
        (b'{"model": "demo-official", "messages": []}', 400, "invalid_request"),
        (
            b'{"model": "demo-official", "messages": [{"role": "wizard", "content": "x"}]}',
            400,
            "invalid_request",
        ),
        (
            b'{"model": "demo-official", "messages": [{"role": "user", "content": "x"}],'
            b' "max_tokens": 0}',
            400,
            "invalid_request",
        ),
        (
            b'{"model": "demo-official", "messages": [{"role": "user", "content": "x"}],'
            b' "stream_options": {"include_usage": true}}',
            400,
            "invalid_request",
        ),
    ],
)
def test_malformed_bodies_are_refused_and_charge_nothing(
    local_stack: LocalStack, body: bytes, status: int, code: str
) -> None:
    account_id, key = new_customer(local_stack)
    check = unchanged(local_stack, account_id)
    response = httpx.post(
        f"{local_stack.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        content=body,
    )
    assert_openai_error(response, status, code)
    check()


def test_unknown_model_is_404_model_not_found_and_charges_nothing(local_stack: LocalStack) -> None:
    account_id, key = new_customer(local_stack)
    check = unchanged(local_stack, account_id)
    with pytest.raises(openai.NotFoundError) as raised:
        sdk(local_stack, key).chat.completions.create(
            model="gpt-9-imaginary",
            messages=MESSAGES,  # type: ignore[arg-type]
        )
    assert raised.value.code == "model_not_found"
    check()


def test_failed_upstream_releases_the_hold_and_charges_nothing(local_stack: LocalStack) -> None:
    account_id, key = new_customer(local_stack)
    check = unchanged(local_stack, account_id)
    response = httpx.post(
        f"{local_stack.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "demo-unavailable", "messages": MESSAGES},
    )
    assert_openai_error(response, 502, "upstream_unavailable")
    check()
    receipt = httpx.get(
        f"{local_stack.base_url}/requests/{response.headers['x-request-id']}",
        headers={"Authorization": f"Bearer {key}"},
    ).json()
    assert receipt["status"] == "failed"
    assert receipt["charge"] == 0
    assert receipt["attempts"][0]["status"] == 503


def test_an_empty_wallet_is_402_naming_the_envelope(local_stack: LocalStack) -> None:
    account_id, key = new_customer(local_stack, credit="0", rmb="0.000001")
    check = unchanged(local_stack, account_id)
    response = httpx.post(
        f"{local_stack.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "demo-routed", "messages": MESSAGES, "max_tokens": 5},
    )
    assert_openai_error(response, 402, "budget_exceeded")
    error = response.json()["error"]
    assert error["envelope"] == "bucket:rmb"
    assert error["remaining"] == "0.000001"
    check()


def test_one_tenant_cannot_read_another_tenants_receipt(local_stack: LocalStack) -> None:
    _, key_a = new_customer(local_stack)
    _, key_b = new_customer(local_stack)
    raw = sdk(local_stack, key_a).chat.completions.with_raw_response.create(
        model="demo-official",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    request_id = raw.headers["x-request-id"]
    own = httpx.get(
        f"{local_stack.base_url}/requests/{request_id}",
        headers={"Authorization": f"Bearer {key_a}"},
    )
    other = httpx.get(
        f"{local_stack.base_url}/requests/{request_id}",
        headers={"Authorization": f"Bearer {key_b}"},
    )
    assert own.status_code == 200
    assert_openai_error(other, 404, "not_found")
