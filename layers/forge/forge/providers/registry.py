"""Which providers this deployment can call, and their keys: from the environment locally,
from one Secrets Manager secret on AWS (a JSON object of provider name to API key, see
forge.providers.secret). A provider keyed in the environment is always offered; one keyed
only in the secret is offered while the secret holds its key, re-read at most every
FORGE_PROVIDER_REFRESH_SECONDS (forge.domain.offer). Keys are never logged."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from forge.domain.offer import KeyReader, ProviderOffer, SecretKeys
from forge.domain.upstream import ChatProvider
from forge.providers.anthropic import AnthropicProvider
from forge.providers.gemini import GeminiProvider
from forge.providers.http import KeySource
from forge.providers.openai import OpenAICompatProvider
from forge.settings import Settings

BUILT_IN = ("openai", "anthropic", "gemini")


def known_providers(settings: Settings) -> tuple[str, ...]:
    """The providers a key can be set for: the built-in ones and FORGE_COMPAT_PROVIDERS."""
    return (*BUILT_IN, *(n for n in settings.compat_providers if n not in BUILT_IN))


def _env_keys(settings: Settings) -> dict[str, str]:
    keys = {
        "openai": settings.openai_api_key,
        "anthropic": settings.anthropic_api_key,
        "gemini": settings.gemini_api_key,
        **settings.compat_api_keys,
    }
    return {name: key for name, key in keys.items() if key}


def configured_providers(
    settings: Settings,
    read_secret: KeyReader | None = None,
    *,
    clock: Callable[[], float] | None = None,
) -> ProviderOffer:
    """Every provider of this deployment, offered as its keys say. The secret is read once
    here (at cold start, as the gateway is built), then whenever the offer is stale."""
    timeout = settings.upstream_timeout_seconds
    env_keys = _env_keys(settings)
    keys = None
    if read_secret is not None:
        keys = SecretKeys(
            read_secret,
            refresh_seconds=settings.provider_refresh_seconds,
            clock=clock or time.monotonic,
        )

    def key(name: str) -> KeySource:
        if name in env_keys:
            return env_keys[name]  # the environment wins over the secret
        if keys is None:
            return lambda: None
        return partial(keys.get, name)

    fixed: dict[str, ChatProvider] = {}
    if settings.demo_base_url:
        fixed["demo"] = OpenAICompatProvider(settings.demo_base_url, "demo", timeout=timeout)
    built: dict[str, ChatProvider] = {
        "openai": OpenAICompatProvider(settings.openai_base_url, key("openai"), timeout=timeout),
        "anthropic": AnthropicProvider(
            settings.anthropic_base_url, key("anthropic"), timeout=timeout
        ),
        "gemini": GeminiProvider(settings.gemini_base_url, key("gemini"), timeout=timeout),
    }
    for name, base_url in settings.compat_providers.items():
        if name not in built and name not in fixed:
            built[name] = OpenAICompatProvider(base_url, key(name), timeout=timeout)
    for name, provider in built.items():
        if name in env_keys and name not in fixed:
            fixed[name] = provider
    keyed = {n: p for n, p in built.items() if n not in fixed} if keys else {}
    offer = ProviderOffer(fixed, keyed, keys)
    offer.refresh()
    return offer
