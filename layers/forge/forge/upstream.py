"""The upstream port: what the gateway needs from a provider, whatever its wire format."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from forge.money import Usage


class UpstreamError(Exception):
    """A route failed. `status` is the upstream HTTP status, None if no response arrived."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass
class Completion:
    """A non-streamed answer in OpenAI's chat.completion shape, with its usage parsed."""

    body: dict[str, Any]
    usage: Usage
    status: int = 200


@dataclass
class StreamState:
    """What a stream has delivered so far: enough to settle it if it is cut."""

    usage: Usage | None = None
    content_chunks: int = 0
    finished: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


class ChatStream(Protocol):
    """An open upstream stream: chunks in OpenAI's chat.completion.chunk shape."""

    status: int
    state: StreamState

    def chunks(self) -> AsyncIterator[dict[str, Any]]: ...

    async def aclose(self) -> None: ...


class ChatProvider(Protocol):
    async def complete(self, body: dict[str, Any]) -> Completion: ...

    async def open_stream(self, body: dict[str, Any]) -> ChatStream: ...


def usage_from_openai(raw: dict[str, Any] | None) -> Usage | None:
    """OpenAI usage -> Usage. Cached tokens are a subset of prompt_tokens, counted once."""
    if not raw:
        return None
    details = raw.get("prompt_tokens_details") or {}
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        cached_input_tokens=int(details.get("cached_tokens") or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
    )
