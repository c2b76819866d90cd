"""DynamoDB attribute values as the low-level API carries them ({"S": ...}, {"N": ...}, ...):
validation, DynamoDB's canonical numbers, exact arithmetic, ordering and item size."""

from __future__ import annotations

from decimal import Context, Decimal, DecimalException, Inexact, InvalidOperation, Rounded
from typing import Any

AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]

SCALARS = ("S", "N", "B")
SETS = {"SS": "S", "NS": "N", "BS": "B"}
_TYPES = frozenset({*SCALARS, *SETS, "BOOL", "NULL", "M", "L"})
_PRECISION = 38  # DynamoDB keeps 38 significant digits, exactly
_MAX_EXPONENT = 125  # magnitudes from 1E-130 to 9.99...E+125
_MIN_EXPONENT = -130
# Arithmetic must be exact: a result that would need rounding is an error, as in DynamoDB.
_EXACT = Context(prec=_PRECISION, traps=[Inexact, Rounded, InvalidOperation])
MAX_ITEM_BYTES = 400 * 1024


class InvalidValue(Exception):
    """A value DynamoDB would refuse (a ValidationException)."""


def number(value: AttributeValue) -> Decimal:
    return Decimal(value["N"])


def format_number(raw: str | Decimal) -> str:
    """A number as DynamoDB stores and returns it: no exponent, no trailing zeros, no "-0"."""
    try:
        parsed = raw if isinstance(raw, Decimal) else Decimal(raw.strip())
    except (DecimalException, ValueError):
        raise InvalidValue(f"The parameter cannot be converted to a numeric value: {raw}") from None
    if not parsed.is_finite():
        raise InvalidValue(f"The parameter cannot be converted to a numeric value: {raw}")
    if parsed.is_zero():
        return "0"
    _, digits, exponent = parsed.as_tuple()
    assert isinstance(exponent, int)
    significant = len(digits)
    while significant > 1 and digits[significant - 1] == 0:
        significant, exponent = significant - 1, exponent + 1
    if significant > _PRECISION:
        raise InvalidValue("Attempting to store more than 38 significant digits in a Number")
    magnitude = exponent + significant - 1
    if magnitude > _MAX_EXPONENT:
        raise InvalidValue(
            "Number overflow. Attempting to store a number with magnitude larger than"
            " supported range"
        )
    if magnitude < _MIN_EXPONENT:
        raise InvalidValue(
            "Number underflow. Attempting to store a number with magnitude smaller than"
            " supported range"
        )
    return format(parsed.normalize(_EXACT), "f")


def add(left: AttributeValue, right: AttributeValue, sign: int = 1) -> AttributeValue:
    """left + right (or left - right), exactly; a result past 38 digits is refused."""
    try:
        total = _EXACT.add(number(left), sign * number(right))
    except DecimalException:
        raise InvalidValue(
            "Number overflow. Attempting to store a number with magnitude larger than"
            " supported range"
        ) from None
    return {"N": format_number(total)}


def canonical(value: Any) -> AttributeValue:
    """A validated copy of a value in DynamoDB's canonical form (numbers normalised)."""
    if not isinstance(value, dict) or len(value) != 1:
        raise InvalidValue(
            "Supplied AttributeValue is empty or has more than one datatypes set, must contain"
            " exactly one of the supported datatypes"
        )
    ((kind, data),) = value.items()
    if kind not in _TYPES:
        raise InvalidValue(f"Supplied AttributeValue has an unsupported datatype: {kind}")
    if kind == "S":
        return {"S": str(data)}
    if kind == "N":
        return {"N": format_number(str(data))}
    if kind == "B":
        return {"B": _binary(data)}
    if kind == "BOOL":
        return {"BOOL": bool(data)}
    if kind == "NULL":
        if data is not True:
            raise InvalidValue(
                "One or more parameter values were invalid: Null attribute value types must"
                " have the value of true"
            )
        return {"NULL": True}
    if kind == "M":
        return {"M": {str(k): canonical(v) for k, v in data.items()}}
    if kind == "L":
        return {"L": [canonical(v) for v in data]}
    return {kind: _set(kind, data)}


def _binary(data: Any) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


def _set(kind: str, members: Any) -> list[Any]:
    if not members:
        raise InvalidValue(f"One or more parameter values were invalid: an empty set ({kind})")
    element = SETS[kind]
    values = [canonical({element: m})[element] for m in members]
    seen = {Decimal(v) for v in values} if kind == "NS" else set(values)
    if len(seen) != len(values):
        raise InvalidValue(f"Input collection {members!r} contains duplicates.")
    return values


def canonical_item(item: Any) -> Item:
    if not isinstance(item, dict):
        raise InvalidValue("An item must be a map of attribute names to values")
    return {str(name): canonical(value) for name, value in item.items()}


def clone(value: AttributeValue) -> AttributeValue:
    """A deep copy (values are small trees; cheaper than copy.deepcopy)."""
    ((kind, data),) = value.items()
    if kind == "M":
        return {"M": {k: clone(v) for k, v in data.items()}}
    if kind == "L":
        return {"L": [clone(v) for v in data]}
    if kind in SETS:
        return {kind: list(data)}
    return {kind: data}


def clone_item(item: Item) -> Item:
    return {name: clone(value) for name, value in item.items()}


def type_of(value: AttributeValue) -> str:
    return next(iter(value))


def sort_value(value: AttributeValue) -> Any:
    """A Python value with the order DynamoDB gives a key of this type (S: UTF-8 bytes, which is
    code-point order; N: numeric; B: unsigned bytes)."""
    kind, data = next(iter(value.items()))
    return Decimal(data) if kind == "N" else data


def compare(left: AttributeValue, right: AttributeValue) -> int | None:
    """-1, 0 or 1 for two scalars of one type; None when DynamoDB cannot order them."""
    kind = type_of(left)
    if kind != type_of(right) or kind not in SCALARS:
        return None
    a, b = sort_value(left), sort_value(right)
    return int(a > b) - int(a < b)


def equal(left: AttributeValue, right: AttributeValue) -> bool:
    kind = type_of(left)
    if kind != type_of(right):
        return False
    if kind == "N":
        return number(left) == number(right)
    if kind in SETS:
        if kind == "NS":
            return {Decimal(v) for v in left[kind]} == {Decimal(v) for v in right[kind]}
        return set(left[kind]) == set(right[kind])
    if kind == "M":
        a, b = left["M"], right["M"]
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if kind == "L":
        x, y = left["L"], right["L"]
        return len(x) == len(y) and all(equal(p, q) for p, q in zip(x, y, strict=True))
    return bool(left[kind] == right[kind])


def value_size(value: AttributeValue) -> int:
    """DynamoDB's size accounting, closely enough for its limits (400 KB items, 1 MB pages)."""
    kind, data = next(iter(value.items()))
    if kind == "S":
        return len(data.encode("utf-8", "surrogatepass"))
    if kind == "N":
        return (len(data.replace("-", "").replace(".", "").strip("0")) + 1) // 2 + 1
    if kind == "B":
        return len(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_size(v) + 1 for k, v in data.items())
    if kind == "L":
        return 3 + sum(value_size(v) + 1 for v in data)
    element = SETS[kind]
    return sum(value_size({element: v}) for v in data)


def item_size(item: Item) -> int:
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())
