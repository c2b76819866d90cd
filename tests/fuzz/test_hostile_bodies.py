"""Hypothesis-made hostile bodies and headers for every paid endpoint: valid requests with one
field replaced by anything JSON (or Python's parser) can carry: NaN, Infinity, huge numbers,
lone surrogates, wrong types, deep nesting, plus broken bytes and bad budget headers. Never a
server error; every refusal in the route's error shape; nothing refused is charged."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forge_tools.emulator import Resources
from tests.fuzz.fuzzing import fuzz_target, send

BASES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        "model": "demo-official",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 8,
    },
    "/v1/responses": {"model": "demo-official", "input": "hi", "max_output_tokens": 16},
    "/v1/completions": {"model": "demo-official", "prompt": "hi", "max_tokens": 8},
    "/v1/embeddings": {"model": "demo-embedding", "input": "hi"},
    "/v1/messages": {
        "model": "demo-official",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
    },
}
FIELDS = [
    "model", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options",
    "n", "temperature", "top_p", "stop", "tools", "tool_choice", "input", "system", "seed",
    "logit_bias", "metadata", "user", "extra_field",
    # Responses and legacy completions
    "instructions", "max_output_tokens", "text", "previous_response_id", "reasoning", "prompt",
    "echo", "suffix", "best_of",
]  # fmt: skip

# Text with lone surrogates, control characters and everything else Unicode has.
hostile_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
hostile_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**30]),
)
leaves = st.one_of(st.none(), st.booleans(), hostile_numbers, hostile_text)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(hostile_text, inner, max_size=3)
    ),
    max_leaves=8,
)
# The values that once crashed the gateway, drawn often: alone in a valid body they reach deep.
poison = st.sampled_from(
    [math.nan, math.inf, -math.inf, 1e308, 2**70, "\ud800", "x\udfff", "\x00", [[[[[]]]]]]
)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=20)
headers = st.fixed_dictionaries(
    {},
    optional={
        "x-run-id": header_text,
        "x-run-budget": st.one_of(header_text, st.sampled_from(["", "0", "1e3", "-1", "0.5"])),
        "x-max-request-charge": st.one_of(header_text, st.sampled_from(["", "0.0000001"])),
        "idempotency-key": st.one_of(header_text, st.just("k")),
    },
)


@st.composite
def hostile_requests(draw: st.DrawFn, path: str) -> tuple[bytes, dict[str, str]]:
    body = dict(BASES[path])
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        body[field] = draw(st.one_of(poison, values))
    if draw(st.integers(0, 3)) == 0:  # a change inside the messages (input items) too
        items = "input" if path == "/v1/responses" else "messages"
        body[items] = [{"role": draw(st.sampled_from(["user", "x"])), "content": draw(values)}]
    raw = json.dumps(body, allow_nan=True).encode()  # NaN, Infinity, \\udXXX escapes as sent
    if draw(st.integers(0, 9)) == 0:  # and now and then, bytes that are not UTF-8 at all
        cut = draw(st.integers(0, len(raw)))
        raw = raw[:cut] + draw(st.binary(min_size=1, max_size=4)) + raw[cut:]
    return raw, draw(headers)


@pytest.mark.parametrize("path", list(BASES))
def test_hostile_bodies_never_break_the_gateway_or_its_money(
    aws_stack: Resources, path: str
) -> None:
    target = fuzz_target()

    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=hostile_requests(path))
    def exercise(request: tuple[bytes, dict[str, str]]) -> None:
        raw, extra = request
        sent = {
            "authorization": f"Bearer {target.api_key}",
            "content-type": "application/json",
            **extra,
        }
        latin1 = {name: value.encode("latin-1") for name, value in sent.items()}  # as on a wire
        answer = send(target, "POST", path, content=raw, headers=latin1)
        target.record(path, answer.status_code)
        assert answer.status_code < 500, answer.text
        if answer.status_code >= 400:
            error = answer.json()
            if path == "/v1/messages":
                assert error["type"] == "error" and isinstance(error["error"]["message"], str)
            else:
                assert set(error["error"]) >= {"message", "type", "param", "code"}

    exercise()
    assert target.served > 0, target.statuses  # some mutations still make a valid call
    target.assert_nothing_refused_was_charged()
