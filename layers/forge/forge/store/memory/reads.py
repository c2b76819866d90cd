"""Reads of the twin: GetItem, Query (table or index, key conditions, filters, direction, Limit
and pages), Scan, BatchGetItem and TransactGetItems, validated as DynamoDB validates them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forge.store.memory import errors
from forge.store.memory.evaluate import Placeholders, concrete, holds
from forge.store.memory.expressions import (
    Between,
    Comparison,
    Function,
    In,
    Logical,
    Node,
    Not,
    Parsed,
    Path,
    ValueRef,
)
from forge.store.memory.faults import Decision, FaultKind
from forge.store.memory.tables import Index, KeyRange, KeySchema, Page, Table
from forge.store.memory.values import (
    AttributeValue,
    InvalidValue,
    Item,
    canonical_item,
    clone_item,
    compare,
    type_of,
)
from forge.store.memory.writes import parsed, placeholders

_MAX_BATCH_KEYS = 100
_FLIPPED = {"=": "=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_UNSUPPORTED = (
    *("ProjectionExpression", "AttributesToGet", "KeyConditions", "QueryFilter"),
    *("ScanFilter", "ConditionalOperator", "Segment", "TotalSegments"),
)


def _refuse_unmodelled(params: Mapping[str, Any]) -> None:
    for name in _UNSUPPORTED:
        if name in params:
            raise NotImplementedError(f"the memory twin does not model {name}")
    if params.get("Select") == "SPECIFIC_ATTRIBUTES":
        raise NotImplementedError("the memory twin does not model Select=SPECIFIC_ATTRIBUTES")


def _table(tables: Mapping[str, Table], name: str, operation: str) -> Table:
    table = tables.get(name)
    if table is None:
        raise errors.not_found(operation)
    return table


def _key(table: Table, raw: Any, operation: str) -> tuple[Any, ...]:
    try:
        return table.primary_key(canonical_item(raw), exact=True)
    except InvalidValue as exc:
        raise errors.validation(str(exc), operation) from None


def get_item(tables: Mapping[str, Table], params: Mapping[str, Any]) -> dict[str, Any]:
    _refuse_unmodelled(params)
    placeholders(params, [], "GetItem")
    table = _table(tables, params["TableName"], "GetItem")
    item = table.items.get(_key(table, params["Key"], "GetItem"))
    return {"Item": clone_item(item)} if item is not None else {}


def query(tables: Mapping[str, Table], params: Mapping[str, Any], max_bytes: int) -> dict[str, Any]:
    operation = "Query"
    _refuse_unmodelled(params)
    table = _table(tables, params["TableName"], operation)
    index: Index | None = None
    if "IndexName" in params:
        index = table.indexes.get(params["IndexName"])
        if index is None:
            raise errors.validation(
                f"The table does not have the specified index: {params['IndexName']}", operation
            )
        if params.get("ConsistentRead"):
            raise errors.validation(
                "Consistent reads are not supported on global secondary indexes", operation
            )
    if "KeyConditionExpression" not in params:
        raise errors.validation(
            "Either the KeyConditions or KeyConditionExpression parameter must be specified in"
            " the request.",
            operation,
        )
    schema = index.schema if index is not None else table.schema
    keys_parsed = parsed(params["KeyConditionExpression"], "KeyConditionExpression", operation)
    filter_parsed = parsed(params.get("FilterExpression"), "FilterExpression", operation)
    assert keys_parsed is not None
    expressions = [("KeyConditionExpression", keys_parsed)]
    if filter_parsed is not None:
        expressions.append(("FilterExpression", filter_parsed))
    given = placeholders(params, expressions, operation)
    keys = _key_range(keys_parsed, given, schema, table.types, operation)
    if filter_parsed is not None:
        _filter_on_non_keys(filter_parsed, given, schema, operation)
    start = _start_key(table, index, params.get("ExclusiveStartKey"), keys, operation)
    page = table.query(
        index,
        keys,
        forward=params.get("ScanIndexForward", True),
        start=start,
        limit=params.get("Limit"),
        keep=_keeper(filter_parsed, given),
        max_bytes=max_bytes,
    )
    return _answer(page, params)


def scan(tables: Mapping[str, Table], params: Mapping[str, Any], max_bytes: int) -> dict[str, Any]:
    operation = "Scan"
    _refuse_unmodelled(params)
    if "IndexName" in params:
        raise NotImplementedError("the memory twin does not scan indexes")
    table = _table(tables, params["TableName"], operation)
    filter_parsed = parsed(params.get("FilterExpression"), "FilterExpression", operation)
    expressions = [("FilterExpression", filter_parsed)] if filter_parsed is not None else []
    given = placeholders(params, expressions, operation)
    start = None
    if "ExclusiveStartKey" in params:
        _key(table, params["ExclusiveStartKey"], operation)
        start = canonical_item(params["ExclusiveStartKey"])
    page = table.scan(start, params.get("Limit"), _keeper(filter_parsed, given), max_bytes)
    return _answer(page, params)


def batch_get_item(
    tables: Mapping[str, Table], params: Mapping[str, Any], decision: Decision | None
) -> dict[str, Any]:
    operation = "BatchGetItem"
    requests = params["RequestItems"]
    if sum(len(r.get("Keys", [])) for r in requests.values()) > _MAX_BATCH_KEYS:
        raise errors.validation("Too many items requested for the BatchGetItem call", operation)
    responses: dict[str, list[Item]] = {}
    unprocessed: dict[str, dict[str, Any]] = {}
    position = 0
    for name, request in requests.items():
        _refuse_unmodelled(request)
        placeholders(request, [], operation)
        table = _table(tables, name, operation)
        keys = [_key(table, raw, operation) for raw in request["Keys"]]
        if len(set(keys)) != len(keys):
            raise errors.validation("Provided list of item keys contains duplicates", operation)
        found = responses.setdefault(name, [])
        for raw, key in zip(request["Keys"], keys, strict=True):
            position += 1
            if left_out(decision, position):
                left = unprocessed.setdefault(name, {**request, "Keys": []})
                left["Keys"].append(raw)
                continue
            if key in table.items:
                found.append(clone_item(table.items[key]))
    return {"Responses": responses, "UnprocessedKeys": unprocessed}


def transact_get_items(tables: Mapping[str, Table], params: Mapping[str, Any]) -> dict[str, Any]:
    operation = "TransactGetItems"
    entries = params["TransactItems"]
    if len(entries) > _MAX_BATCH_KEYS:
        raise errors.validation(
            "1 validation error detected at 'transactItems' failed to satisfy constraint:"
            " Member must have length less than or equal to 100.",
            operation,
        )
    answers = []
    for entry in entries:
        get = entry["Get"]
        _refuse_unmodelled(get)
        table = _table(tables, get["TableName"], operation)
        item = table.items.get(_key(table, get["Key"], operation))
        answers.append({"Item": clone_item(item)} if item is not None else {})
    return {"Responses": answers}


def left_out(decision: Decision | None, position: int) -> bool:
    """Under an UNPROCESSED fault a batch leaves out every other key, for the caller to retry."""
    return (
        decision is not None
        and decision.kind is FaultKind.UNPROCESSED
        and (position + decision.item) % 2 == 0
    )


# Building blocks -----------------------------------------------------------------------------
def _answer(page: Page, params: Mapping[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {"Count": len(page.items), "ScannedCount": page.scanned}
    if params.get("Select") != "COUNT":
        answer["Items"] = page.items
    if page.last_key is not None:
        answer["LastEvaluatedKey"] = page.last_key
    return answer


def _keeper(filter_parsed: Parsed | None, given: Placeholders) -> Any:
    if filter_parsed is None:
        return lambda item: True
    tree = filter_parsed.condition
    return lambda item: holds(tree, item, given)


def _key_range(
    keys: Parsed, given: Placeholders, schema: KeySchema, types: Mapping[str, str], op: str
) -> KeyRange:
    """A key condition as DynamoDB accepts it: `hash = :v`, optionally AND one condition on
    the sort key (= < <= > >= BETWEEN begins_with), each on the key itself."""
    terms: list[Node] = []
    pending: list[Node] = [keys.condition]
    while pending:
        node = pending.pop(0)
        if isinstance(node, Logical) and node.op == "AND":
            pending[:0] = [node.left, node.right]
        elif isinstance(node, Logical | Not | In):
            operator = node.op if isinstance(node, Logical) else type(node).__name__.upper()
            raise errors.validation(
                f"Invalid operator used in KeyConditionExpression: {operator}", op
            )
        else:
            terms.append(node)
    if len(terms) > 2:
        raise errors.validation("Conditions can be of length 1 or 2 only", op)
    hash_value: AttributeValue | None = None
    range_op: str | None = None
    bounds: tuple[AttributeValue, ...] = ()
    for term in terms:
        name, operator, values = _key_term(term, given, op)
        if name == schema.hash and operator == "=" and hash_value is None:
            hash_value = values[0]
        elif name == schema.range and range_op is None:
            range_op, bounds = operator, values
        else:
            raise errors.validation("Query key condition not supported", op)
        if any(v.get("S") == "" or v.get("B") == b"" for v in values):
            raise errors.validation(
                "One or more parameter values are not valid. The AttributeValue for a key"
                f" attribute cannot contain an empty string value. Key: {name}",
                op,
            )
        wanted = types[name]
        if any(type_of(v) != wanted for v in values) or (
            operator == "begins_with" and wanted == "N"
        ):
            raise errors.validation(
                "One or more parameter values were invalid: Condition parameter type does not"
                " match schema type",
                op,
            )
    if hash_value is None:
        raise errors.validation(f"Query condition missed key schema element: {schema.hash}", op)
    return KeyRange(hash_value, range_op, bounds)


def _key_term(
    term: Node, given: Placeholders, op: str
) -> tuple[str, str, tuple[AttributeValue, ...]]:
    def name_of(node: Node) -> str:
        if not isinstance(node, Path) or len(node.elements) != 1:
            raise errors.validation("Query key condition not supported", op)
        return str(concrete(node, given.names)[0])

    def value_of(node: Node) -> AttributeValue:
        if not isinstance(node, ValueRef):
            raise errors.validation("Query key condition not supported", op)
        return given.values[node.name]

    if isinstance(term, Comparison) and term.op in _FLIPPED:
        if isinstance(term.left, ValueRef):
            return name_of(term.right), _FLIPPED[term.op], (value_of(term.left),)
        return name_of(term.left), term.op, (value_of(term.right),)
    if isinstance(term, Between):
        return name_of(term.subject), "BETWEEN", (value_of(term.low), value_of(term.high))
    if isinstance(term, Function) and term.name == "begins_with":
        return name_of(term.args[0]), "begins_with", (value_of(term.args[1]),)
    raise errors.validation("Query key condition not supported", op)


def _filter_on_non_keys(
    filter_parsed: Parsed, given: Placeholders, schema: KeySchema, op: str
) -> None:
    used = set(filter_parsed.words) | {given.names[n] for n in filter_parsed.names}
    for name in schema.names:
        if name in used:
            raise errors.validation(
                "Filter Expression can only contain non-primary key attributes: Primary key"
                f" attribute: {name}",
                op,
            )


def _start_key(table: Table, index: Index | None, raw: Any, keys: KeyRange, op: str) -> Item | None:
    """ExclusiveStartKey: the table's key (and the index's), inside the query's bounds."""
    if raw is None:
        return None
    try:
        start = canonical_item(raw)
    except InvalidValue as exc:
        raise errors.validation(str(exc), op) from None
    names = set(table.schema.names) | (set(index.schema.names) if index else set())
    if set(start) != names:
        raise errors.validation(
            "The provided starting key is invalid: The provided key element does not match the"
            " schema",
            op,
        )
    schema = index.schema if index is not None else table.schema
    outside = compare(start[schema.hash], keys.hash) != 0
    if keys.op is not None and schema.range is not None:
        outside = outside or not _within(start[schema.range], keys)
    if outside:
        raise errors.validation(
            "The provided starting key is outside query boundaries based on provided conditions",
            op,
        )
    return start


def _within(value: AttributeValue, keys: KeyRange) -> bool:
    order = [compare(value, bound) for bound in keys.bounds]
    if any(o is None for o in order):
        return False
    first = order[0]
    assert first is not None
    if keys.op == "begins_with":
        data, prefix = next(iter(value.values())), next(iter(keys.bounds[0].values()))
        return bool(data.startswith(prefix))
    if keys.op == "BETWEEN":
        last = order[1]
        assert last is not None
        return first >= 0 and last <= 0
    return {
        "=": first == 0,
        "<": first < 0,
        "<=": first <= 0,
        ">": first > 0,
        ">=": first >= 0,
    }[keys.op or "="]
