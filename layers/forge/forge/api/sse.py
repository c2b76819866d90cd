"""Server-sent events as each client family expects them: OpenAI's `data:` lines ending in
`[DONE]` (chat and legacy completions), OpenAI's named Responses events, and Anthropic's named
Messages events. The gateway yields StreamItems; framing them is the API's business."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from forge.api.errors import anthropic_body, error_body
from forge.domain.errors import ForgeError
from forge.domain.records import Receipt
from forge.gateway import CallPlan, StreamItem, StreamResult, receipt_summary
from forge.providers.anthropic_format.stream_writer import MessagesStreamWriter, error_event
from forge.providers.openai_format import (
    CompletionsStreamWriter,
    ResponsesStreamWriter,
    reasoning_tokens,
)


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


def named_frame(payload: dict[str, Any]) -> bytes:
    """An event named after its type (Anthropic's Messages, OpenAI's Responses)."""
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
                yield named_frame(event)
    finally:
        await items.aclose()


def messages_error(exc: ForgeError) -> bytes:
    return named_frame(anthropic_body(exc))


async def completions_sse(
    items: AsyncGenerator[StreamItem, None], writer: CompletionsStreamWriter
) -> AsyncIterator[bytes]:
    """The relayed stream as legacy `text_completion` chunks, the usage chunk (with the
    receipt) if asked, then [DONE]; a cut stream ends with OpenAI's error event instead."""
    try:
        async for item in items:
            if item.kind == "chunk":
                chunks = writer.chunk(item.payload)
            elif item.kind == "end" and item.receipt is not None:
                extra = {"receipt": receipt_summary(item.receipt)}
                chunks = writer.finish(item.receipt.usage, extra)
            else:
                yield openai_frame(item.payload)
                return
            for chunk in chunks:
                yield openai_frame(chunk)
            if item.kind == "end":
                yield b"data: [DONE]\n\n"
    finally:
        await items.aclose()


async def responses_sse(
    items: AsyncGenerator[StreamItem, None], writer: ResponsesStreamWriter
) -> AsyncIterator[bytes]:
    """The relayed stream as Responses events: items as they come, then response.completed
    (or .incomplete) with the charged usage and the receipt; or response.failed, with what
    was charged, when the upstream stream was cut after its first byte."""
    try:
        async for item in items:
            receipt = item.receipt
            if item.kind == "chunk":
                events = writer.chunk(item.payload)
            elif item.kind == "end" and receipt is not None:
                events = writer.finish(
                    receipt.usage,
                    receipt.cache_write_input_tokens,
                    reasoning_tokens(item.payload.get("usage")),
                    int(time.time()),
                    {"receipt": receipt_summary(receipt)},
                )
            else:
                error = item.payload.get("error") or {}
                events = writer.fail(
                    str(error.get("message", "The upstream stream was interrupted")),
                    receipt.usage if receipt is not None else None,
                    receipt.cache_write_input_tokens if receipt is not None else 0,
                    {"receipt": error.get("receipt")},
                )
            for event in events:
                yield named_frame(event)
    finally:
        await items.aclose()


def responses_error(exc: ForgeError) -> bytes:
    """A call that failed after its stream committed, before any response existed: OpenAI's
    `error` event, with the stable code and details."""
    return named_frame(
        {
            "type": "error",
            "sequence_number": 0,
            "code": exc.code,
            "message": exc.message,
            "param": exc.param,
            **exc.details,
        }
    )
