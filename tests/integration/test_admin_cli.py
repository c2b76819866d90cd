"""forge-admin against the emulated stack, in process: key limits and the retry ceiling."""

from __future__ import annotations

import json

import pytest

from forge.accounts import create_account, issue_key
from forge.ids import hash_api_key
from forge.money import Bucket
from forge.stores import get_store
from forge_tools import admin
from forge_tools.emulator import Resources


def test_key_caps_sets_limits_and_the_retry_ceiling(
    aws_stack: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    store = get_store()
    account_id = create_account(store, "cli")
    plaintext, key = issue_key(store, account_id)
    flags = ["key", "caps", "--account", account_id, "--key-id", key.key_id]

    admin.main([*flags, "--daily", "credit=1.5", "--max-upstream-attempts", "2"])
    shown = json.loads(capsys.readouterr().out)
    assert shown["max_upstream_attempts"] == 2
    stored = store.get_api_key(hash_api_key(plaintext))
    assert stored is not None and stored.max_upstream_attempts == 2
    assert stored.caps_for(Bucket.CREDIT).daily == 1_500_000

    admin.main([*flags, "--max-upstream-attempts", "0", "--daily", "credit=none"])
    stored = store.get_api_key(hash_api_key(plaintext))
    assert stored is not None and stored.max_upstream_attempts is None  # back to the default
    assert stored.caps_for(Bucket.CREDIT).daily is None
