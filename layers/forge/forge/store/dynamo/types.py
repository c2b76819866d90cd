"""DynamoDB attribute values <-> Python, without importing boto3 (whose import pulls in
s3transfer: ~110 ms of every cold start, for two small classes). Same interface as
boto3.dynamodb.types, and like it, floats are refused: money never travels as a float."""

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


class TypeDeserializer:
    def deserialize(self, value: Mapping[str, Any]) -> Any:
        ((kind, data),) = value.items()
        match kind:
            case "NULL":
                return None
            case "BOOL":
                return bool(data)
            case "N":
                return Decimal(data)
            case "S" | "B":
                return data
            case "M":
                return {k: self.deserialize(v) for k, v in data.items()}
            case "L":
                return [self.deserialize(v) for v in data]
            case "SS" | "BS":
                return set(data)
            case "NS":
                return {Decimal(v) for v in data}
        raise TypeError(f"Unknown DynamoDB type {kind!r}")


def _number(value: int | Decimal) -> str:
    if isinstance(value, Decimal) and not value.is_finite():
        raise TypeError("Infinity and NaN are not valid DynamoDB numbers")
    return str(value)
