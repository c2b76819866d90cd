"""Server-sent events as each client family expects them: OpenAI's `data:` lines ending in
`[DONE]`, and Anthropic's named Messages events. The gateway yields StreamItems; framing them
is the API's business."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from forge.api.errors import anthropic_body, error_body
from forge.domain.errors import ForgeError
from forge.domain.records import Receipt
from forge.gateway import CallPlan, StreamItem, StreamResult, receipt_summary
from forge.providers.anthropic_format.stream_writer import MessagesStreamWriter, error_event


@dataclass(frozen=True)
class SseFormat:
    """How one client family's stream is framed: the relayed events, and the one event that
    ends a stream whose call failed after its headers were sent (see forge.api.calls)."""

    events: Callable[[StreamResult], AsyncIterator[bytes]]
    error: Callable[[ForgeError], bytes]


def openai_frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def receipt_comment(receipt: Receipt) -> bytes:
    """The receipt essentials as an SSE comment line: every SSE parser skips lines starting
    with ':', so a client that reads only `data:` lines never sees it."""
    summary = json.dumps(receipt_summary(receipt), separators=(",", ":"))
    return b": receipt " + summary.encode() + b"\n\n"


async def _openai_stream(
    plan: CallPlan, items: AsyncGenerator[StreamItem, None]
) -> AsyncIterator[bytes]:
    try:
        async for item in items:
            if item.kind == "end":
                if plan.include_usage:
                    yield openai_frame(item.payload)
                if item.receipt is not None:
                    yield receipt_comment(item.receipt)
                yield b"data: [DONE]\n\n"
            else:
                yield openai_frame(item.payload)
    finally:
        await items.aclose()


def openai_events(result: StreamResult) -> AsyncIterator[bytes]:
    """The stream as OpenAI sends it (SSE; the usage chunk, with our `receipt`, only when
    `stream_options.include_usage` asks for it; then the receipt as a comment, and [DONE]);
    read it once."""
    return _openai_stream(result.plan, result.items)


def openai_error(exc: ForgeError) -> bytes:
    """An error event as OpenAI streams one: the SDKs raise it as an APIError."""
    return openai_frame(error_body(exc.message, exc.type, exc.code, exc.param, **exc.details))


OPENAI_SSE = SseFormat(openai_events, openai_error)


def anthropic_frame(payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, separators=(",", ":"))
    return f"event: {payload['type']}\ndata: {data}\n\n".encode()


async def messages_sse(
    items: AsyncGenerator[StreamItem, None], writer: MessagesStreamWriter
) -> AsyncIterator[bytes]:
    """The gateway's relayed stream as Messages events: message_start, content blocks,
    message_delta (with the charged usage and the receipt), message_stop; or an error
    event when the upstream stream was cut after its first byte."""
    try:
        async for item in items:
            if item.kind == "chunk":
                events = writer.chunk(item.payload)
            elif item.kind == "end" and item.receipt is not None:
                receipt = item.receipt
                events = writer.finish(
                    receipt.usage,
                    receipt.cache_write_input_tokens,
                    {"receipt": receipt_summary(receipt)},
                )
            else:
                error = item.payload.get("error") or {}
                events = writer.fail(
                    error_event(
                        "api_error",
                        str(error.get("message", "The upstream stream was interrupted")),
                        code=error.get("code"),
                        receipt=error.get("receipt"),
                    )
                )
            for event in events:
                yield anthropic_frame(event)
    finally:
        await items.aclose()


def messages_error(exc: ForgeError) -> bytes:
    return anthropic_frame(anthropic_body(exc))
