"""Request and response bodies of the public API (OpenAI's shapes, validated at the edge)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request. Unknown fields are forwarded to the upstream as-is."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class ModelPrices(BaseModel):
    """Prices per 1M tokens in the paying bucket's currency, after the operator multiplier."""

    input: str
    cached_input: str
    output: str
    currency: str


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "tokens-forge"
    description: str
    route_type: str
    bucket: str
    prices: ModelPrices


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class BucketBalance(BaseModel):
    bucket: str
    currency: str
    balance: str
    held: str
    available: str
    balance_micros: int
    held_micros: int
    available_micros: int


class BalanceView(BaseModel):
    object: Literal["balance"] = "balance"
    account_id: str
    buckets: list[BucketBalance]


class StatementLink(BaseModel):
    object: Literal["statement"] = "statement"
    month: str
    format: Literal["csv"] = "csv"
    url: str
    expires_in: int
