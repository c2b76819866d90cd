"""What the e2e tests compute independently of the gateway: the demo provider's documented
token counts times the catalog's prices."""

from __future__ import annotations

from typing import Any

from forge.catalog import load_catalog
from forge.demo_upstream import count_usage, reply_words
from forge.money import Usage, charge_for


def expected_reply_and_charge(
    model: str, messages: list[dict[str, Any]], max_tokens: int | None = None
) -> tuple[str, int]:
    words, _ = reply_words(messages, max_tokens)
    raw = count_usage(messages, len(words))
    usage = Usage(
        input_tokens=raw["prompt_tokens"],
        cached_input_tokens=raw["prompt_tokens_details"]["cached_tokens"],
        output_tokens=raw["completion_tokens"],
    )
    route = next(m for m in load_catalog().models if m.id == model).routes[0]
    return " ".join(words), charge_for(usage, route.effective_prices)
