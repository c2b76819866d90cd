"""The hold's input bound counts everything the provider bills as prompt: messages, tool
definitions, tool choice and a structured output's schema (a tool-heavy request must not get
a hold too small for it, which would cap its charge below its cost)."""

from __future__ import annotations

from typing import Any

from forge.domain.requests import ChatCompletionRequest
from forge.gateway.plan import estimated_input_tokens, worst_case_input_tokens

MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
BIG_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "x" * 5000,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def _bound(**fields: Any) -> int:
    return worst_case_input_tokens(
        ChatCompletionRequest.model_validate({"model": "m", "messages": MESSAGES, **fields})
    )


def test_tool_definitions_count_toward_the_bound() -> None:
    plain = _bound()
    with_tool = _bound(tools=[BIG_TOOL])
    assert with_tool >= plain + 5000, (plain, with_tool)


def test_legacy_functions_and_tool_choice_count_too() -> None:
    assert _bound(functions=[BIG_TOOL["function"]]) >= _bound() + 5000
    assert _bound(tools=[BIG_TOOL], tool_choice="required") > _bound(tools=[BIG_TOOL])


def test_a_structured_output_schema_counts_toward_the_bound() -> None:
    schema = {"type": "object", "description": "y" * 3000, "properties": {}}
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    assert _bound(response_format=fmt) >= _bound() + 3000


def test_the_estimate_is_a_quarter_of_the_bound_rounded_up() -> None:
    request = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": MESSAGES, "tools": [BIG_TOOL]}
    )
    assert estimated_input_tokens(request) == -(-worst_case_input_tokens(request) // 4)
