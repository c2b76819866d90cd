"""`POST /v1/messages`: a Messages request becomes an OpenAI chat body, and the gateway's
OpenAI-shaped answer becomes a Message (its stream: stream_writer)."""

from __future__ import annotations

import json
from typing import Any

from forge.domain.money import Usage
from forge.providers.anthropic_format.terms import (
    FINISH_TO_STOP,
    anthropic_usage,
    json_object,
    text_of,
)


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
                text = result if isinstance(result, str) else text_of(result)
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
                "input": json_object(str(function.get("arguments") or "")),
            }
        )
    return {
        "id": _message_id(str(completion.get("id") or "")),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model"),
        "content": content,
        "stop_reason": FINISH_TO_STOP.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": anthropic_usage(usage, cache_write_tokens),
    }


def _message_id(raw: str) -> str:
    return raw if raw.startswith("msg_") else f"msg_{raw.removeprefix('chatcmpl-')}"
