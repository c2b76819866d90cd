"""Which providers this deployment can call, from settings, and their keys: from the
environment locally, from one Secrets Manager secret on AWS (a JSON object of provider name
to API key, read through Powertools' cached parameters). Keys are never logged."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from forge.domain.upstream import ChatProvider
from forge.providers.anthropic import AnthropicProvider
from forge.providers.gemini import GeminiProvider
from forge.providers.openai import OpenAICompatProvider
from forge.settings import Settings

logger = logging.getLogger(__name__)
_SECRET_CACHE_SECONDS = 300  # a rotated key is picked up within five minutes


def _secret_keys(secret_id: str) -> dict[str, str]:
    # Imported here: only deployments that keep keys in Secrets Manager pay for it.
    from aws_lambda_powertools.utilities import parameters

    value = parameters.get_secret(secret_id, max_age=_SECRET_CACHE_SECONDS)
    data = json.loads(value if isinstance(value, str) else bytes(value).decode())
    if not isinstance(data, dict):
        raise ValueError("the provider secret must be a JSON object of name -> key")
    return {str(k): str(v) for k, v in data.items() if v}


def key_source(settings: Settings, name: str, env_key: str | None) -> Callable[[], str | None]:
    """A provider's key, resolved per call: the environment's, else the secret's (cached)."""

    def resolve() -> str | None:
        if env_key:
            return env_key
        if not settings.provider_secret_id:
            return None
        return _secret_keys(settings.provider_secret_id).get(name)

    return resolve


def _secret_names(settings: Settings) -> set[str]:
    """The providers named in the secret. One that cannot be read (missing, denied) offers
    none: a provider without a key is never listed."""
    if not settings.provider_secret_id:
        return set()
    try:
        return set(_secret_keys(settings.provider_secret_id))
    except Exception:  # any failure to read the secret: never log its value or the error body
        logger.warning("provider_secret_unreadable")
        return set()


def configured_providers(settings: Settings) -> dict[str, ChatProvider]:
    timeout = settings.upstream_timeout_seconds
    in_secret = _secret_names(settings)
    env_keys = {
        "openai": settings.openai_api_key,
        "anthropic": settings.anthropic_api_key,
        "gemini": settings.gemini_api_key,
        **settings.compat_api_keys,
    }

    def offered(name: str) -> bool:
        return bool(env_keys.get(name)) or name in in_secret

    providers: dict[str, ChatProvider] = {}
    if settings.demo_base_url:
        providers["demo"] = OpenAICompatProvider(settings.demo_base_url, "demo", timeout=timeout)
    if offered("openai"):
        providers["openai"] = OpenAICompatProvider(
            settings.openai_base_url,
            key_source(settings, "openai", env_keys["openai"]),
            timeout=timeout,
        )
    if offered("anthropic"):
        providers["anthropic"] = AnthropicProvider(
            settings.anthropic_base_url,
            key_source(settings, "anthropic", env_keys["anthropic"]),
            timeout=timeout,
        )
    if offered("gemini"):
        providers["gemini"] = GeminiProvider(
            settings.gemini_base_url,
            key_source(settings, "gemini", env_keys["gemini"]),
            timeout=timeout,
        )
    for name, base_url in settings.compat_providers.items():
        if name not in providers and offered(name):
            providers[name] = OpenAICompatProvider(
                base_url, key_source(settings, name, env_keys.get(name)), timeout=timeout
            )
    return providers
