"""The Responses and legacy completions translations, as pure functions: requests to chat
bodies (and what is refused), chat answers and chunks back to OpenAI's shapes, each checked
against the official SDK's own types (pydantic validation, not duck typing)."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types import Completion as SdkCompletion
from openai.types.responses import Response as SdkResponse
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from forge.domain.errors import InvalidRequest, UnsupportedParameter
from forge.domain.money import Usage
from forge.providers.openai_format import (
    CompletionsStreamWriter,
    ResponsesStreamWriter,
    chat_body_from_completions,
    chat_body_from_responses,
    response_echo,
    response_from_completion,
    text_completion_from_chat,
)

EVENT = TypeAdapter(ResponseStreamEvent)
USAGE = Usage(input_tokens=20, cached_input_tokens=5, output_tokens=9)
CALL = {"type": "function_call", "call_id": "call_1", "name": "get_weather"}


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"id": "c", "object": "chat.completion.chunk", "model": "m-1", "choices": [choice]}


def tool_delta(index: int, arguments: str, **first: str) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if first:
        call.update(id=first["id"], type="function")
        call["function"]["name"] = first["name"]
    return {"tool_calls": [call]}


# Responses -> chat -------------------------------------------------------------------------
def test_calls_after_an_assistant_message_join_its_turn_and_outputs_follow_as_tool_turns() -> None:
    body = chat_body_from_responses(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Checking."}],
                },
                {**CALL, "arguments": '{"city": "Paris"}'},
                {**CALL, "call_id": "call_2", "arguments": '{"city": "Rome"}'},
                {"type": "function_call_output", "call_id": "call_1", "output": "21"},
                {
                    "type": "function_call_output",
                    "call_id": "call_2",
                    "output": [
                        {"type": "input_text", "text": "2"},
                        {"type": "input_text", "text": "3"},
                    ],
                },
            ],
        }
    )

    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "21"},
        {"role": "tool", "tool_call_id": "call_2", "content": "23"},
    ]


def test_a_string_input_is_one_user_message_after_the_instructions() -> None:
    body = chat_body_from_responses(
        {"model": "m", "input": "hi", "instructions": "Be terse.", "max_output_tokens": 32}
    )

    assert body["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "hi"},
    ]
    assert (body["max_tokens"], body["stream"]) == (32, False)


def test_a_stream_always_asks_the_upstream_for_usage() -> None:
    body = chat_body_from_responses({"model": "m", "input": "hi", "stream": True})

    assert body["stream_options"] == {"include_usage": True}


def test_json_schema_format_becomes_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    text = {"format": {"type": "json_schema", "name": "A", "schema": schema, "strict": True}}

    body = chat_body_from_responses({"model": "m", "input": "x", "text": text})

    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "A", "schema": schema, "strict": True},
    }


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "u"}]}]},
         "input[0].content[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
         "input[0].content[0].type"),
        ({"input": [{"type": "computer_call_output", "call_id": "c"}]}, "input[0].type"),
        ({"tools": [{"type": "function", "name": "f", "defer_loading": True}]},
         "tools[0].defer_loading"),
        ({"tools": [{"type": "mcp", "server_label": "x"}]}, "tools[0].type"),
        ({"tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}}, "tool_choice"),
        ({"text": {"format": {"type": "grammar"}}}, "text.format.type"),
        ({"service_tier": "flex"}, "service_tier"),
    ],
)  # fmt: skip
def test_what_chat_cannot_carry_is_refused_naming_the_param(
    change: dict[str, Any], param: str
) -> None:
    with pytest.raises(UnsupportedParameter) as refused:
        chat_body_from_responses({"model": "m", "input": "x", **change})

    assert refused.value.param == param and refused.value.status == 400


def test_malformed_items_are_invalid_requests() -> None:
    with pytest.raises(InvalidRequest) as refused:
        chat_body_from_responses({"model": "m", "input": [{**CALL, "arguments": None}]})

    assert refused.value.param == "input[0].arguments"
    assert not isinstance(refused.value, UnsupportedParameter)


# Chat -> Response ----------------------------------------------------------------------------
def test_a_chat_answer_becomes_a_response_the_sdk_validates() -> None:
    request = {"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}]}
    completion = {
        "model": "m-1",
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "call_9",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"completion_tokens_details": {"reasoning_tokens": 4}},
    }

    response = response_from_completion(
        completion, USAGE, 2, response_echo(request), response_id="resp_req_1", now=1700000000
    )

    parsed = SdkResponse.model_validate(response)
    assert parsed.id == "resp_req_1" and parsed.status == "completed"
    assert parsed.output_text == "Checking."
    assert [item.type for item in parsed.output] == ["message", "function_call"]
    assert parsed.usage is not None
    assert parsed.usage.model_dump() == {
        "input_tokens": 20,
        "input_tokens_details": {
            "cached_tokens": 5,
            "cache_write_tokens": 2,
            "cache_write_tokens_details": None,
        },
        "output_tokens": 9,
        "output_tokens_details": {"reasoning_tokens": 4},
        "total_tokens": 29,
    }


def test_an_answer_cut_at_its_limit_is_an_incomplete_response() -> None:
    completion = {"choices": [{"message": {"content": "partial"}, "finish_reason": "length"}]}

    response = response_from_completion(
        completion, USAGE, 0, response_echo({}), response_id="resp_r", now=1
    )

    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"


# Chat chunks -> Responses events -------------------------------------------------------------
def writer() -> ResponsesStreamWriter:
    return ResponsesStreamWriter(response_echo({}), "resp_req_1", "m", 1700000000)


def test_text_then_a_tool_call_stream_item_by_item_with_consecutive_sequence_numbers() -> None:
    w = writer()
    events = [
        *w.chunk(chunk({"role": "assistant", "content": ""})),
        *w.chunk(chunk({"content": "Let me "})),
        *w.chunk(chunk({"content": "check."})),
        *w.chunk(chunk(tool_delta(0, "", id="call_1", name="get_weather"))),
        *w.chunk(chunk(tool_delta(0, '{"city":'))),
        *w.chunk(chunk(tool_delta(0, '"Paris"}'), "tool_calls")),
        *w.finish(USAGE, 0, 0, 1700000001, {"receipt": {"charge_micros": 65}}),
    ]

    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        EVENT.validate_python(event)
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Let me check."
    assert final["output"][1]["arguments"] == '{"city":"Paris"}'
    assert final["output"][1]["call_id"] == "call_1" and events[-1]["receipt"]
    # What was announced before the deltas was the empty item, not the finished one.
    assert events[2]["item"]["content"] == [] and events[9]["item"]["arguments"] == ""


def test_a_stream_stopped_at_its_limit_ends_incomplete() -> None:
    w = writer()
    events = [*w.chunk(chunk({"content": "cut"})), *w.chunk(chunk({}, "length"))]
    events += w.finish(USAGE, 0, 0, 2, {})

    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-2]["item"]["status"] == "incomplete"
    EVENT.validate_python(events[-1])


def test_a_cut_stream_fails_with_what_was_delivered_never_completes() -> None:
    w = writer()
    events = [*w.chunk(chunk(tool_delta(0, '{"ci', id="call_1", name="f")))]
    events += w.fail("interrupted; charged 0.000040", USAGE, 0, {"receipt": {"status": "partial"}})

    assert events[-1]["type"] == "response.failed"
    assert "response.completed" not in [e["type"] for e in events]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert failed["output"] == [
        {
            "type": "function_call",
            "id": "fc_req_1_0",
            "call_id": "call_1",
            "name": "f",
            "arguments": '{"ci',
            "status": "incomplete",
        }
    ]
    assert failed["usage"]["output_tokens"] == 9
    EVENT.validate_python(events[-1])


# Legacy completions ----------------------------------------------------------------------------
@pytest.mark.parametrize("prompt", ["tell me", ["tell me"]])
def test_one_prompt_is_one_user_message_with_the_legacy_default_of_16_tokens(
    prompt: str | list[str],
) -> None:
    body = chat_body_from_completions({"model": "m", "prompt": prompt})

    assert body["messages"] == [{"role": "user", "content": "tell me"}]
    assert body["max_tokens"] == 16


@pytest.mark.parametrize("prompt", [["a", "b"], [1, 2], [[1], [2]], []])
def test_several_or_token_prompts_are_refused(prompt: list[Any]) -> None:
    with pytest.raises(UnsupportedParameter) as refused:
        chat_body_from_completions({"model": "m", "prompt": prompt})

    assert refused.value.param == "prompt"


def test_a_chat_answer_becomes_a_text_completion_the_sdk_validates() -> None:
    completion = {
        "model": "m-1",
        "created": 5,
        "choices": [{"message": {"content": "This is a test."}, "finish_reason": "length"}],
    }

    answer = text_completion_from_chat(completion, USAGE, completion_id="cmpl-req_1", now=9)

    parsed = SdkCompletion.model_validate(answer)
    assert parsed.choices[0].text == "This is a test."
    assert parsed.choices[0].finish_reason == "length"
    assert parsed.usage is not None and parsed.usage.total_tokens == 29


@pytest.mark.parametrize("include_usage", [True, False])
def test_chunks_become_text_completion_chunks_and_usage_only_when_asked(
    include_usage: bool,
) -> None:
    w = CompletionsStreamWriter("cmpl-req_1", "m", 5, include_usage)

    chunks = [
        *w.chunk(chunk({"role": "assistant", "content": ""})),
        *w.chunk(chunk({"content": "Hi"})),
        *w.chunk(chunk({}, "stop")),
        *w.finish(USAGE, {"receipt": {}}),
    ]

    # OpenAI streams `finish_reason: null` until the last choice, which the SDK's Completion
    # type (shared with whole answers) does not allow: only those chunks are checked by it.
    for each in chunks:
        if not each["choices"] or each["choices"][0]["finish_reason"] is not None:
            SdkCompletion.model_validate(each)
    assert [c["choices"][0]["text"] for c in chunks if c["choices"]] == ["Hi", ""]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == [None, "stop"]
    assert (chunks[-1].get("usage") is not None) is include_usage
