"""A fake Anthropic Messages API: POST /v1/messages (and /v1/messages/count_tokens, which
counts a prompt as /v1/messages bills it, refusing any field but the prompt's) with x-api-key
and anthropic-version,
JSON and SSE (message_start, content_block_start, ping, content_block_delta with text_delta
and input_json_delta, content_block_stop, message_delta, message_stop, error), in the shapes
Anthropic documents. It refuses requests the real API would refuse (a missing max_tokens, a
system role inside messages, turns that do not alternate, a tool_result without its tool_use).

Usage: the fake tokenizer over system, messages and tools; `input_tokens` excludes the cache.
A system prompt of at least 1024 bytes marked with cache_control is written to the cache the
first time (cache_creation_input_tokens) and read from it afterwards (cache_read_input_tokens).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from tests.fakes.base import (
    CACHE_MIN_BYTES,
    FakeProvider,
    Fault,
    error_event_at,
    reply_words,
    schema_instance,
    tokens_of,
    wants_tool,
)

VERSION = "2023-06-01"
_BLOCKS = {"text", "image", "tool_use", "tool_result", "document", "thinking"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _error(status: int, message: str, retry_after: str | None = None) -> JSONResponse:
    body = {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message},
    }
    headers = {"request-id": "req_fake"}
    if retry_after:
        headers["retry-after"] = retry_after
    return JSONResponse(body, status_code=status, headers=headers)


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _text_of(blocks: list[dict[str, Any]]) -> str:
    out = []
    for block in blocks:
        if block.get("type") == "text":
            out.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            out.append(json.dumps(block.get("input")))
        elif block.get("type") == "tool_result":
            inner = block.get("content")
            out.append(inner if isinstance(inner, str) else _text_of(inner or []))
    return "".join(out)


def validate(body: Any) -> str | None:
    """What the real API would refuse with a 400, or None."""
    if not isinstance(body, dict):
        return "body: must be an object"
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    if messages[0].get("role") != "user":
        return "messages: first message must use the user role"
    previous_tool_ids: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if i and messages[i - 1].get("role") == role:
            return f"messages.{i}: roles must alternate between user and assistant"
        for block in _blocks(message.get("content")):
            kind = block.get("type")
            if kind not in _BLOCKS:
                return f"messages.{i}.content: unknown block type {kind!r}"
            if kind == "tool_use" and (
                role != "assistant"
                or not block.get("id")
                or not isinstance(block.get("input"), dict)
            ):
                return f"messages.{i}: tool_use blocks need an id and an input object"
            if kind == "tool_result" and block.get("tool_use_id") not in previous_tool_ids:
                return f"messages.{i}: tool_result without a matching tool_use"
            if kind == "image" and (block.get("source") or {}).get("type") not in ("base64", "url"):
                return f"messages.{i}: image source must be base64 or url"
        previous_tool_ids = {
            b["id"] for b in _blocks(message.get("content")) if b.get("type") == "tool_use"
        }
    system = body.get("system")
    text_blocks = isinstance(system, list) and all(
        isinstance(b, dict) and b.get("type") == "text" for b in system
    )
    if system is not None and not isinstance(system, str) and not text_blocks:
        return "system: must be a string or text blocks"
    if body.get("temperature") is not None and not 0 <= body["temperature"] <= 1:
        return "temperature: must be between 0 and 1"
    for tool in body.get("tools") or []:
        if not tool.get("name") or (tool.get("input_schema") or {}).get("type") != "object":
            return "tools: each tool needs a name and an object input_schema"
    return None


class FakeAnthropic(FakeProvider):
    sse_names_events = True

    def __init__(self) -> None:
        super().__init__(name="anthropic")
        self.app.post("/v1/messages", response_model=None)(self.messages)
        self.app.post("/v1/messages/count_tokens", response_model=None)(self.count_tokens)

    def fault_error(self, fault: Fault) -> Response:
        return _error(fault.status, "scripted failure", fault.retry_after)

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        """Every input token of the prompt: system, messages (3 each) and tools."""
        system = body.get("system")
        total = tokens_of(_text_of([] if system is None else _blocks(system))) + sum(
            tokens_of(_text_of(_blocks(m.get("content")))) + 3 for m in body["messages"]
        )
        return total + (tokens_of(json.dumps(body.get("tools"))) if body.get("tools") else 0)

    def usage(self, body: dict[str, Any], output: int) -> dict[str, Any]:
        system = body.get("system")
        system_blocks = [] if system is None else _blocks(system)
        system_text = _text_of(system_blocks)
        total = self.prompt_tokens(body)
        written = read = 0
        marked = any(b.get("cache_control") for b in system_blocks)
        if marked and len(system_text.encode()) >= CACHE_MIN_BYTES:
            if self.cache_lookup(system_text):
                read = tokens_of(system_text)
            else:
                written = tokens_of(system_text)
        return {
            "input_tokens": total - written - read,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "output_tokens": output,
            "service_tier": "standard",
        }

    async def count_tokens(self, request: Request) -> Response:
        body = await request.json()
        model = str(body.get("model", "")) if isinstance(body, dict) else ""
        call = self.record(request, model, False, body)
        if request.headers.get("x-api-key") != self.api_key:
            call.status = 401
            return _error(401, "invalid x-api-key")
        if request.headers.get("anthropic-version") != VERSION:
            call.status = 400
            return _error(400, "anthropic-version: header is required")
        extra = set(body) - {"model", "messages", "system", "tools", "tool_choice", "thinking"}
        problem = f"{sorted(extra)[0]}: Extra inputs are not permitted" if extra else None
        if problem := problem or validate({**body, "max_tokens": 1}):
            call.status = 400
            return _error(400, problem)
        if (failed := self.scripted_failure(call, await self.take_fault(call))) is not None:
            return failed
        return JSONResponse({"input_tokens": self.prompt_tokens(body)})

    async def messages(self, request: Request) -> Response:
        body = await request.json()
        model = str(body.get("model", "")) if isinstance(body, dict) else ""
        stream = bool(isinstance(body, dict) and body.get("stream"))
        call = self.record(request, model, stream, body)
        if request.headers.get("x-api-key") != self.api_key:
            call.status = 401
            return _error(401, "invalid x-api-key")
        if request.headers.get("anthropic-version") != VERSION:
            call.status = 400
            return _error(400, "anthropic-version: header is required")
        if problem := validate(body):
            call.status = 400
            return _error(400, problem)
        prompt_tokens = self.prompt_tokens(body)
        if (window := self.over_context(model, prompt_tokens)) is not None:
            call.status = 400
            return _error(400, f"prompt is too long: {prompt_tokens} tokens > {window} maximum")
        fault = await self.take_fault(call)
        if (failed := self.scripted_failure(call, fault)) is not None:
            return failed
        last = body["messages"][-1]
        prompt = _text_of([b for b in _blocks(last["content"]) if b.get("type") == "text"])
        tool = wants_tool(prompt, body.get("tools")) and last["role"] == "user"
        endless = fault is not None and fault.kind == "endless"
        words = [] if tool else reply_words(prompt, body["max_tokens"], endless=endless)
        output_format = (body.get("output_config") or {}).get("format") or {}
        if output_format.get("type") == "json_schema" and not tool:  # structured outputs
            schema = output_format["schema"]
            words = json.dumps(schema_instance(schema, schema.get("$defs") or {})).split(" ")
        tool_input = {"city": "Paris"}
        output = 12 if tool else len(words)
        usage = self.usage(body, output)
        call.usage = usage
        call.text = " ".join(words)
        if tool:
            stop = "tool_use"
        elif not endless and len(words) >= body["max_tokens"]:
            stop = "max_tokens"
        else:
            stop = "end_turn"
        message_id = f"msg_fake{len(self.calls)}"
        served = f"{model}-20251001"
        content: list[dict[str, Any]] = []
        if tool:
            content = [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_fake1",
                    "name": body["tools"][0]["name"],
                    "input": tool_input,
                },
            ]
        else:
            content = [{"type": "text", "text": call.text}]
        if not stream:
            return JSONResponse(
                {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": served,
                    "content": content,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": usage,
                }
            )

        async def events() -> AsyncIterator[str]:
            start_usage = {**usage, "output_tokens": 1}
            yield self.sse(
                {
                    "type": "message_start",
                    "message": {
                        "id": message_id,
                        "type": "message",
                        "role": "assistant",
                        "model": served,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": start_usage,
                    },
                }
            )
            yield self.sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                }
            )
            yield self.sse({"type": "ping"})
            pieces = (
                ["Let me check."]
                if tool
                else [w if i == 0 else " " + w for i, w in enumerate(words)]
            )
            for i, piece in enumerate(pieces):
                if error_event_at(fault, i):
                    yield self.sse(
                        {
                            "type": "error",
                            "error": {"type": "overloaded_error", "message": "Overloaded"},
                        }
                    )
                    return
                yield self.sse(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    }
                )
            yield self.sse({"type": "content_block_stop", "index": 0})
            if tool:
                block = {
                    "type": "tool_use",
                    "id": "toolu_fake1",
                    "name": body["tools"][0]["name"],
                    "input": {},
                }
                yield self.sse({"type": "content_block_start", "index": 1, "content_block": block})
                raw = json.dumps(tool_input)
                for piece in (raw[:5], raw[5:]):
                    yield self.sse(
                        {
                            "type": "content_block_delta",
                            "index": 1,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        }
                    )
                yield self.sse({"type": "content_block_stop", "index": 1})
            yield self.sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": output},
                }
            )
            yield self.sse({"type": "message_stop"})

        return self.stream(call, events(), fault, broken=self.sse("{broken", event="message_start"))
