"""Stored records read back as written. The adapter drops None values on the way to DynamoDB,
nested ones included (`model_dump(exclude_none=True)`), so a field that may be None must also
default to None, or the record cannot be read once stored."""

from __future__ import annotations

import inspect
import typing

import pytest
from pydantic import BaseModel

from forge.domain import idempotency, records
from forge.domain.money import Bucket, Usage
from forge.domain.records import Attempt, Hold, HoldOutcome, Receipt, utcnow
from forge.store.dynamo.items import dump as _dump
from forge.store.dynamo.items import from_item as _from_item
from forge.store.dynamo.items import to_item as _to_item

STORED_MODULES = (records, idempotency)


def stored_models() -> list[type[BaseModel]]:
    return [
        model
        for module in STORED_MODULES
        for _, model in inspect.getmembers(module, inspect.isclass)
        if issubclass(model, BaseModel) and model.__module__ == module.__name__
    ]


@pytest.mark.parametrize("model", stored_models(), ids=lambda m: m.__name__)
def test_no_stored_field_may_be_none_without_defaulting_to_none(model: type[BaseModel]) -> None:
    for name, field in model.model_fields.items():
        nullable = type(None) in typing.get_args(field.annotation)
        assert not (nullable and field.is_required()), f"{model.__name__}.{name}"


def test_a_receipt_with_statusless_attempts_round_trips_through_a_stored_hold() -> None:
    attempts = [
        Attempt(route="r", upstream_model="m", status=None, latency_ms=0, outcome="skipped"),
        Attempt(route="r", upstream_model="m", status=None, latency_ms=9, outcome="error"),
        Attempt(route="r", upstream_model="m", status=200, latency_ms=9, outcome="ok"),
    ]
    receipt = Receipt(
        request_id="req_1",
        account_id="acct_1",
        key_id="key_1",
        project_id="p",
        requested_model="demo-official",
        status="succeeded",
        attempts=attempts,
    )
    hold = Hold(
        request_id="req_1",
        account_id="acct_1",
        key_id="key_1",
        bucket=Bucket.CREDIT,
        amount=10,
        expires_at=utcnow(),
        outcome=HoldOutcome(charge=5, receipt=receipt),
    )
    assert Receipt.model_validate(_from_item(_to_item(_dump(receipt)))) == receipt
    assert Hold.model_validate(_from_item(_to_item(_dump(hold)))) == hold


def test_a_receipt_stored_before_reasoning_tokens_were_counted_reads_with_none() -> None:
    receipt = Receipt(
        request_id="req_1",
        account_id="acct_1",
        key_id="key_1",
        project_id="p",
        requested_model="gpt-4o-mini",
        status="succeeded",
        usage=Usage(input_tokens=10, output_tokens=5, reasoning_tokens=2),
    )
    stored = _dump(receipt)
    del stored["usage"]["reasoning_tokens"]  # as items written before the field existed

    read = Receipt.model_validate(_from_item(_to_item(stored)))

    assert read.usage == Usage(input_tokens=10, output_tokens=5)
    assert Receipt.model_validate(_from_item(_to_item(_dump(receipt)))) == receipt
