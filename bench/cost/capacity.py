"""DynamoDB's on-demand capacity arithmetic: item sizes, write and read request units.

Every rule here is the documented one (names are the pages' own words):
- item size, "DynamoDB item sizes and formats"
  (docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html):
  the sum of attribute names and values; a string its UTF-8 bytes; a number 1 byte per two
  significant digits plus 1; a binary its raw bytes; a null or Boolean 1 byte; a List or Map
  3 bytes plus its elements, each element 1 byte more;
- units, "DynamoDB read and write operations"
  (docs.aws.amazon.com/amazondynamodb/latest/developerguide/read-write-operations.html):
  a write is 1 unit per 1 KB of item (rounded up), a strongly consistent read 1 unit per 4 KB,
  an eventually consistent read half that; Put counts the larger of the new and the replaced
  item, Update the larger of the item before and after, Delete the deleted item; a read of a
  missing item still costs the minimum; BatchGetItem rounds each item, Query the sum of items;
- transactions, "Amazon DynamoDB Transactions: How it works", capacity management
  (docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html): two
  underlying reads or writes of every item (prepare and commit), consumed even when the
  transaction is cancelled.

1 KB is 1,024 bytes. Sizes are in bytes, units may be fractional (eventually consistent reads).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

KB = 1024
WRITE_UNIT_BYTES = KB
READ_UNIT_BYTES = 4 * KB


def _number_size(text: str) -> int:
    """1 byte per two significant digits (leading and trailing zeroes trimmed), plus 1."""
    digits = text.lstrip("+-").lower().split("e")[0].replace(".", "")
    significant = digits.strip("0") or "0"
    return -(-len(significant) // 2) + 1


def _binary_size(raw: Any) -> int:
    if isinstance(raw, bytes | bytearray):
        return len(raw)
    return len(base64.b64decode(raw))  # on the wire, binary travels as base64 text


def value_size(value: Mapping[str, Any]) -> int:
    """The size of one typed attribute value (DynamoDB JSON), without its name."""
    ((tag, raw),) = value.items()
    match tag:
        case "S":
            return len(str(raw).encode("utf-8"))
        case "N":
            return _number_size(str(raw))
        case "B":
            return _binary_size(raw)
        case "BOOL" | "NULL":
            return 1
        case "SS":
            return sum(len(str(s).encode("utf-8")) for s in raw)
        case "NS":
            return sum(_number_size(str(n)) for n in raw)
        case "BS":
            return sum(_binary_size(b) for b in raw)
        case "L":
            return 3 + sum(value_size(v) + 1 for v in raw)
        case "M":
            return 3 + sum(len(k.encode("utf-8")) + value_size(v) + 1 for k, v in raw.items())
    raise ValueError(f"not a DynamoDB attribute value: {tag}")


def item_size(item: Mapping[str, Mapping[str, Any]] | None) -> int:
    """An item's size: each attribute's name (UTF-8 bytes) plus its value. None (no item): 0."""
    if not item:
        return 0
    return sum(len(name.encode("utf-8")) + value_size(v) for name, v in item.items())


def write_units(size: int, *, transactional: bool = False) -> int:
    """Write request units of one item write: 1 per started KB (at least 1), 2 in a
    transaction (prepare and commit)."""
    units = max(1, -(-size // WRITE_UNIT_BYTES))
    return 2 * units if transactional else units


def read_units(size: int, *, consistent: bool = True, transactional: bool = False) -> float:
    """Read request units of one item read (or one Query's summed items): 1 per started
    4 KB (at least one, even for a missing item) strongly consistent, half that eventually
    consistent, twice that transactional."""
    units = max(1, -(-size // READ_UNIT_BYTES))
    if transactional:
        return float(2 * units)
    return float(units) if consistent else units / 2


def batch_read_units(sizes: Iterable[int], *, consistent: bool = True) -> float:
    """BatchGetItem: each item rounded up to 4 KB on its own, then summed."""
    return sum(read_units(size, consistent=consistent) for size in sizes)
