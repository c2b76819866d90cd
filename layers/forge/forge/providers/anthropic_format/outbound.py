"""A Claude route: an OpenAI chat body becomes a Messages request; a Message, or the stream
events message_start / content_block_start / content_block_delta / content_block_stop /
message_delta / message_stop / ping / error, become chat.completion(.chunk) shapes."""

from __future__ import annotations

import json
from typing import Any

from forge.domain.money import Usage
from forge.domain.upstream import FailureKind, UpstreamError, openai_usage
from forge.providers.anthropic_format.terms import (
    STOP_TO_FINISH,
    json_object,
    text_of,
    usage_from_anthropic,
)

JSON_OBJECT_INSTRUCTION = "Answer with one JSON object and nothing else."
# Anthropic error types that are worth another try (overloaded is HTTP 529).
_TRANSIENT_ERRORS = {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    url = str((part.get("image_url") or {}).get("url", ""))
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url.removeprefix("data:").partition(";base64,")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


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
                        "input": json_object(str(function.get("arguments") or "")),
                    }
                )
            _append(messages, "assistant", blocks)
        elif role in ("tool", "function"):
            result = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id") or message.get("name"),
                "content": text_of(content),
            }
            _append(messages, "user", [result])
    request: dict[str, Any] = {
        "model": body["model"],
        "max_tokens": body.get("max_tokens") or body.get("max_completion_tokens"),
        "messages": messages,
    }
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        # Claude's structured outputs: the same JSON schema, enforced by the model.
        schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
        request["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    elif response_format.get("type") == "json_object":
        # No schema to enforce: asked for, as OpenAI's JSON mode also wants the prompt to ask.
        system.append({"type": "text", "text": JSON_OBJECT_INSTRUCTION})
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
                "finish_reason": STOP_TO_FINISH.get(str(message.get("stop_reason")), "stop"),
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
                return [self._chunk({}, STOP_TO_FINISH.get(str(reason), "stop"))]
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
