"""DynamoDB's capacity arithmetic (bench.cost.capacity, bench.cost.recorder's index rules)
against the examples AWS documents.

Sources: "DynamoDB item sizes and formats" (CapacityUnitCalculations.html), "DynamoDB read and
write operations" (read-write-operations.html), "Amazon DynamoDB Transactions: How it works"
(transaction-apis.html), the on-demand pricing page, and "Using Global Secondary Indexes"
(GSI.html), all under docs.aws.amazon.com/amazondynamodb/latest/developerguide/ but the
pricing page (aws.amazon.com/dynamodb/pricing/on-demand/)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from bench.cost.capacity import (
    KB,
    batch_read_units,
    item_size,
    read_units,
    value_size,
    write_units,
)
from bench.cost.recorder import Index, _index_writes


# Item sizes: attribute names plus values -------------------------------------------------
@pytest.mark.parametrize(
    ("item", "size"),
    [
        # A string: its name's UTF-8 bytes plus its value's.
        ({"name": {"S": "Alice"}}, 4 + 5),
        ({"é": {"S": "日本"}}, 2 + 6),
        # A number: 1 byte per two significant digits (leading and trailing zeroes trimmed),
        # plus 1.
        ({"n": {"N": "123"}}, 1 + 2 + 1),
        ({"n": {"N": "0.0012300"}}, 1 + 2 + 1),
        ({"n": {"N": "1000"}}, 1 + 1 + 1),
        ({"n": {"N": "-12.5"}}, 1 + 2 + 1),
        ({"n": {"N": "1234"}}, 1 + 2 + 1),
        # A binary: its raw bytes (on the wire it travels as base64).
        ({"b": {"B": b"\x00\x01\x02"}}, 1 + 3),
        ({"b": {"B": base64.b64encode(b"\x00\x01\x02").decode()}}, 1 + 3),
        # A null or a Boolean: 1 byte.
        ({"ok": {"BOOL": True}, "gone": {"NULL": True}}, 2 + 1 + 4 + 1),
        # A List or Map: 3 bytes, plus each element and 1 byte per element.
        ({"l": {"L": []}}, 1 + 3),
        ({"m": {"M": {}}}, 1 + 3),
        ({"l": {"L": [{"S": "ab"}, {"N": "1"}]}}, 1 + 3 + (2 + 1) + (2 + 1)),
        ({"m": {"M": {"a": {"S": "xy"}}}}, 1 + 3 + (1 + 2 + 1)),
        ({"m": {"M": {"in": {"L": [{"BOOL": False}]}}}}, 1 + 3 + (2 + (3 + 1 + 1) + 1)),
        # Several attributes: the sum.
        ({"pk": {"S": "ACCT#a"}, "seq": {"N": "42"}}, (2 + 6) + (3 + 1 + 1)),
    ],
)
def test_an_items_size_is_its_names_and_values(item: dict[str, Any], size: int) -> None:
    assert item_size(item) == size


def test_sets_count_their_members_and_no_item_is_zero() -> None:
    assert value_size({"SS": ["a", "bc"]}) == 3
    assert value_size({"NS": ["1", "22"]}) == 2 + 2
    assert item_size(None) == 0


# Writes: 1 unit per started KB, twice in a transaction -----------------------------------
@pytest.mark.parametrize(
    ("size", "units"),
    [
        (0, 1),  # a write of a missing item (a failed condition) still costs one unit
        (500, 1),  # "writing a 500-byte item consumes the same throughput as a 1 KB item"
        (KB, 1),
        (KB + 1, 2),
        (1638, 2),  # "if you put or delete an item of 1.6 KB, DynamoDB rounds ... to 2 KB"
        (3 * KB, 3),  # "a standard write request of a 3 KB item would require three"
    ],
)
def test_a_write_costs_one_unit_per_started_kilobyte(size: int, units: int) -> None:
    assert write_units(size) == units


def test_a_transactional_write_costs_two_units_per_started_kilobyte() -> None:
    # "a transactional write request of a 3 KB item would require six"
    assert write_units(3 * KB, transactional=True) == 6
    # "each transaction writes three 500-byte items ... you would need ... six WCUs"
    assert sum(write_units(500, transactional=True) for _ in range(3)) == 6


def test_a_batch_write_rounds_each_item() -> None:
    # "if BatchWriteItem writes a 500-byte item and a 3.5 KB item, DynamoDB calculates
    # the size as 5 KB (1 KB + 4 KB)"
    assert write_units(500) + write_units(int(3.5 * KB)) == 5


# Reads: 1 unit per started 4 KB strongly consistent, half eventually, twice transactional
def test_a_read_costs_one_unit_per_started_4_kilobytes() -> None:
    assert read_units(int(3.5 * KB)) == 1  # "an item that is 3.5 KB ... rounds to 4 KB"
    assert read_units(10 * KB) == 3  # "an item of 10 KB ... rounds the item size to 12 KB"
    # "a strongly consistent read request of an 8 KB item requires two read request units,
    # an eventually consistent read ... one ..., and a transactional read ... four"
    assert read_units(8 * KB) == 2
    assert read_units(8 * KB, consistent=False) == 1
    assert read_units(8 * KB, transactional=True) == 4
    # "if total item size is 80 KB, [an eventually consistent read] consumes only 10"
    assert read_units(80 * KB, consistent=False) == 10


def test_a_missing_item_still_costs_the_minimum_read() -> None:
    # "A strongly consistent read request consumes one read capacity unit, while an
    # eventually consistent read request consumes 0.5"
    assert read_units(0) == 1
    assert read_units(0, consistent=False) == 0.5


def test_a_batch_get_rounds_each_item_and_a_query_the_sum() -> None:
    # "if BatchGetItem reads a 1.5 KB item and a 6.5 KB item, DynamoDB will calculate the
    # size as 12 KB (4 KB + 8 KB)"
    assert batch_read_units([int(1.5 * KB), int(6.5 * KB)]) == 3
    # Query: "10 items whose combined size is 40.8 KB. DynamoDB rounds ... to 44 KB"
    assert read_units(int(40.8 * KB)) == 11
    # "If a query returns 1500 items of 64 bytes each, the cumulative size is 96 KB"
    assert read_units(1500 * 64) == 24


# Index writes: one per entry put or removed, two when an indexed key changes --------------
INDEX = Index("by-g", keys=("gk",), projection="ALL")
KEYS = ("pk", "sk")
ITEM = {"pk": {"S": "p"}, "sk": {"S": "s"}, "gk": {"S": "g1"}, "v": {"N": "1"}}


def test_an_item_entering_the_index_is_one_index_write() -> None:
    assert _index_writes(INDEX, KEYS, None, ITEM) == [("index put", item_size(ITEM))]
    without = {k: v for k, v in ITEM.items() if k != "gk"}
    assert _index_writes(INDEX, KEYS, without, ITEM) == [("index put", item_size(ITEM))]


def test_an_indexed_key_changing_is_a_delete_and_a_put() -> None:
    moved = {**ITEM, "gk": {"S": "g2"}}
    assert _index_writes(INDEX, KEYS, ITEM, moved) == [
        ("index delete", item_size(ITEM)),
        ("index put", item_size(moved)),
    ]


def test_an_item_leaving_the_index_is_one_delete_and_one_never_in_it_costs_nothing() -> None:
    without = {k: v for k, v in ITEM.items() if k != "gk"}
    assert _index_writes(INDEX, KEYS, ITEM, without) == [("index delete", item_size(ITEM))]
    assert _index_writes(INDEX, KEYS, without, {**without, "v": {"N": "2"}}) == []


def test_a_projected_attribute_changing_is_one_index_write_and_an_unprojected_one_none() -> None:
    changed = {**ITEM, "v": {"N": "22"}}
    assert _index_writes(INDEX, KEYS, ITEM, changed) == [("index update", item_size(changed))]
    keys_only = Index("by-g", keys=("gk",), projection="KEYS_ONLY")
    assert _index_writes(keys_only, KEYS, ITEM, changed) == []
