"""What clients send: OpenAI's and Anthropic's request bodies, validated strictly.

Domain types, not API ones: the gateway plans and prices from them, the API parses into them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from forge.domain.errors import InvalidRequest

# ----------------------------------------------------------------------------------
# Strict models (no coercion: "10" is not an int, "yes" not a bool, 1.0 not an int) with the
# types and ranges OpenAI's and Anthropic's references document, for every field the gateway
# forwards or prices. Unknown fields are forwarded as sent; the strict JSON parser
# (forge.domain.strict_json) has already refused non-finite numbers and invalid Unicode in them.
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


class MessagesCountTokensRequest(BaseModel):
    """Anthropic's token count request (POST /v1/messages/count_tokens): the prompt of a
    Messages request, without its output settings."""

    model_config = _STRICT

    model: ModelId
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None


class MessagesRequest(MessagesCountTokensRequest):
    """Anthropic's Messages request (POST /v1/messages), validated at the edge; blocks stay
    JSON and are translated by forge.providers.anthropic_format."""

    max_tokens: TokenCount
    stream: bool = False
    stop_sequences: list[str] | None = None
    temperature: Unit | None = None
    top_p: Unit | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    metadata: AnthropicMetadata | None = None


Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16),
]


class ResponsesRequest(BaseModel):
    """OpenAI's Responses request (POST /v1/responses), validated at the edge. Items, tools
    and formats stay JSON: forge.providers.openai_format.responses translates them to one
    chat body and refuses (400 unsupported_parameter) what it cannot carry faithfully,
    unknown fields included."""

    model_config = _STRICT

    model: ModelId
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_output_tokens: TokenCount | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Unit | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    metadata: Metadata | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    store: bool | None = None
    max_tool_calls: Annotated[int, Field(ge=0)] | None = None
    # Accepted only where they ask for nothing the gateway cannot do (see the translation).
    background: bool | None = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    service_tier: str | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None


class CompletionsRequest(BaseModel):
    """OpenAI's legacy completions request (POST /v1/completions). One prompt, one completion:
    forge.providers.openai_format.completions refuses several prompts, token-id prompts,
    `echo`, `suffix`, `best_of` > 1, `logprobs` and unknown fields (400)."""

    model_config = _STRICT

    model: ModelId
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: TokenCount | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    best_of: int | None = None
    echo: bool | None = None
    suffix: str | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Unit | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    stop: Stop | None = None
    logit_bias: dict[str, Annotated[int, Field(ge=-100, le=100)]] | None = None
    user: str | None = None


def chat_request_from(body: dict[str, Any], param: str) -> ChatCompletionRequest:
    """A chat body translated from another API, validated as /v1/chat/completions validates
    one; what does not fit is the client's `param`."""
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(p) for p in first.get("loc", ())) or "body"
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        raise InvalidRequest(f"{param}: {location}: {message}", param=param) from None
