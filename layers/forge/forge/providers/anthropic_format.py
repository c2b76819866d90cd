"""Anthropic Messages <-> OpenAI chat, both ways, as pure functions over JSON values.

Outbound (a Claude route): an OpenAI chat body becomes a Messages request; a Message, or the
stream events message_start / content_block_start / content_block_delta / content_block_stop /
message_delta / message_stop / ping / error, become chat.completion(.chunk) shapes.
Inbound (`POST /v1/messages`): a Messages request becomes an OpenAI chat body, and the
gateway's OpenAI-shaped answer (or chunks) becomes a Message (or Messages stream events).

Usage: Anthropic's input_tokens excludes cache reads and writes; OpenAI's prompt_tokens
includes cached tokens. So prompt = input + cache_creation + cache_read, cached = cache_read.
"""

from __future__ import annotations

import json
from typing import Any

from forge.domain.money import Usage
from forge.domain.upstream import FailureKind, UpstreamError, openai_usage

ANTHROPIC_VERSION = "2023-06-01"

_STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Anthropic error types that are worth another try (overloaded is HTTP 529).
_TRANSIENT_ERRORS = {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}


# Shared helpers ------------------------------------------------------------------------------
def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") in ("text", "input_text", None)
        )
    return ""


def _json_object(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {"_raw": text}
    return value if isinstance(value, dict) else {"_value": value}


def usage_from_anthropic(raw: dict[str, Any] | None) -> tuple[Usage, int]:
    """(Usage, cache write tokens) from a Messages usage object."""
    raw = raw or {}
    fresh = int(raw.get("input_tokens") or 0)
    written = int(raw.get("cache_creation_input_tokens") or 0)
    read = int(raw.get("cache_read_input_tokens") or 0)
    usage = Usage(
        input_tokens=fresh + written + read,
        cached_input_tokens=read,
        output_tokens=int(raw.get("output_tokens") or 0),
    )
    return usage, written


def anthropic_usage(usage: Usage, cache_write_tokens: int = 0) -> dict[str, int]:
    """Usage in Anthropic's shape (input_tokens excludes cache reads and writes)."""
    read = min(usage.cached_input_tokens, usage.input_tokens)
    written = min(cache_write_tokens, usage.input_tokens - read)
    return {
        "input_tokens": usage.input_tokens - read - written,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "output_tokens": usage.output_tokens,
    }


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    url = str((part.get("image_url") or {}).get("url", ""))
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url.removeprefix("data:").partition(";base64,")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


# Outbound: OpenAI chat body -> Messages request ---------------------------------------------
def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[dict[str, Any]] = []
    for part in content or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "image_url":
            blocks.append(_image_block(part))
        elif part.get("type") == "text":
            block = {"type": "text", "text": str(part.get("text", ""))}
            if part.get("cache_control"):
                block["cache_control"] = part["cache_control"]
            blocks.append(block)
    return blocks


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Consecutive turns of one role are merged: Messages wants user/assistant alternation."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def to_messages_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat.completions body (as the gateway sends it) as a Messages request."""
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        role, content = message.get("role"), message.get("content")
        if role in ("system", "developer"):
            system.extend(b for b in _user_blocks(content) if b["type"] == "text")
        elif role == "user":
            _append(messages, "user", _user_blocks(content))
        elif role == "assistant":
            blocks = [b for b in _user_blocks(content or "") if b["type"] == "text" and b["text"]]
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id"),
                        "name": function.get("name"),
                        "input": _json_object(str(function.get("arguments") or "")),
                    }
                )
            _append(messages, "assistant", blocks)
        elif role in ("tool", "function"):
            result = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id") or message.get("name"),
                "content": _text_of(content),
            }
            _append(messages, "user", [result])
    request: dict[str, Any] = {
        "model": body["model"],
        "max_tokens": body.get("max_tokens") or body.get("max_completion_tokens"),
        "messages": messages,
    }
    if system:
        request["system"] = system
    if (stop := body.get("stop")) is not None:
        request["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if (temperature := body.get("temperature")) is not None:
        request["temperature"] = min(float(temperature), 1.0)  # Anthropic's range is 0-1
    if (top_p := body.get("top_p")) is not None:
        request["top_p"] = top_p
    if tools := body.get("tools"):
        request["tools"] = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters") or {"type": "object"},
            }
            for t in tools
            if t.get("type") == "function" and t.get("function")
        ]
        choice = _tool_choice_out(body.get("tool_choice"))
        if body.get("parallel_tool_calls") is False:
            choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
        if choice:
            request["tool_choice"] = choice
    if user := body.get("user"):
        request["metadata"] = {"user_id": str(user)}
    return request


def _tool_choice_out(choice: Any) -> dict[str, Any] | None:
    if choice == "required":
        return {"type": "any"}
    if choice in ("auto", "none"):
        return {"type": choice}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    return None


def completion_from_message(message: dict[str, Any]) -> tuple[dict[str, Any], Usage, int]:
    """A Message as an OpenAI chat.completion, with its usage and cache writes."""
    if message.get("type") != "message" or not isinstance(message.get("content"), list):
        raise UpstreamError("malformed_response", 200, kind=FailureKind.RETRY)
    text = "".join(b.get("text", "") for b in message["content"] if b.get("type") == "text")
    calls = [
        {
            "id": b.get("id"),
            "type": "function",
            "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input") or {})},
        }
        for b in message["content"]
        if b.get("type") == "tool_use"
    ]
    usage, written = usage_from_anthropic(message.get("usage"))
    reply: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        reply["tool_calls"] = calls
    body = {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": 0,
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": _STOP_TO_FINISH.get(str(message.get("stop_reason")), "stop"),
            }
        ],
        "usage": openai_usage(usage, written),
    }
    return body, usage, written


class MessagesStreamReader:
    """Messages stream events -> OpenAI chunks, keeping the running usage. Tool-use blocks
    become tool_calls (numbered in order of appearance); thinking blocks are not forwarded."""

    def __init__(self, created: int) -> None:
        self.created = created
        self.id = ""
        self.model = ""
        self.usage = Usage()
        self.cache_write_tokens = 0
        self.stopped = False
        self._raw_usage: dict[str, Any] = {}
        self._tool_index: dict[int, int] = {}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def _merge_usage(self, raw: dict[str, Any] | None) -> None:
        # message_delta carries cumulative totals; absent optional fields keep earlier values.
        self._raw_usage.update({k: v for k, v in (raw or {}).items() if v is not None})
        self.usage, self.cache_write_tokens = usage_from_anthropic(self._raw_usage)

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id, self.model = str(message.get("id", "")), str(message.get("model", ""))
            self._merge_usage(message.get("usage"))
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tool_index.setdefault(int(event["index"]), len(self._tool_index))
                call = {
                    "index": index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return [self._chunk({"tool_calls": [call]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                index = self._tool_index.get(int(event["index"]), 0)
                call = {"index": index, "function": {"arguments": delta.get("partial_json", "")}}
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "message_delta":
            self._merge_usage(event.get("usage"))
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason:
                return [self._chunk({}, _STOP_TO_FINISH.get(str(reason), "stop"))]
            return []
        if kind == "message_stop":
            self.stopped = True
            usage = openai_usage(self.usage, self.cache_write_tokens)
            return [{**self._chunk({}), "choices": [], "usage": usage}]
        if kind == "error":
            error = event.get("error") or {}
            error_type = str(error.get("type") or "stream_error")
            transient = error_type in _TRANSIENT_ERRORS
            raise UpstreamError(
                error_type,
                None,
                kind=FailureKind.RETRY if transient else FailureKind.ROUTE,
                message=error.get("message"),
            )
        return []  # ping, content_block_stop, and event types added later


# Inbound: Messages request -> OpenAI chat body ----------------------------------------------
def _openai_parts(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if block.get("type") == "text":
            part: dict[str, Any] = {"type": "text", "text": block.get("text", "")}
            if block.get("cache_control"):
                part["cache_control"] = block["cache_control"]
            parts.append(part)
        elif block.get("type") == "image":
            source = block.get("source") or {}
            if source.get("type") == "base64":
                url = f"data:{source.get('media_type')};base64,{source.get('data')}"
            else:
                url = str(source.get("url", ""))
            parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


def chat_body_from_messages(request: dict[str, Any]) -> dict[str, Any]:
    """A Messages request (what the anthropic SDK sends) as an OpenAI chat.completions body."""
    messages: list[dict[str, Any]] = []
    system = request.get("system")
    if system:
        if isinstance(system, str):
            messages.append({"role": "system", "content": system})
        else:
            messages.append({"role": "system", "content": _openai_parts(list(system))})
    for message in request.get("messages") or []:
        role, content = message.get("role"), message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        blocks = [b for b in blocks or [] if isinstance(b, dict)]
        if role == "assistant":
            text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
            calls = [
                {
                    "id": b.get("id"),
                    "type": "function",
                    "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input"))},
                }
                for b in blocks
                if b.get("type") == "tool_use"
            ]
            reply: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                reply["tool_calls"] = calls
            messages.append(reply)
            continue
        for block in blocks:
            if block.get("type") == "tool_result":
                result = block.get("content")
                text = result if isinstance(result, str) else _text_of(result)
                if block.get("is_error"):
                    text = f"[tool error] {text}"
                messages.append(
                    {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}
                )
        parts = _openai_parts(blocks)
        if parts:
            plain = all(p["type"] == "text" and "cache_control" not in p for p in parts)
            text_content = "".join(p["text"] for p in parts) if plain else None
            messages.append({"role": "user", "content": text_content or parts})
    body: dict[str, Any] = {
        "model": request.get("model"),
        "messages": messages,
        "max_tokens": request.get("max_tokens"),
        "stream": bool(request.get("stream")),
    }
    if stops := request.get("stop_sequences"):
        body["stop"] = list(stops)
    for name in ("temperature", "top_p"):
        if request.get(name) is not None:
            body[name] = request[name]
    if tools := request.get("tools"):
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.get("name"),
                    "description": t.get("description", ""),
                    "parameters": t.get("input_schema") or {"type": "object"},
                },
            }
            for t in tools
            if t.get("type") in (None, "custom")
        ]
        choice = request.get("tool_choice") or {}
        mapped = {"auto": "auto", "any": "required", "none": "none"}.get(str(choice.get("type")))
        if choice.get("type") == "tool":
            body["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif mapped:
            body["tool_choice"] = mapped
        if choice.get("disable_parallel_tool_use"):
            body["parallel_tool_calls"] = False
    user = (request.get("metadata") or {}).get("user_id")
    if user:
        body["user"] = str(user)
    return body


def message_from_completion(
    completion: dict[str, Any], usage: Usage, cache_write_tokens: int
) -> dict[str, Any]:
    """The gateway's OpenAI-shaped answer as a Messages `Message`."""
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if reply.get("content"):
        content.append({"type": "text", "text": str(reply["content"])})
    for call in reply.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _json_object(str(function.get("arguments") or "")),
            }
        )
    return {
        "id": _message_id(str(completion.get("id") or "")),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model"),
        "content": content,
        "stop_reason": _FINISH_TO_STOP.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": anthropic_usage(usage, cache_write_tokens),
    }


def _message_id(raw: str) -> str:
    return raw if raw.startswith("msg_") else f"msg_{raw.removeprefix('chatcmpl-')}"


def error_event(error_type: str, message: str, **details: Any) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message, **details}}


class MessagesStreamWriter:
    """OpenAI chunks (from the gateway) -> Messages stream events, block by block."""

    def __init__(self, model: str, request_id: str) -> None:
        self.model = model
        self.id = f"msg_{request_id}"
        self._started = False
        self._open: tuple[str, int] | None = None  # (kind, tool index) of the open block
        self._blocks = 0
        self.stop_reason: str | None = None

    def _start(self, model: str | None) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        if model:
            self.model = model
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Input is known only at the end (OpenAI-shaped upstreams report it last); the
            # final message_delta carries the cumulative totals.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [{"type": "message_start", "message": message}]

    def _close(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        self._open = None
        self._blocks += 1
        return [{"type": "content_block_stop", "index": self._blocks - 1}]

    def chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._start(chunk.get("model"))
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if text := delta.get("content"):
                if self._open is None or self._open[0] != "text":
                    events += self._close()
                    self._open = ("text", 0)
                    events.append(
                        {
                            "type": "content_block_start",
                            "index": self._blocks,
                            "content_block": {"type": "text", "text": ""},
                        }
                    )
                events.append(
                    {
                        "type": "content_block_delta",
                        "index": self._blocks,
                        "delta": {"type": "text_delta", "text": text},
                    }
                )
            for call in delta.get("tool_calls") or []:
                index = int(call.get("index", 0))
                function = call.get("function") or {}
                if self._open != ("tool", index):
                    events += self._close()
                    self._open = ("tool", index)
                    block: dict[str, Any] = {
                        "type": "tool_use",
                        "id": call.get("id"),
                        "name": function.get("name"),
                        "input": {},
                    }
                    events.append(
                        {
                            "type": "content_block_start",
                            "index": self._blocks,
                            "content_block": block,
                        }
                    )
                if arguments := function.get("arguments"):
                    events.append(
                        {
                            "type": "content_block_delta",
                            "index": self._blocks,
                            "delta": {"type": "input_json_delta", "partial_json": arguments},
                        }
                    )
            if finish := choice.get("finish_reason"):
                self.stop_reason = _FINISH_TO_STOP.get(str(finish), "end_turn")
        return events

    def finish(
        self, usage: Usage, cache_write_tokens: int, extra: dict[str, Any]
    ) -> list[dict[str, Any]]:
        events = self._start(None) + self._close()
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason or "end_turn", "stop_sequence": None},
                "usage": anthropic_usage(usage, cache_write_tokens),
                **extra,
            }
        )
        events.append({"type": "message_stop"})
        return events

    def fail(self, error: dict[str, Any]) -> list[dict[str, Any]]:
        return [*self._start(None), error]
