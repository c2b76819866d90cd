"""DynamoDB JSON <-> Python: the one encoder and the one decoder of every item the adapters
write or read and of every stream image the archiver reads.

Numbers decode exactly: an integral N is an int, any other a Decimal, at every depth. Floats
are refused on the way in: money never travels as a float. No boto3 import (it pulls in
s3transfer: ~110 ms of every cold start); `TypeSerializer`/`TypeDeserializer` keep boto3's
interface, and a unit test holds them to boto3's results.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from decimal import Decimal
from typing import Any


class TypeSerializer:
    def serialize(self, value: Any) -> dict[str, Any]:
        if value is None:
            return {"NULL": True}
        if isinstance(value, bool):
            return {"BOOL": value}
        if isinstance(value, int | Decimal):
            return {"N": _number(value)}
        if isinstance(value, float):
            raise TypeError("Float types are not supported. Use int or Decimal.")
        if isinstance(value, str):
            return {"S": value}
        if isinstance(value, bytes | bytearray):
            return {"B": bytes(value)}
        if isinstance(value, Mapping):
            return {"M": {str(k): self.serialize(v) for k, v in value.items()}}
        if isinstance(value, Set):
            return self._serialize_set(value)
        if isinstance(value, list | tuple):
            return {"L": [self.serialize(v) for v in value]}
        raise TypeError(f"Unsupported type {type(value).__name__} for a DynamoDB value")

    @staticmethod
    def _serialize_set(values: Set[Any]) -> dict[str, Any]:
        if all(isinstance(v, str) for v in values):
            return {"SS": sorted(values)}
        if all(isinstance(v, int | Decimal) and not isinstance(v, bool) for v in values):
            return {"NS": [_number(v) for v in values]}
        if all(isinstance(v, bytes) for v in values):
            return {"BS": sorted(values)}
        raise TypeError("A set must hold only strings, only numbers or only bytes")


def decode_value(value: Mapping[str, Any]) -> Any:
    """One attribute value as a plain Python value. Anything that is not one raises
    ValueError (or, for a malformed number, an ArithmeticError)."""
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ValueError("an attribute value has exactly one type tag")
    ((tag, raw),) = value.items()
    match tag:
        case "S" | "B":
            return raw
        case "N":
            return _exact(raw)
        case "BOOL":
            return bool(raw)
        case "NULL":
            return None
        case "M":
            return {k: decode_value(v) for k, v in raw.items()}
        case "L":
            return [decode_value(v) for v in raw]
        case "SS" | "BS":
            return set(raw)
        case "NS":
            return {_exact(n) for n in raw}
    raise ValueError(f"unknown attribute type {tag!r}")


class TypeDeserializer:
    """boto3's deserializer interface over `decode_value`."""

    def deserialize(self, value: Mapping[str, Any]) -> Any:
        return decode_value(value)


_serializer = TypeSerializer()


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    """Plain values as an item (or expression values); None values are left out."""
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item (or a key) as plain values."""
    return {k: decode_value(v) for k, v in item.items()}


def dump(model: Any) -> dict[str, Any]:
    """A pydantic model as DynamoDB values: JSON mode turns datetimes and enums into strings."""
    return dict(model.model_dump(mode="json", exclude_none=True))


def _exact(raw: str) -> int | Decimal:
    number = Decimal(raw)
    return int(number) if number == number.to_integral_value() else number


def _number(value: int | Decimal) -> str:
    if isinstance(value, Decimal) and not value.is_finite():
        raise TypeError("Infinity and NaN are not valid DynamoDB numbers")
    return str(value)
