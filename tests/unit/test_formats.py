"""Wire-format translation, both ways, against the shapes the providers document: Anthropic
Messages (system, multi-turn, tool use, stop reasons, cache usage, stream events) and Gemini
generateContent (contents/parts, systemInstruction, usageMetadata, finishReason)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from forge.domain.money import Usage
from forge.domain.routing import RetryPolicy, RouteHealth
from forge.domain.upstream import (
    FailureKind,
    UpstreamError,
    classify,
    openai_usage,
    usage_from_openai,
)
from forge.providers import anthropic_format as claude
from forge.providers import gemini_format as gemini
from forge.providers.http import retry_after_seconds

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    {"role": "user", "content": "And tomorrow?"},
]


# Anthropic, outbound -------------------------------------------------------------------------
def test_a_chat_body_becomes_a_messages_request_with_alternating_turns() -> None:
    request = claude.to_messages_request(
        {
            "model": "claude-haiku-4-5",
            "messages": CONVERSATION,
            "max_tokens": 100,
            "stop": "END",
            "temperature": 1.5,
            "tools": TOOLS,
            "tool_choice": "required",
        }
    )
    assert request["system"] == [{"type": "text", "text": "Be brief."}]
    assert [m["role"] for m in request["messages"]] == ["user", "assistant", "user"]
    assert request["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    # the tool result and the next user text share one user turn
    assert request["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": '{"temp": 21}'},
        {"type": "text", "text": "And tomorrow?"},
    ]
    assert request["max_tokens"] == 100 and request["stop_sequences"] == ["END"]
    assert request["temperature"] == 1.0  # Anthropic's range ends at 1
    assert request["tools"][0]["input_schema"]["type"] == "object"
    assert request["tool_choice"] == {"type": "any"}


def test_a_message_with_tool_use_becomes_a_completion_with_cache_usage_counted_once() -> None:
    body, usage, written = claude.completion_from_message(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5-20251001",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "P"},
                },
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 10,
                "cache_creation_input_tokens": 200,
                "cache_read_input_tokens": 1000,
                "output_tokens": 30,
            },
        }
    )
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"city": "P"}
    assert usage == Usage(input_tokens=1210, cached_input_tokens=1000, output_tokens=30)
    assert written == 200
    assert body["usage"]["prompt_tokens"] == 1210
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 1000
    assert body["model"] == "claude-haiku-4-5-20251001"


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(stop_reason: str, finish: str) -> None:
    message = {
        "id": "m",
        "type": "message",
        "content": [{"type": "text", "text": "x"}],
        "stop_reason": stop_reason,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    assert claude.completion_from_message(message)[0]["choices"][0]["finish_reason"] == finish


def test_the_documented_stream_events_become_chunks_and_usage() -> None:
    reader = claude.MessagesStreamReader(created=1)
    events = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-sonnet-4-5",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 25,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 400,
                    "output_tokens": 1,
                },
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"a": '},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "1}"},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
        {"type": "message_stop"},
    ]
    chunks = [c for e in events for c in reader.feed(e)]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1] == {"content": "Hi"}
    assert deltas[2]["tool_calls"][0]["id"] == "toolu_1"
    arguments = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[2:5])
    assert json.loads(arguments) == {"a": 1}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 425
    assert chunks[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 400
    assert reader.usage == Usage(input_tokens=425, cached_input_tokens=400, output_tokens=15)
    assert reader.stopped


def test_an_overloaded_error_event_is_a_transient_failure() -> None:
    reader = claude.MessagesStreamReader(created=1)
    with pytest.raises(UpstreamError) as failed:
        reader.feed(
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        )
    assert failed.value.kind is FailureKind.RETRY and failed.value.reason == "overloaded_error"


# Anthropic, inbound --------------------------------------------------------------------------
def test_a_messages_request_becomes_a_chat_body() -> None:
    body = claude.chat_body_from_messages(
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 64,
            "system": [
                {"type": "text", "text": "Long prompt", "cache_control": {"type": "ephemeral"}}
            ],
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "toolu_1", "name": "w", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                        {"type": "text", "text": "Thanks"},
                    ],
                },
            ],
            "tools": [{"name": "w", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "w"},
            "stop_sequences": ["##"],
            "stream": True,
        }
    )
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "user"]
    assert body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][2]["tool_calls"][0]["id"] == "toolu_1"
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "w"}}
    assert body["stop"] == ["##"] and body["max_tokens"] == 64 and body["stream"] is True


def test_the_gateways_stream_becomes_messages_events() -> None:
    writer = claude.MessagesStreamWriter("m", "req_1")
    chunk = {
        "model": "m-1",
        "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}],
    }
    call = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": "{}"},
    }
    events = writer.chunk(chunk)
    events += writer.chunk({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
    events += writer.chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    events += writer.finish(Usage(input_tokens=50, cached_input_tokens=20, output_tokens=7), 10, {})
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0]["message"]["model"] == "m-1"
    assert events[4]["content_block"]["type"] == "tool_use"
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    assert events[-2]["usage"] == {
        "input_tokens": 20,
        "cache_creation_input_tokens": 10,
        "cache_read_input_tokens": 20,
        "output_tokens": 7,
    }


# Gemini --------------------------------------------------------------------------------------
def test_a_chat_body_becomes_a_generate_content_request() -> None:
    request = gemini.to_generate_content_request(
        {
            "model": "gemini-2.5-flash",
            "messages": CONVERSATION,
            "max_tokens": 99,
            "top_p": 0.5,
            "stop": ["X"],
            "tools": TOOLS,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        }
    )
    assert request["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in request["contents"]] == ["user", "model", "user"]
    assert request["contents"][1]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    ]
    assert request["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
        {"text": "And tomorrow?"},
    ]
    assert request["generationConfig"] == {
        "maxOutputTokens": 99,
        "topP": 0.5,
        "stopSequences": ["X"],
    }
    assert request["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    assert request["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }


def test_usage_metadata_counts_cache_once_and_thoughts_as_output() -> None:
    usage = gemini.usage_from_gemini(
        {
            "promptTokenCount": 1200,
            "cachedContentTokenCount": 1000,
            "candidatesTokenCount": 40,
            "thoughtsTokenCount": 25,
            "toolUsePromptTokenCount": 5,
            "totalTokenCount": 1270,
        }
    )
    assert usage == Usage(
        input_tokens=1205, cached_input_tokens=1000, output_tokens=65, reasoning_tokens=25
    )


def test_openai_reasoning_tokens_are_part_of_the_output_and_shown_apart() -> None:
    raw = {
        "prompt_tokens": 20,
        "completion_tokens": 50,  # OpenAI counts (and bills) the reasoning here
        "total_tokens": 70,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 32},
    }
    usage = usage_from_openai(raw)
    assert usage == Usage(input_tokens=20, output_tokens=50, reasoning_tokens=32)
    shown = openai_usage(Usage(input_tokens=20, output_tokens=50, reasoning_tokens=32))
    assert shown["completion_tokens"] == 50
    assert shown["completion_tokens_details"] == {"reasoning_tokens": 32}


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("OTHER", "stop")],
)
def test_finish_reasons_map(reason: str, finish: str) -> None:
    payload = {
        "candidates": [
            {"content": {"parts": [{"text": "x"}], "role": "model"}, "finishReason": reason}
        ],
        "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1},
    }
    body, _ = gemini.completion_from_response(payload, "g")
    assert body["choices"][0]["finish_reason"] == finish


def test_stream_chunks_keep_the_last_usage_and_end_at_the_finish_reason() -> None:
    reader = gemini.GenerateStreamReader("gemini-2.5-flash", created=1)
    first = {
        "candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}, "index": 0}],
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
        "responseId": "r1",
        "modelVersion": "gemini-2.5-flash-001",
    }
    last = {
        "candidates": [
            {"content": {"parts": [{"text": "lo"}], "role": "model"}, "finishReason": "STOP"}
        ],
        "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 2, "totalTokenCount": 11},
    }
    chunks = reader.feed(first, 200) + reader.feed(last, 200)
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["Hel", "lo", None]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert reader.finished and reader.usage == Usage(input_tokens=9, output_tokens=2)
    assert reader.usage_chunk()["usage"]["total_tokens"] == 11  # type: ignore[index]
    with pytest.raises(UpstreamError):
        reader.feed({"error": {"code": 500, "message": "boom", "status": "INTERNAL"}}, 200)


# Retry policy, route health, classification ---------------------------------------------------
def test_backoff_is_capped_jittered_and_honours_retry_after() -> None:
    policy = RetryPolicy(base_delay=0.2, max_delay=1.0, max_retry_after=5)
    assert policy.delay(0, None, lambda: 0.0) == pytest.approx(0.1)
    assert policy.delay(0, None, lambda: 1.0) == pytest.approx(0.2)
    assert policy.delay(10, None, lambda: 1.0) == pytest.approx(1.0)  # capped
    assert policy.delay(3, 2.5, lambda: 0.7) == 2.5  # the provider's Retry-After wins
    assert policy.waits_for(5) and not policy.waits_for(5.1)


def test_a_route_that_keeps_failing_is_skipped_for_a_while() -> None:
    now = [100.0]
    health = RouteHealth(threshold=2, cooldown=30, clock=lambda: now[0])
    health.failed("a")
    assert health.healthy("a")
    health.failed("a")
    assert not health.healthy("a")
    now[0] += 30
    assert health.healthy("a")
    health.failed("a")
    health.succeeded("a")
    health.failed("a")
    assert health.healthy("a")  # a success resets the count


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (None, FailureKind.RETRY),
        (408, FailureKind.RETRY),
        (429, FailureKind.RETRY),
        (500, FailureKind.RETRY),
        (529, FailureKind.RETRY),
        (401, FailureKind.ROUTE),
        (404, FailureKind.ROUTE),
        (400, FailureKind.CLIENT),
        (422, FailureKind.CLIENT),
    ],
)
def test_failures_are_classified(status: int | None, kind: FailureKind) -> None:
    assert classify(status) is kind


def test_retry_after_is_read_in_seconds_dates_and_milliseconds() -> None:
    assert retry_after_seconds(httpx.Response(429, headers={"retry-after": "3"})) == 3
    assert retry_after_seconds(httpx.Response(429, headers={"retry-after-ms": "250"})) == 0.25
    past = httpx.Response(429, headers={"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert retry_after_seconds(past) == 0
    assert retry_after_seconds(httpx.Response(429)) is None
