"""Provider keys: from the environment locally, from one Secrets Manager secret on AWS
(re-read at most every FORGE_PROVIDER_REFRESH_SECONDS), never logged; a provider without a key
is not offered."""

from __future__ import annotations

import json
import logging

import pytest

from forge.providers.http import HttpProvider
from forge.providers.registry import configured_providers
from forge.settings import get_settings
from forge.wiring import get_provider_secret
from forge_tools.emulator import Emulator, Resources


def key_of(provider: object) -> str:
    """The key a provider would send now (its HTTP side resolves it per call)."""
    assert isinstance(provider, HttpProvider)
    return provider._http.key()


class RecordingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.getMessage()} {record.__dict__}")


def test_keys_come_from_the_secret_and_the_environment_wins(
    aws_stack: Resources,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"{aws_stack.tables['BudgetTable']}/providers"
    emulator.client("secretsmanager").create_secret(
        Name=name,
        SecretString=json.dumps({"anthropic": "sk-ant-secret", "gemini": "g-secret"}),
    )
    for variable in ("OPENAI_UPSTREAM_API_KEY", "ANTHROPIC_UPSTREAM_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("FORGE_PROVIDER_SECRET_ID", name)
    monkeypatch.setenv("GEMINI_UPSTREAM_API_KEY", "g-env")
    get_settings.cache_clear()
    settings = get_settings()

    records = RecordingHandler()
    root = logging.getLogger()
    root.addHandler(records)
    level = root.level
    root.setLevel(logging.INFO)  # as deployed (POWERTOOLS_LOG_LEVEL)
    try:
        secret = get_provider_secret(settings)
        assert secret is not None
        providers = configured_providers(settings, secret.read)
        anthropic_key = key_of(providers["anthropic"])
        gemini_key = key_of(providers["gemini"])
    finally:
        root.removeHandler(records)
        root.setLevel(level)

    assert {"anthropic", "gemini"} <= set(providers) and "openai" not in providers
    assert anthropic_key == "sk-ant-secret"
    assert gemini_key == "g-env"  # the environment wins over the secret
    logged = "\n".join(records.lines) + repr(settings)
    assert "sk-ant-secret" not in logged and "g-env" not in logged


def test_an_unreadable_secret_offers_no_provider(
    aws_stack: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("OPENAI_UPSTREAM_API_KEY", "ANTHROPIC_UPSTREAM_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("GEMINI_UPSTREAM_API_KEY", raising=False)
    monkeypatch.setenv("FORGE_PROVIDER_SECRET_ID", "no/such/secret")
    get_settings.cache_clear()

    records = RecordingHandler()
    logging.getLogger().addHandler(records)
    try:
        secret = get_provider_secret()
        assert secret is not None
        providers = configured_providers(get_settings(), secret.read)
    finally:
        logging.getLogger().removeHandler(records)

    assert "provider_secret_unreadable" in "\n".join(records.lines)
    assert not {"openai", "anthropic", "gemini"} & set(providers)
