"""The webhook secret comes from the environment locally and from Secrets Manager on AWS."""

from __future__ import annotations

import pytest

from forge.secrets import webhook_secret
from forge.settings import Settings, get_settings
from forge_tools.emulator import Emulator, Resources


def test_the_environment_wins(aws_stack: Resources, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_WEBHOOK_SECRET", "from-env")
    monkeypatch.setenv("FORGE_WEBHOOK_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:1:secret:x")
    get_settings.cache_clear()
    assert webhook_secret(get_settings()) == "from-env"


def test_a_secret_arn_is_read_from_secrets_manager(
    aws_stack: Resources, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = emulator.client("secretsmanager").create_secret(
        Name=f"forge/webhook/{aws_stack.tables['BudgetTable']}", SecretString="from-sm"
    )["ARN"]
    monkeypatch.delenv("FORGE_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("FORGE_WEBHOOK_SECRET_ARN", arn)
    get_settings.cache_clear()
    assert webhook_secret(get_settings()) == "from-sm"


def test_no_secret_means_webhooks_are_off() -> None:
    settings = Settings.model_validate(
        {"BUDGET_TABLE": "b", "LEDGER_TABLE": "l", "ARCHIVE_BUCKET": "a"}
    )
    assert webhook_secret(settings) is None
