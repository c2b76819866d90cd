"""The one settings model of a process, validated from the environment on first use."""

from __future__ import annotations

import os
from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, Json


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    budget_table: str = Field(alias="BUDGET_TABLE")
    ledger_table: str = Field(alias="LEDGER_TABLE")
    archive_bucket: str = Field(alias="ARCHIVE_BUCKET")
    # Where the archiver's failed stream batches are parked; only archive replay reads it.
    archive_failure_queue_url: str | None = Field(default=None, alias="ARCHIVE_FAILURE_QUEUE_URL")
    # The local stack points every AWS client at its emulator; on AWS this stays unset.
    aws_endpoint_url: str | None = Field(default=None, alias="AWS_ENDPOINT_URL")
    # The DynamoDB client of every store: the lean one (forge.store.dynamo.wire), or botocore's
    # own low-level client, kept as the fallback.
    dynamo_client: Literal["wire", "botocore"] = Field(default="wire", alias="FORGE_DYNAMO_CLIENT")
    demo_base_url: str | None = Field(default=None, alias="FORGE_DEMO_BASE_URL")
    openai_api_key: str | None = Field(default=None, alias="OPENAI_UPSTREAM_API_KEY", repr=False)
    openai_base_url: str = Field(
        default="https://api.openai.com/v1", alias="OPENAI_UPSTREAM_BASE_URL"
    )
    # Providers (see forge.providers.registry): a key in the environment, or in the JSON secret
    # FORGE_PROVIDER_SECRET_ID names ({"openai": "...", "anthropic": "...", ...}) on AWS.
    anthropic_api_key: str | None = Field(
        default=None, alias="ANTHROPIC_UPSTREAM_API_KEY", repr=False
    )
    anthropic_base_url: str = Field(
        default="https://api.anthropic.com", alias="ANTHROPIC_UPSTREAM_BASE_URL"
    )
    gemini_api_key: str | None = Field(default=None, alias="GEMINI_UPSTREAM_API_KEY", repr=False)
    gemini_base_url: str = Field(
        default="https://generativelanguage.googleapis.com/v1beta",
        alias="GEMINI_UPSTREAM_BASE_URL",
    )
    # Other OpenAI-compatible endpoints, as JSON: {"deepseek": "https://api.deepseek.com/v1"}.
    compat_providers: Json[dict[str, str]] = Field(
        default_factory=dict, alias="FORGE_COMPAT_PROVIDERS"
    )
    compat_api_keys: Json[dict[str, str]] = Field(
        default_factory=dict, alias="FORGE_COMPAT_API_KEYS", repr=False
    )
    provider_secret_id: str | None = Field(default=None, alias="FORGE_PROVIDER_SECRET_ID")
    # How often a container re-reads that secret: a key set (or unset) with `forge-admin
    # providers` is offered (or withdrawn) by running containers within this many seconds.
    provider_refresh_seconds: float = Field(
        default=60.0, ge=0, alias="FORGE_PROVIDER_REFRESH_SECONDS"
    )
    # Retry and fallback (forge.domain.routing): attempts per route and per request (a key may set
    # its own ceiling), backoff, the longest Retry-After worth waiting for, route health.
    upstream_route_attempts: int = Field(default=2, ge=1, alias="FORGE_UPSTREAM_ROUTE_ATTEMPTS")
    upstream_max_attempts: int = Field(default=4, ge=1, alias="FORGE_UPSTREAM_MAX_ATTEMPTS")
    retry_base_delay: float = Field(default=0.2, ge=0, alias="FORGE_RETRY_BASE_DELAY")
    retry_max_delay: float = Field(default=2.0, ge=0, alias="FORGE_RETRY_MAX_DELAY")
    retry_after_max: float = Field(default=5.0, ge=0, alias="FORGE_RETRY_AFTER_MAX")
    route_failure_threshold: int = Field(default=3, ge=1, alias="FORGE_ROUTE_FAILURE_THRESHOLD")
    route_cooldown_seconds: float = Field(default=30.0, ge=0, alias="FORGE_ROUTE_COOLDOWN")
    # How long a container keeps the catalog it read from the budget table.
    catalog_ttl_seconds: float = Field(default=30.0, ge=0, alias="FORGE_CATALOG_TTL_SECONDS")
    # A hold must outlive the request that made it: past the function's maximum run time.
    hold_ttl_seconds: int = Field(default=960, alias="FORGE_HOLD_TTL_SECONDS")
    statement_url_ttl_seconds: int = Field(default=900, le=900, alias="FORGE_STATEMENT_URL_TTL")
    upstream_timeout_seconds: float = Field(default=120.0, alias="FORGE_UPSTREAM_TIMEOUT")
    # A stream silent this long gets an SSE comment: API Gateway closes a streamed response idle
    # for 5 minutes (Regional; 30 s edge-optimised), and a reasoning model can think longer.
    sse_keepalive_seconds: float = Field(default=15.0, gt=0, alias="FORGE_SSE_KEEPALIVE_SECONDS")
    # Verifies payment webhooks (Forge-Signature); without it the webhook credits nothing.
    webhook_secret: str | None = Field(default=None, alias="FORGE_WEBHOOK_SECRET", repr=False)
    webhook_secret_arn: str | None = Field(default=None, alias="FORGE_WEBHOOK_SECRET_ARN")
    # Metrics (docs/architecture.md, "Metrics"): written as CloudWatch EMF lines when a
    # namespace is set (template.yaml sets TokensForge); without one they go nowhere.
    metrics_namespace: str | None = Field(default=None, alias="POWERTOOLS_METRICS_NAMESPACE")
    service_name: str | None = Field(default=None, alias="POWERTOOLS_SERVICE_NAME")


@cache
def get_settings() -> Settings:
    return Settings.model_validate(dict(os.environ))
