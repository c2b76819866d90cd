"""What both directions translate alike: stop reasons, usage, text content, JSON arguments.

Usage: Anthropic's input_tokens excludes cache reads and writes; OpenAI's prompt_tokens
includes cached tokens. So prompt = input + cache_creation + cache_read, cached = cache_read.
"""

from __future__ import annotations

import json
from typing import Any

from forge.domain.money import Usage

ANTHROPIC_VERSION = "2023-06-01"

STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def text_of(content: Any) -> str:
    """The text parts of a content value (a string, or a list of parts), joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") in ("text", "input_text", None)
        )
    return ""


def json_object(text: str) -> dict[str, Any]:
    """Tool-call arguments as an object; text that is not one is kept under _raw or _value."""
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
