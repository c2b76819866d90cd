"""A fake OpenAI (or OpenAI-compatible) API: POST /v1/chat/completions (JSON and SSE with
`stream_options.include_usage`; structured outputs: a `json_schema` response format is answered
with an instance of the schema) and POST /v1/embeddings (floats, or `encoding_format: base64`:
little-endian float32 bytes), in OpenAI's documented shapes. A prompt longer than the model's
context window (`context_windows`) is refused with 400 `context_length_exceeded`.

Usage: prompt tokens are the fake tokenizer over each message's text plus 4 per message and
3 for the reply; a system message of at least 1024 bytes seen before is cached (reported in
prompt_tokens_details.cached_tokens, a subset of prompt_tokens, as OpenAI does). Models named
like OpenAI's reasoning models (o1, o3, o4, gpt-5...) think first: 6 reasoning tokens, in
completion_tokens and in completion_tokens_details.reasoning_tokens, within
max_completion_tokens; and they refuse max_tokens, as OpenAI's do."""

from __future__ import annotations

import base64
import json
import struct
import time
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

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
# OpenAI's reasoning models refuse max_tokens: they take only max_completion_tokens.
REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
REASONING_TOKENS = 6  # what the fake reasoning models think before they answer


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _error(
    status: int,
    message: str,
    code: str,
    retry_after: str | None = None,
    param: str | None = None,
) -> JSONResponse:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }
    headers = {"retry-after": retry_after} if retry_after else {}
    return JSONResponse(body, status_code=status, headers=headers)


def structured_reply(body: dict[str, Any]) -> str | None:
    """With `response_format` json_schema the fake answers JSON matching the schema, as
    OpenAI's structured outputs do."""
    response_format = body.get("response_format") or {}
    if response_format.get("type") != "json_schema":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    return json.dumps(schema_instance(schema, schema.get("$defs") or {}))


class FakeOpenAI(FakeProvider):
    malformed_body = "{this is not json"

    def __init__(self, name: str = "openai") -> None:
        super().__init__(name=name)
        self.app.post("/v1/chat/completions", response_model=None)(self.chat)
        self.app.post("/v1/embeddings", response_model=None)(self.embeddings)

    def fault_error(self, fault: Fault) -> Response:
        codes = {429: "rate_limit_exceeded", 500: "server_error", 503: "overloaded"}
        code = codes.get(fault.status, "bad_request")
        return _error(fault.status, "scripted failure", code, fault.retry_after)

    def prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        return sum(tokens_of(_text(m.get("content"))) + 4 for m in messages) + 3

    def usage(
        self, messages: list[dict[str, Any]], completion: int, reasoning: int = 0
    ) -> dict[str, Any]:
        prompt = self.prompt_tokens(messages)
        cached = 0
        first = messages[0]
        first_text = _text(first.get("content"))
        long_system = first.get("role") == "system" and len(first_text.encode()) >= CACHE_MIN_BYTES
        if long_system and self.cache_lookup(first_text):
            cached = tokens_of(first_text) + 4
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion + reasoning,  # reasoning tokens are output
            "total_tokens": prompt + completion + reasoning,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }

    def _check(self, request: Request, body: Any) -> JSONResponse | None:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided", "invalid_api_key")
        if not isinstance(body, dict) or not body.get("model"):
            return _error(400, "you must provide a model parameter", "missing_model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "messages must be a non-empty array", "invalid_messages")
        for message in messages:
            if message.get("role") not in _ROLES:
                return _error(400, f"invalid role {message.get('role')!r}", "invalid_role")
            parts = message.get("content") if isinstance(message.get("content"), list) else []
            for part in parts:
                unknown = set(part) - {"type", "text", "image_url", "input_audio", "file"}
                if unknown:
                    return _error(400, f"Unrecognized content part field {unknown}", "invalid_part")
            if message.get("role") == "tool" and not message.get("tool_call_id"):
                return _error(400, "tool messages need tool_call_id", "invalid_tool_message")
        if body.get("stream") and not (body.get("stream_options") or {}).get("include_usage"):
            return _error(400, "the gateway must ask for usage", "usage_not_requested")
        if "max_tokens" in body and "max_completion_tokens" in body:
            return _error(
                400,
                "Setting 'max_tokens' and 'max_completion_tokens' at the same time is not"
                " supported.",
                "invalid_parameter_combination",
                param="max_tokens",
            )
        if "max_tokens" in body and str(body["model"]).startswith(REASONING_PREFIXES):
            return _error(
                400,
                "Unsupported parameter: 'max_tokens' is not supported with this model."
                " Use 'max_completion_tokens' instead.",
                "unsupported_parameter",
                param="max_tokens",
            )
        return None

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        model = str(body.get("model", "")) if isinstance(body, dict) else ""
        call = self.record(request, model, bool(body.get("stream")), body)
        if (refusal := self._check(request, body)) is not None:
            call.status = refusal.status_code
            return refusal
        messages = body["messages"]
        prompt_tokens = self.prompt_tokens(messages)
        if (window := self.over_context(model, prompt_tokens)) is not None:
            call.status = 400
            return _error(
                400,
                f"This model's maximum context length is {window} tokens. However, your "
                f"messages resulted in {prompt_tokens} tokens. Please reduce the length of the "
                "messages.",
                "context_length_exceeded",
                param="messages",
            )
        fault = await self.take_fault(call)
        if (failed := self.scripted_failure(call, fault)) is not None:
            return failed
        prompt = _text(
            next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
        )
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        endless = fault is not None and fault.kind == "endless"
        # A reasoning model thinks first: its limit covers the thought and the answer.
        reasoning = REASONING_TOKENS if model.startswith(REASONING_PREFIXES) else 0
        visible = None if max_tokens is None else max(int(max_tokens) - reasoning, 1)
        words = reply_words(prompt, visible, endless=endless)
        if (structured := structured_reply(body)) is not None:
            words = structured.split(" ")  # streamed word by word, joined back exactly
        tool = wants_tool(prompt, body.get("tools"))
        completion_id = f"chatcmpl-fake{len(self.calls)}"
        created = int(time.time())
        served_model = f"{model}-2024-fake"
        if tool:
            name = body["tools"][0]["function"]["name"]
            arguments = json.dumps({"city": "Paris"})
            usage = self.usage(messages, 9, reasoning)
            call.text = ""
        else:
            usage = self.usage(messages, len(words), reasoning)
            call.text = " ".join(words)
        call.usage = usage
        finish = (
            "tool_calls"
            if tool
            else ("length" if visible and len(words) >= visible and not endless else "stop")
        )
        if not call.stream:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": call.text or None,
                "refusal": None,
            }
            if tool:
                message["tool_calls"] = [
                    {
                        "id": "call_fake1",
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                ]
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": served_model,
                    "choices": [
                        {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
                    ],
                    "usage": usage,
                    "system_fingerprint": "fp_fake",
                }
            )

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": served_model,
                "system_fingerprint": "fp_fake",
                "choices": choices,
                **extra,
            }
            return self.sse(payload)

        async def events() -> AsyncIterator[str]:
            yield chunk(
                [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
            if tool:
                yield chunk(
                    [
                        {
                            "index": 0,
                            "delta": {
                                "tool_calls": [
                                    {
                                        "index": 0,
                                        "id": "call_fake1",
                                        "type": "function",
                                        "function": {"name": name, "arguments": ""},
                                    }
                                ]
                            },
                            "finish_reason": None,
                        }
                    ]
                )
                for piece in (arguments[:6], arguments[6:]):
                    yield chunk(
                        [
                            {
                                "index": 0,
                                "delta": {
                                    "tool_calls": [{"index": 0, "function": {"arguments": piece}}]
                                },
                                "finish_reason": None,
                            }
                        ]
                    )
            for i, word in enumerate(words):
                if error_event_at(fault, i):
                    error = {"message": "scripted", "type": "server_error", "code": "server_error"}
                    yield self.sse({"error": error})
                    return
                yield chunk(
                    [
                        {
                            "index": 0,
                            "delta": {"content": word if i == 0 else " " + word},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ]
                )
            yield chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}])
            yield chunk([], usage=usage)
            yield self.sse("[DONE]")

        return self.stream(call, events(), fault, broken=self.sse("{broken json"))

    async def embeddings(self, request: Request) -> Response:
        body = await request.json()
        model = str(body.get("model", ""))
        call = self.record(request, model, False, body)
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            call.status = 401
            return _error(401, "Incorrect API key provided", "invalid_api_key")
        # Embeddings neither hang nor note their fault: only status and malformed apply.
        if (failed := self.scripted_failure(call, self.fault_for(model))) is not None:
            return failed
        raw = body.get("input")
        items = [raw] if isinstance(raw, str) else list(raw)
        tokens = sum(tokens_of(str(i)) for i in items)
        call.usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        vector: list[float] | str = [0.1, -0.2, 0.3]
        if body.get("encoding_format") == "base64":
            vector = base64.b64encode(struct.pack("<3f", 0.1, -0.2, 0.3)).decode()
        data = [{"object": "embedding", "index": i, "embedding": vector} for i in range(len(items))]
        return JSONResponse({"object": "list", "data": data, "model": model, "usage": call.usage})
