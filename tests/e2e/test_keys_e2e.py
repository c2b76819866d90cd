"""An account's owner on the running local stack: `forge-admin account create` hands out the
first management key, which makes an inference key the official openai SDK then uses, rotates
it (the old secret works in its grace) and revokes it (refused within 2 s). `make dev`'s own
management key and console URL are in dev.env."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.e2e.conftest import LocalStack
from tests.e2e.helpers import credit_account, forge_admin, sdk

MESSAGES = [{"role": "user", "content": "Hello"}]


def test_dev_env_names_the_management_key_and_the_console(local_stack: LocalStack) -> None:
    console = local_stack.env["FORGE_CONSOLE_URL"]
    assert console == local_stack.base_url.removesuffix("/v1") + "/console/"
    owner = {"Authorization": f"Bearer {local_stack.env['FORGE_MANAGEMENT_KEY']}"}
    keys = httpx.get(f"{local_stack.base_url}/keys", headers=owner, timeout=10).json()["data"]
    assert {k["kind"] for k in keys} == {"inference", "management"}


def test_an_owner_makes_rotates_and_revokes_a_key(local_stack: LocalStack) -> None:
    account_id, owner_key = forge_admin(
        local_stack, "account", "create", "--name", "owner"
    ).splitlines()
    credit_account(local_stack, account_id, "1")
    owner = httpx.Client(
        base_url=local_stack.base_url, headers={"Authorization": f"Bearer {owner_key}"}, timeout=10
    )
    with owner:
        created = owner.post(
            "/keys",
            json={
                "name": "agent",
                "models": ["demo-official"],
                "caps": {"credit": {"run_budget": "0.05"}},
            },
        )
        assert created.status_code == 201, created.text
        key = created.json()
        client = sdk(local_stack, key["key"])
        assert client.chat.completions.create(model="demo-official", messages=MESSAGES).choices
        with pytest.raises(openai.PermissionDeniedError) as refused:
            client.chat.completions.create(model="demo-routed", messages=MESSAGES)
        assert refused.value.code == "model_not_allowed"

        new = owner.post(f"/keys/{key['id']}/rotate", json={"grace_seconds": 600}).json()
        assert client.chat.completions.create(model="demo-official", messages=MESSAGES).choices
        rotated = sdk(local_stack, new["key"])
        assert rotated.chat.completions.create(model="demo-official", messages=MESSAGES).choices

        assert owner.post(f"/keys/{key['id']}/revoke").json()["status"] == "revoked"
        revoked_at = time.monotonic()
        for secret in (rotated, client):  # the new secret, and the old one in its grace
            while True:
                try:
                    secret.chat.completions.create(model="demo-official", messages=MESSAGES)
                except openai.AuthenticationError:
                    break
                assert time.monotonic() - revoked_at < 2.0, "still served 2 s after the revoke"

        audit = owner.get("/audit").json()["data"]
        assert [e["action"] for e in audit[:3]] == ["key.revoke", "key.rotate", "key.create"]
        # an inference key cannot manage
        as_key = httpx.get(
            f"{local_stack.base_url}/keys",
            headers={"Authorization": f"Bearer {new['key']}"},
            timeout=10,
        )
        assert as_key.status_code == 401  # revoked; and before that 403 insufficient_scope
