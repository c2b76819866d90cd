"""The official openai SDK's Responses and legacy completions against the running local stack
(the demo provider): translated to chat, each charge explained three ways (balance decrease
== receipt == ledger entry)."""

from __future__ import annotations

from typing import Any

from forge.domain.money import Bucket
from tests.e2e.conftest import LocalStack
from tests.e2e.helpers import expected_reply_and_charge, new_customer, sdk

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Explain my balance, please."},
]


def test_a_response_is_charged_as_its_chat_translation_costs(local_stack: LocalStack) -> None:
    account_id, key = new_customer(local_stack)
    store = local_stack.store()
    before = store.get_wallet(account_id, Bucket.CREDIT)

    raw = sdk(local_stack, key).responses.with_raw_response.create(
        model="demo-official", instructions="You are terse.", input="Explain my balance, please."
    )
    response = raw.parse()

    text, expected_charge = expected_reply_and_charge("demo-official", MESSAGES)
    assert response.output_text == text
    assert response.id == f"resp_{raw.headers['x-request-id']}"
    charge = int(raw.headers["x-forge-charge-micros"])
    assert charge == expected_charge > 0
    after = store.get_wallet(account_id, Bucket.CREDIT)
    assert before.balance - after.balance == charge and after.held == 0
    entry = store.list_entries(account_id, Bucket.CREDIT)[-1]
    assert (entry.entry_id, entry.amount) == (raw.headers["x-forge-ledger-entry"], -charge)


def test_a_streamed_response_and_a_legacy_completion_on_a_routed_model(
    local_stack: LocalStack,
) -> None:
    account_id, key = new_customer(local_stack)
    store = local_stack.store()
    before = store.get_wallet(account_id, Bucket.RMB)
    client = sdk(local_stack, key)

    with client.responses.stream(
        model="demo-routed", instructions="You are terse.", input="Explain my balance, please."
    ) as stream:
        final = stream.get_final_response()
    completion = client.completions.create(model="demo-routed", prompt="Tell me a story")

    text, response_charge = expected_reply_and_charge("demo-routed", MESSAGES)
    assert final.output_text == text and final.status == "completed"
    story = [{"role": "user", "content": "Tell me a story"}]
    story_text, story_charge = expected_reply_and_charge("demo-routed", story, max_tokens=16)
    assert completion.choices[0].text == story_text
    after = store.get_wallet(account_id, Bucket.RMB)
    assert before.balance - after.balance == response_charge + story_charge > 0
    assert after.held == 0
