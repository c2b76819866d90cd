"""Tables of the twin: items by primary key, global secondary indexes kept on every write (sparse:
an item without an index's key attributes is not in it), key-ordered queries, scans and
stream records. Not thread-safe on its own: the client serialises every call."""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from forge.store.memory.values import (
    MAX_ITEM_BYTES,
    AttributeValue,
    InvalidValue,
    Item,
    clone_item,
    equal,
    item_size,
    sort_value,
    type_of,
)

PrimaryKey = tuple[Any, ...]  # (hash sort value, range sort value or None)
SortKey = tuple[Any, ...]


class _Top:
    """Sorts after every key value: (v, TOP) bounds every sort key that starts with v."""

    def __lt__(self, other: object) -> bool:
        return False

    def __gt__(self, other: object) -> bool:
        return True


TOP = _Top()


@dataclass(frozen=True)
class KeySchema:
    hash: str
    range: str | None = None

    @classmethod
    def of(cls, elements: list[dict[str, str]]) -> KeySchema:
        by_type = {e["KeyType"]: e["AttributeName"] for e in elements}
        return cls(by_type["HASH"], by_type.get("RANGE"))

    @property
    def names(self) -> tuple[str, ...]:
        return (self.hash,) if self.range is None else (self.hash, self.range)


@dataclass
class _Partition:
    """One partition's sort keys in order, each naming the primary key of its item."""

    order: list[SortKey] = field(default_factory=list)
    keys: dict[SortKey, PrimaryKey] = field(default_factory=dict)

    def add(self, sort: SortKey, key: PrimaryKey) -> None:
        if sort not in self.keys:
            insort(self.order, sort)
        self.keys[sort] = key

    def discard(self, sort: SortKey) -> None:
        if self.keys.pop(sort, None) is not None:
            del self.order[bisect_left(self.order, sort)]


@dataclass
class Index:
    name: str
    schema: KeySchema
    projection: str = "ALL"
    include: tuple[str, ...] = ()
    partitions: dict[Any, _Partition] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyRange:
    """A key condition: the partition, and an optional condition on the sort key."""

    hash: AttributeValue
    op: str | None = None  # = < <= > >= BETWEEN begins_with
    bounds: tuple[AttributeValue, ...] = ()


@dataclass
class Page:
    items: list[Item]
    scanned: int
    last_key: Item | None


class Table:
    def __init__(self, name: str, spec: Mapping[str, Any]) -> None:
        self.name = name
        self.spec = dict(spec)
        self.types = {a["AttributeName"]: a["AttributeType"] for a in spec["AttributeDefinitions"]}
        self.schema = KeySchema.of(spec["KeySchema"])
        self.indexes: dict[str, Index] = {}
        for index in spec.get("GlobalSecondaryIndexes") or []:
            projection = index.get("Projection", {})
            self.indexes[index["IndexName"]] = Index(
                index["IndexName"],
                KeySchema.of(index["KeySchema"]),
                projection.get("ProjectionType", "ALL"),
                tuple(projection.get("NonKeyAttributes", ())),
            )
        for schema in [self.schema, *(i.schema for i in self.indexes.values())]:
            for name in schema.names:
                if name not in self.types:
                    raise InvalidValue(
                        "One or more parameter values were invalid: Some index key attributes are"
                        f" not defined in AttributeDefinitions. Keys: [{name}]"
                    )
        stream = spec.get("StreamSpecification") or {}
        self.stream_view: str | None = (
            stream.get("StreamViewType") if stream.get("StreamEnabled") else None
        )
        self.stream: list[dict[str, Any]] = []
        self.items: dict[PrimaryKey, Item] = {}
        self._partitions: dict[Any, _Partition] = {}

    # Keys --------------------------------------------------------------------------------
    def primary_key(self, item: Mapping[str, AttributeValue], *, exact: bool = False) -> PrimaryKey:
        """The primary key of a Key parameter (`exact`: nothing but the key) or of an item."""
        if exact and set(item) != set(self.schema.names):
            raise InvalidValue("The provided key element does not match the schema")
        for name in self.schema.names:
            if name not in item:
                if exact:
                    raise InvalidValue("The provided key element does not match the schema")
                raise InvalidValue(
                    f"One or more parameter values were invalid: Missing the key {name} in the item"
                )
            value, wanted = item[name], self.types[name]
            if type_of(value) != wanted:
                raise InvalidValue(
                    f"One or more parameter values were invalid: Type mismatch for key {name}"
                    f" expected: {wanted} actual: {type_of(value)}"
                )
            if value[wanted] in ("", b""):
                raise InvalidValue(
                    "One or more parameter values were invalid: An AttributeValue may not contain"
                    f" an empty string. Key: {name}"
                )
        hash_value = sort_value(item[self.schema.hash])
        if self.schema.range is None:
            return (hash_value, None)
        return (hash_value, sort_value(item[self.schema.range]))

    def key_item(self, item: Mapping[str, AttributeValue]) -> Item:
        return {name: item[name] for name in self.schema.names}

    def _index_keys(self, index: Index, item: Mapping[str, AttributeValue]) -> bool:
        """Whether the item belongs in the index (it has every index key), refusing index keys
        of the wrong type or empty, as DynamoDB does on write."""
        present = [name for name in index.schema.names if name in item]
        for name in present:
            value, wanted = item[name], self.types[name]
            if type_of(value) != wanted:
                raise InvalidValue(
                    "One or more parameter values were invalid: Type mismatch for Index Key"
                    f" {name} Expected: {wanted} Actual: {type_of(value)}"
                    f" IndexName: {index.name}"
                )
            if value[wanted] in ("", b""):
                raise InvalidValue(
                    "One or more parameter values are not valid. A value specified for a"
                    " secondary index key is not supported. The AttributeValue for a key"
                    " attribute cannot contain an empty string value. IndexName:"
                    f" {index.name}, IndexKey: {name}"
                )
        return len(present) == len(index.schema.names)

    def _sort_key(self, index: Index | None, item: Mapping[str, AttributeValue]) -> SortKey:
        own = () if self.schema.range is None else (sort_value(item[self.schema.range]),)
        if index is None:
            return own
        head = () if index.schema.range is None else (sort_value(item[index.schema.range]),)
        return (*head, sort_value(item[self.schema.hash]), *own)

    # Writes ------------------------------------------------------------------------------
    def check(self, item: Item) -> PrimaryKey:
        """Refuse what DynamoDB would refuse to store; the item's primary key."""
        key = self.primary_key(item)
        for index in self.indexes.values():
            self._index_keys(index, item)
        if item_size(item) > MAX_ITEM_BYTES:
            raise InvalidValue("Item size has exceeded the maximum allowed size")
        return key

    def write(self, key: PrimaryKey, item: Item | None) -> None:
        """Store (or, with None, delete) the item at `key`, keeping indexes and the stream."""
        old = self.items.get(key)
        if old is not None:
            self._unindex(key, old)
        if item is None:
            self.items.pop(key, None)
        else:
            self.items[key] = item
            self._partition(self._partitions, item[self.schema.hash]).add(
                self._sort_key(None, item), key
            )
            for index in self.indexes.values():
                if self._index_keys(index, item):
                    partition = self._partition(index.partitions, item[index.schema.hash])
                    partition.add(self._sort_key(index, item), key)
        self._record(old, item)

    def _unindex(self, key: PrimaryKey, old: Item) -> None:
        self._partitions[key[0]].discard(self._sort_key(None, old))
        for index in self.indexes.values():
            if self._index_keys(index, old):
                index.partitions[sort_value(old[index.schema.hash])].discard(
                    self._sort_key(index, old)
                )

    @staticmethod
    def _partition(partitions: dict[Any, _Partition], hash_value: AttributeValue) -> _Partition:
        return partitions.setdefault(sort_value(hash_value), _Partition())

    def _record(self, old: Item | None, new: Item | None) -> None:
        """A stream record, as DynamoDB Streams gives it, for a write that changed the item."""
        if self.stream_view is None or (old is None and new is None):
            return
        if old is not None and new is not None and _same(old, new):
            return
        image = new if new is not None else old
        assert image is not None
        record: dict[str, Any] = {
            "Keys": clone_item(self.key_item(image)),
            "SequenceNumber": f"{len(self.stream) + 1:021d}",
            "SizeBytes": item_size(image),
            "StreamViewType": self.stream_view,
        }
        if new is not None and self.stream_view in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"):
            record["NewImage"] = clone_item(new)
        if old is not None and self.stream_view in ("OLD_IMAGE", "NEW_AND_OLD_IMAGES"):
            record["OldImage"] = clone_item(old)
        name = "INSERT" if old is None else "REMOVE" if new is None else "MODIFY"
        self.stream.append(
            {
                "eventID": hashlib.sha256(f"{self.name}#{len(self.stream)}".encode()).hexdigest(),
                "eventName": name,
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "dynamodb": record,
            }
        )

    # Reads -------------------------------------------------------------------------------
    def query(
        self,
        index: Index | None,
        keys: KeyRange,
        *,
        forward: bool,
        start: Mapping[str, AttributeValue] | None,
        limit: int | None,
        keep: Callable[[Item], bool],
        max_bytes: int,
    ) -> Page:
        partitions = self._partitions if index is None else index.partitions
        partition = partitions.get(sort_value(keys.hash), _Partition())
        sorts = _in_range(partition.order, keys)
        if start is not None:  # resume after it, in the query's direction
            position = self._sort_key(index, start)
            if forward:
                sorts = sorts[bisect_right(sorts, position) :]
            else:
                sorts = sorts[: bisect_left(sorts, position)]
        if not forward:
            sorts.reverse()
        return self._page(index, (partition.keys[s] for s in sorts), limit, keep, max_bytes)

    def scan(
        self,
        start: Mapping[str, AttributeValue] | None,
        limit: int | None,
        keep: Callable[[Item], bool],
        max_bytes: int,
    ) -> Page:
        """Items in a stable order of hashed partition keys (like DynamoDB's, not key order)."""
        order = sorted(self.items, key=_scan_position)
        if start is not None:
            first = _scan_position(self.primary_key(start, exact=True))
            order = [k for k in order if _scan_position(k) > first]
        return self._page(None, iter(order), limit, keep, max_bytes)

    def _page(
        self,
        index: Index | None,
        keys: Iterator[PrimaryKey],
        limit: int | None,
        keep: Callable[[Item], bool],
        max_bytes: int,
    ) -> Page:
        found: list[Item] = []
        scanned, size = 0, 0
        last: Item | None = None
        for key in keys:
            item = self.items[key]
            size += item_size(item)
            if scanned and size > max_bytes:  # DynamoDB's 1 MB page: stop before this item
                return Page(found, scanned, self._last_key(index, last))
            scanned, last = scanned + 1, item
            if keep(item):
                found.append(self._project(index, item))
            if limit is not None and scanned >= limit:
                # DynamoDB stops at Limit and says where, even if nothing is left after it.
                return Page(found, scanned, self._last_key(index, item))
        return Page(found, scanned, None)

    def _last_key(self, index: Index | None, item: Item | None) -> Item | None:
        if item is None:
            return None
        names = list(self.schema.names) + (list(index.schema.names) if index else [])
        return clone_item({name: item[name] for name in dict.fromkeys(names)})

    def _project(self, index: Index | None, item: Item) -> Item:
        if index is None or index.projection == "ALL":
            return clone_item(item)
        names = {*self.schema.names, *index.schema.names, *index.include}
        return clone_item({k: v for k, v in item.items() if k in names})


def _same(old: Item, new: Item) -> bool:
    return old.keys() == new.keys() and all(equal(old[k], new[k]) for k in old)


def _scan_position(key: PrimaryKey) -> tuple[str, Any]:
    digest = hashlib.md5(repr(key[0]).encode(), usedforsecurity=False).hexdigest()
    return (digest, key[1])


def _in_range(order: list[SortKey], keys: KeyRange) -> list[SortKey]:
    """The partition's sort keys that satisfy the key condition, in ascending order."""
    if keys.op is None:
        return list(order)
    first = sort_value(keys.bounds[0])
    if keys.op == "=":
        return order[bisect_left(order, (first,)) : bisect_right(order, (first, TOP))]
    if keys.op == "<":
        return order[: bisect_left(order, (first,))]
    if keys.op == "<=":
        return order[: bisect_right(order, (first, TOP))]
    if keys.op == ">":
        return order[bisect_right(order, (first, TOP)) :]
    if keys.op == ">=":
        return order[bisect_left(order, (first,)) :]
    if keys.op == "BETWEEN":
        last = sort_value(keys.bounds[1])
        return order[bisect_left(order, (first,)) : bisect_right(order, (last, TOP))]
    # begins_with: the keys with the prefix are contiguous, from the prefix itself on
    start = bisect_left(order, (first,))
    end = start
    while end < len(order) and order[end][0].startswith(first):
        end += 1
    return order[start:end]
