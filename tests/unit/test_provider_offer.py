"""The live provider offer: a provider keyed only in the secret is offered exactly while the
secret holds its key, the secret is read at most once per interval (never per request), and
a failed read neither logs the value nor withdraws what was offered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from forge.domain.catalog import load_catalog
from forge.domain.errors import ModelNotFound
from forge.domain.offer import SecretKeys
from forge.gateway import Gateway
from forge.providers.http import HttpProvider
from forge.providers.registry import configured_providers
from forge.settings import Settings

KEY = "sk-unit-never-logged-0123"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Secret:
    """The secret as Secrets Manager would answer it, counting reads."""

    def __init__(self, keys: Mapping[str, str] | None = None) -> None:
        self.keys: dict[str, str] = dict(keys or {})
        self.reads = 0
        self.failing: Exception | None = None

    def read(self) -> Mapping[str, str]:
        self.reads += 1
        if self.failing is not None:
            raise self.failing
        return dict(self.keys)


def settings(**env: str) -> Settings:
    base = {"BUDGET_TABLE": "b", "LEDGER_TABLE": "l", "ARCHIVE_BUCKET": "a"}
    return Settings.model_validate({**base, "FORGE_PROVIDER_REFRESH_SECONDS": "60", **env})


def key_of(provider: Any) -> str | None:
    assert isinstance(provider, HttpProvider)
    resolve = provider._http._api_key
    return resolve() if callable(resolve) else resolve


def test_a_key_set_after_the_build_is_offered_within_the_interval_and_not_before() -> None:
    # Given a container built while the secret was the stack's empty placeholder
    secret, clock = Secret(), Clock()
    offer = configured_providers(settings(), secret.read, clock=clock)
    assert set(offer) == set() and secret.reads == 1

    # When the operator sets the OpenAI key
    secret.keys["openai"] = KEY

    # Then requests within the interval make no read and see no change
    clock.now += 59
    assert offer.fresh and "openai" not in offer and secret.reads == 1
    # and the first check after it offers OpenAI, with that key
    clock.now += 1
    assert not offer.fresh
    offer.refresh()
    assert set(offer) == {"openai"} and secret.reads == 2
    assert key_of(offer["openai"]) == KEY

    # When the key is unset, the next check withdraws it
    del secret.keys["openai"]
    clock.now += 60
    offer.refresh()
    assert "openai" not in offer and len(offer) == 0
    # A request planned before the unset still finds its provider: the call fails on that
    # route for want of a key (a fallback), not with an internal error.
    assert key_of(offer["openai"]) is None


def test_the_environment_wins_and_its_providers_are_always_offered() -> None:
    secret, clock = Secret({"openai": KEY, "anthropic": "sk-ant"}), Clock()
    env = {"OPENAI_UPSTREAM_API_KEY": "sk-env", "FORGE_DEMO_BASE_URL": "http://demo/v1"}
    offer = configured_providers(settings(**env), secret.read, clock=clock)
    assert set(offer) == {"demo", "openai", "anthropic"}
    assert key_of(offer["openai"]) == "sk-env"

    # An environment key is offered whatever the secret says
    secret.keys.clear()
    clock.now += 60
    offer.refresh()
    assert set(offer) == {"demo", "openai"} and key_of(offer["openai"]) == "sk-env"


def test_compat_providers_are_offered_from_the_secret_and_unknown_names_ignored() -> None:
    secret = Secret({"deepseek": "sk-ds", "mystery": "x"})
    env = {"FORGE_COMPAT_PROVIDERS": '{"deepseek": "https://api.deepseek.com/v1"}'}
    offer = configured_providers(settings(**env), secret.read, clock=Clock())
    assert set(offer) == {"deepseek"}
    with pytest.raises(KeyError):
        offer["mystery"]


def test_an_unreadable_secret_logs_no_value_and_keeps_what_was_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret, clock = Secret(), Clock()
    secret.failing = ValueError(f"bad JSON near {KEY!r}")  # an error that quotes the value
    keys = SecretKeys(secret.read, refresh_seconds=60, clock=clock)

    keys.refresh()
    assert keys.get("openai") is None  # never read: nothing offered
    assert "provider_secret_unreadable" in caplog.text and KEY not in caplog.text

    secret.failing = None
    secret.keys["openai"] = KEY
    keys.refresh()  # within the interval of the failed read: no read
    assert secret.reads == 1
    clock.now += 60
    keys.refresh()
    assert keys.get("openai") == KEY

    secret.failing = RuntimeError("throttled")
    clock.now += 60
    keys.refresh()
    assert keys.get("openai") == KEY  # an outage withdraws nothing by itself
    assert secret.reads == 3 and KEY not in caplog.text


def test_the_gateway_rechecks_the_offer_at_most_once_per_interval() -> None:
    secret, clock = Secret(), Clock()
    offer = configured_providers(settings(), secret.read, clock=clock)
    gateway = Gateway(object(), offer, load_catalog(), hold_ttl_seconds=960)  # type: ignore[arg-type]

    async def checks() -> list[frozenset[str]]:
        seen = [await gateway.offered_providers() for _ in range(5)]
        secret.keys["openai"] = KEY
        seen += [await gateway.offered_providers() for _ in range(5)]
        clock.now += 60
        seen += [await gateway.offered_providers() for _ in range(5)]
        return seen

    seen = asyncio.run(checks())
    assert seen[:10] == [frozenset()] * 10 and seen[10:] == [frozenset({"openai"})] * 5
    assert secret.reads == 2  # the build's, then one after the interval


def test_a_model_whose_providers_are_not_offered_says_so() -> None:
    with pytest.raises(ModelNotFound) as raised:
        load_catalog().resolve("gpt-4o-mini", frozenset({"demo"}))
    assert raised.value.code == "model_not_found" and raised.value.status == 404
    assert "not available" in raised.value.message and "(openai)" in raised.value.message

    with pytest.raises(ModelNotFound) as unknown:
        load_catalog().resolve("no-such-model", frozenset({"demo"}))
    assert "does not exist" in unknown.value.message
