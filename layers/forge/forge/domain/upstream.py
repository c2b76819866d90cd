"""The upstream port: what the gateway needs from a provider, whatever its wire format.

Every provider adapter speaks OpenAI's chat shapes to the gateway: it takes a chat.completions
body, answers with a chat.completion (or chat.completion.chunk dicts when streaming) and parses
the provider's own usage into `Usage`, where cached input tokens are a subset of input tokens.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from forge.domain.money import Usage
from forge.domain.provider_errors import ProviderError


class FailureKind(enum.StrEnum):
    """What a failed upstream call means for the next step."""

    RETRY = "retry"  # transient (no answer, 408, 409, 425, 429, 5xx): retry, then fall back
    ROUTE = "route"  # this route cannot serve (key, model, malformed answers): fall back
    CLIENT = "client"  # the request itself was refused (other 4xx): return it as it is


def classify(status: int | None) -> FailureKind:
    if status is None or status in (408, 409, 425, 429) or status >= 500:
        return FailureKind.RETRY
    if status in (401, 402, 403, 404):  # the operator's key or catalog, not the client's call
        return FailureKind.ROUTE
    if 400 <= status < 500:
        return FailureKind.CLIENT
    return FailureKind.ROUTE


class UpstreamError(Exception):
    """A route failed. `status` is the upstream HTTP status, None if no response arrived;
    `retry_after` is the provider's Retry-After in seconds; `message` is the provider's own
    error message and `error` its whole error answer (returned to the client, in the
    client's dialect, only for client errors)."""

    def __init__(
        self,
        reason: str,
        status: int | None = None,
        *,
        kind: FailureKind | None = None,
        retry_after: float | None = None,
        message: str | None = None,
        error: ProviderError | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.kind = kind or classify(status)
        self.retry_after = retry_after
        self.message = message
        self.error = error


@dataclass
class Completion:
    """A non-streamed answer in OpenAI's chat.completion (or embeddings) shape, usage parsed.
    `cache_write_tokens` are input tokens written to the provider's prompt cache (Anthropic),
    already included in usage.input_tokens."""

    body: dict[str, Any]
    usage: Usage
    status: int = 200
    cache_write_tokens: int = 0


@dataclass
class StreamState:
    """What a stream has delivered so far: enough to settle it if it is cut, and to know its
    running cost. `output_tokens` is the provider's running count when it sends one."""

    usage: Usage | None = None
    content_chunks: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    finished: bool = False


class ChatStream(Protocol):
    """An open upstream stream: chunks in OpenAI's chat.completion.chunk shape."""

    status: int
    state: StreamState

    def chunks(self) -> AsyncIterator[dict[str, Any]]: ...

    async def aclose(self) -> None: ...


class ChatProvider(Protocol):
    async def complete(self, body: dict[str, Any]) -> Completion: ...

    async def open_stream(self, body: dict[str, Any]) -> ChatStream: ...


class TokenCounter(Protocol):
    """A provider with a token count endpoint (Anthropic, Gemini): the input tokens of a
    chat.completions body's prompt, as the provider counts them, free of charge."""

    async def count_tokens(self, body: dict[str, Any]) -> int: ...


def usage_from_openai(raw: dict[str, Any] | None) -> Usage | None:
    """OpenAI usage -> Usage. Cached tokens are a subset of prompt_tokens, counted once;
    reasoning tokens a subset of completion_tokens (OpenAI bills them as output and counts
    them there), so they are priced once, as output."""
    if not raw:
        return None
    details = raw.get("prompt_tokens_details") or {}
    output = int(raw.get("completion_tokens") or 0)
    reasoning = int((raw.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        cached_input_tokens=int(details.get("cached_tokens") or 0),
        output_tokens=output,
        reasoning_tokens=min(reasoning, output),
    )


def openai_usage(usage: Usage, cache_write_tokens: int = 0) -> dict[str, Any]:
    """Usage in OpenAI's shape; cache writes (a provider extension) ride in the details."""
    details: dict[str, Any] = {"cached_tokens": usage.cached_input_tokens}
    if cache_write_tokens:
        details["cache_write_tokens"] = cache_write_tokens
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }
