"""Which providers this deployment can call, from settings (secrets never logged)."""

from __future__ import annotations

from forge.adapters.openai_compat import OpenAICompatProvider
from forge.settings import Settings
from forge.upstream import ChatProvider


def configured_providers(settings: Settings) -> dict[str, ChatProvider]:
    providers: dict[str, ChatProvider] = {}
    timeout = settings.upstream_timeout_seconds
    if settings.demo_base_url:
        providers["demo"] = OpenAICompatProvider(settings.demo_base_url, "demo", timeout=timeout)
    if settings.openai_api_key:
        providers["openai"] = OpenAICompatProvider(
            settings.openai_base_url, settings.openai_api_key, timeout=timeout
        )
    return providers
