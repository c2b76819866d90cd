"""The boto3-free DynamoDB (de)serializer must agree with boto3's own, and refuse floats."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer as Boto3Deserializer
from boto3.dynamodb.types import TypeSerializer as Boto3Serializer
from hypothesis import given
from hypothesis import strategies as st

from forge.store.dynamo.items import TypeDeserializer, TypeSerializer

scalars = st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.text(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(values)
def test_serializes_exactly_like_boto3(value: Any) -> None:
    assert TypeSerializer().serialize(value) == Boto3Serializer().serialize(value)


@given(values)
def test_round_trips_like_boto3(value: Any) -> None:
    wire = Boto3Serializer().serialize(value)
    assert TypeDeserializer().deserialize(wire) == Boto3Deserializer().deserialize(wire)


def test_sets_and_decimals() -> None:
    serializer = TypeSerializer()
    assert serializer.serialize({"b", "a"}) == {"SS": ["a", "b"]}
    assert TypeDeserializer().deserialize(serializer.serialize({1, 2})) == {Decimal(1), Decimal(2)}
    assert serializer.serialize(Decimal("1.25")) == {"N": "1.25"}


@pytest.mark.parametrize("bad", [1.5, Decimal("NaN"), Decimal("Infinity"), object()])
def test_floats_and_non_numbers_are_refused(bad: Any) -> None:
    with pytest.raises(TypeError):
        TypeSerializer().serialize(bad)
