"""The one settings model of a process, validated from the environment on first use."""

from __future__ import annotations

import os
from functools import cache

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    budget_table: str = Field(alias="BUDGET_TABLE")
    ledger_table: str = Field(alias="LEDGER_TABLE")
    archive_bucket: str = Field(alias="ARCHIVE_BUCKET")
    # The local stack points every AWS client at its emulator; on AWS this stays unset.
    aws_endpoint_url: str | None = Field(default=None, alias="AWS_ENDPOINT_URL")
    demo_base_url: str | None = Field(default=None, alias="FORGE_DEMO_BASE_URL")
    openai_api_key: str | None = Field(default=None, alias="OPENAI_UPSTREAM_API_KEY", repr=False)
    openai_base_url: str = Field(
        default="https://api.openai.com/v1", alias="OPENAI_UPSTREAM_BASE_URL"
    )
    # A hold must outlive the request that made it: past the function's maximum run time.
    hold_ttl_seconds: int = Field(default=960, alias="FORGE_HOLD_TTL_SECONDS")
    statement_url_ttl_seconds: int = Field(default=900, le=900, alias="FORGE_STATEMENT_URL_TTL")
    upstream_timeout_seconds: float = Field(default=120.0, alias="FORGE_UPSTREAM_TIMEOUT")
    # Verifies payment webhooks (Forge-Signature); without it the webhook credits nothing.
    webhook_secret: str | None = Field(default=None, alias="FORGE_WEBHOOK_SECRET", repr=False)
    webhook_secret_arn: str | None = Field(default=None, alias="FORGE_WEBHOOK_SECRET_ARN")


@cache
def get_settings() -> Settings:
    return Settings.model_validate(dict(os.environ))
