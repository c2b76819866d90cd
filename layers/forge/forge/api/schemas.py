"""Request and response bodies of the public API (OpenAI's shapes, validated at the edge)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Requests ----------------------------------------------------------------------------------
# Strict models (no coercion: "10" is not an int, "yes" not a bool, 1.0 not an int) with the
# types and ranges OpenAI's and Anthropic's references document, for every field the gateway
# forwards or prices. Unknown fields are forwarded as sent; the strict JSON parser
# (forge.strict_json) has already refused non-finite numbers and invalid Unicode in them.
_STRICT = ConfigDict(extra="allow", strict=True)
MAX_TOKENS_LIMIT = 2**31 - 1

ModelId = Annotated[str, Field(min_length=1, max_length=200)]
TokenCount = Annotated[int, Field(ge=1, le=MAX_TOKENS_LIMIT)]
Unit = Annotated[float, Field(ge=0, le=1)]
Penalty = Annotated[float, Field(ge=-2, le=2)]
Stop = str | Annotated[list[str], Field(max_length=4)]


class ContentPart(BaseModel):
    """One part of a multi-part message (text, image_url, input_audio, file, refusal)."""

    model_config = _STRICT

    type: str = Field(min_length=1)
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = _STRICT

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = _STRICT

    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request. Unknown fields are forwarded to the upstream as-is.

    `n` must be 1 (or absent): the hold covers one completion, and neither Anthropic nor
    Gemini routes can serve several, so several choices are refused rather than underpriced.
    """

    model_config = _STRICT

    model: ModelId
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    n: int | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Unit | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    stop: Stop | None = None
    logit_bias: dict[str, Annotated[int, Field(ge=-100, le=100)]] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    user: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int | None:
        if n is not None and n != 1:
            raise ValueError("only n=1 is supported: each request returns one choice")
        return n


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request. Unknown fields are forwarded to the upstream as-is."""

    model_config = _STRICT

    model: ModelId
    input: str | list[str] | list[int] | list[list[int]] = Field(min_length=1)
    dimensions: TokenCount | None = None
    encoding_format: Literal["float", "base64"] | None = None
    user: str | None = None


class TextBlock(BaseModel):
    model_config = _STRICT

    type: Literal["text"]
    text: str


class SourceBlock(BaseModel):
    """An image or a document, passed on as its source."""

    model_config = _STRICT

    type: Literal["image", "document"]
    source: dict[str, Any]


class ToolUseBlock(BaseModel):
    model_config = _STRICT

    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(BaseModel):
    model_config = _STRICT

    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock | SourceBlock] | None = None
    is_error: bool | None = None


class ThinkingBlock(BaseModel):
    model_config = _STRICT

    type: Literal["thinking", "redacted_thinking"]


ContentBlock = Annotated[
    TextBlock | SourceBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock,
    Field(discriminator="type"),
]


class AnthropicMessage(BaseModel):
    model_config = _STRICT

    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class AnthropicTool(BaseModel):
    model_config = _STRICT

    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None


class AnthropicToolChoice(BaseModel):
    model_config = _STRICT

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class AnthropicMetadata(BaseModel):
    model_config = _STRICT

    user_id: str | None = None


class MessagesRequest(BaseModel):
    """Anthropic's Messages request (POST /v1/messages), validated at the edge; blocks stay
    JSON and are translated by forge.formats.anthropic."""

    model_config = _STRICT

    model: ModelId
    max_tokens: TokenCount
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    stream: bool = False
    stop_sequences: list[str] | None = None
    temperature: Unit | None = None
    top_p: Unit | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    metadata: AnthropicMetadata | None = None


# Errors --------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    """OpenAI's error object; refusals add their details (e.g. envelope, limit, remaining)."""

    model_config = ConfigDict(extra="allow")

    message: str
    type: str
    param: str | None
    code: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class AnthropicErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    message: str


class AnthropicErrorResponse(BaseModel):
    type: Literal["error"]
    error: AnthropicErrorDetail


ERROR_STATUSES = (400, 401, 402, 403, 404, 405, 409, 410, 413, 422, 429, 500, 502, 503)


def error_responses(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """What any route may answer besides success, for the OpenAPI document."""
    return {status: {"model": model, "description": "Error"} for status in ERROR_STATUSES}


# A paid call answers JSON, or a server-sent event stream when it asked for one.
PAID_SUCCESS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The answer, or (stream=true) a text/event-stream of events",
        "content": {"application/json": {}, "text/event-stream": {}},
    }
}


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
    mode: str = "chat"
    route_type: str
    bucket: str
    prices: ModelPrices
    routes: list[ModelRoute] = Field(default_factory=list)  # in fallback order


class ModelRoute(BaseModel):
    """One route the caller's key may use: who serves it and what it costs."""

    provider: str
    upstream_model: str
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
    """A short-lived download link to the caller's own statement."""

    object: Literal["statement"] = "statement"
    month: str
    format: Literal["csv", "html"] = "csv"
    status: Literal["final", "provisional"] = "final"
    url: str
    expires_in: int


# Account views: statements list, ledger, usage, runs ----------------------------------------
class StatementMonthView(BaseModel):
    object: Literal["statement_month"] = "statement_month"
    month: str
    status: Literal["final", "provisional"]
    formats: list[Literal["csv", "html"]]
    url: str  # the API path that returns the download link


class StatementList(BaseModel):
    object: Literal["list"] = "list"
    data: list[StatementMonthView]


class LedgerEntryView(BaseModel):
    """One ledger entry; amounts as decimals of the bucket's currency and in micro-units."""

    object: Literal["ledger_entry"] = "ledger_entry"
    entry_id: str
    bucket: str
    currency: str
    seq: int
    kind: str
    amount: str
    amount_micros: int
    balance_after: str
    balance_after_micros: int
    created_at: datetime
    request_id: str | None = None
    key_id: str | None = None
    project_id: str | None = None
    model: str | None = None
    route: str | None = None
    source: str | None = None
    memo: str | None = None


class LedgerPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[LedgerEntryView]
    has_more: bool
    next_cursor: str | None = None


class UsageLineView(BaseModel):
    """Totals of one group in one bucket (charges of different buckets never add up)."""

    group: str
    bucket: str | None
    currency: str | None
    requests: int
    succeeded: int
    partial: int
    failed: int
    attempts: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    charge: str
    charge_micros: int
    refunded: str  # refund entries written in the range (in a run view: of the run's calls)
    refunded_micros: int


class UsageView(BaseModel):
    object: Literal["usage"] = "usage"
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    group_by: str
    data: list[UsageLineView]
    totals: list[UsageLineView]


class RunCallView(BaseModel):
    """One call of a run: its receipt's essentials, every attempt included."""

    request_id: str
    created_at: datetime
    status: str
    requested_model: str
    final_route: str | None = None
    upstream_model: str | None = None
    key_id: str
    project_id: str
    attempts: list[dict[str, Any]]
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    charge: str
    charge_micros: int
    bucket: str | None = None
    settlement: str
    error_code: str | None = None
    note: str | None = None


class RunView(BaseModel):
    object: Literal["run"] = "run"
    run_id: str
    totals: list[UsageLineView]  # the whole run, per bucket
    calls: list[RunCallView]  # this page of calls, oldest first
    has_more: bool
    next_cursor: str | None = None
