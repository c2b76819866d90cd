"""Secrets: from the environment locally, from Secrets Manager on AWS (cached, never logged)."""

from __future__ import annotations

from forge.settings import Settings

_SECRET_CACHE_SECONDS = 300  # a rotated secret is picked up within five minutes


def webhook_secret(settings: Settings) -> str | None:
    if settings.webhook_secret:
        return settings.webhook_secret
    if not settings.webhook_secret_arn:
        return None
    # Imported here: only the webhook path pays for the Parameters utility.
    from aws_lambda_powertools.utilities import parameters

    value = parameters.get_secret(settings.webhook_secret_arn, max_age=_SECRET_CACHE_SECONDS)
    return value if isinstance(value, str) else None
