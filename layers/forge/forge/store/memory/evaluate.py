"""Expressions bound to a request's placeholders and evaluated against an item, with DynamoDB's
semantics: a missing attribute or a type mismatch makes a comparison false (never an error);
update operands are read from the item as it was before the update; numbers are exact."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from forge.store.memory.expressions import (
    COMPARATORS,
    Arithmetic,
    Between,
    Comparison,
    Function,
    In,
    Logical,
    Node,
    Not,
    Parsed,
    Path,
    Update,
    ValueRef,
)
from forge.store.memory.reserved import RESERVED_WORDS
from forge.store.memory.values import (
    SCALARS,
    SETS,
    AttributeValue,
    Item,
    add,
    clone,
    compare,
    equal,
    type_of,
)

_WRONG_TYPE = "An operand in the update expression has an incorrect data type"
_MISSING = "The provided expression refers to an attribute that does not exist in the item"
_BAD_PATH = "The document path provided in the update expression is invalid for update"
_TYPE_NAMES = frozenset({"S", "N", "B", "SS", "NS", "BS", "BOOL", "NULL", "M", "L"})
Concrete = tuple[str | int, ...]


class EvaluationError(Exception):
    """An update that cannot apply to this item (a ValidationException; in a transaction, a
    `ValidationError` cancellation reason)."""


class InvalidExpression(Exception):
    """An expression refused whatever the item (a ValidationException)."""


@dataclass(frozen=True)
class Placeholders:
    names: Mapping[str, str]
    values: Mapping[str, AttributeValue]


def check(parsed: Parsed, given: Placeholders, what: str) -> None:
    """What DynamoDB checks before reading any item: placeholders defined, no bare reserved
    word, and operands of a type the operator accepts."""
    for name in sorted(parsed.names):
        if name not in given.names:
            raise InvalidExpression(
                f"Invalid {what}: An expression attribute name used in the document path is not"
                f" defined; attribute name: {name}"
            )
    for value in sorted(parsed.values):
        if value not in given.values:
            raise InvalidExpression(
                f"Invalid {what}: An expression attribute value used in expression is not"
                f" defined; attribute value: {value}"
            )
    for word in sorted(parsed.words):
        if word.upper() in RESERVED_WORDS:
            raise InvalidExpression(
                f"Invalid {what}: Attribute name is a reserved keyword; reserved keyword: {word}"
            )
    if isinstance(parsed.tree, Update):
        _check_update(parsed.tree, given)
    else:
        _check_condition(parsed.tree, given, what)


def _operand_type(node: Node, given: Placeholders) -> str | None:
    return type_of(given.values[node.name]) if isinstance(node, ValueRef) else None


def _refuse(what: str, operator: str, kind: str) -> InvalidExpression:
    return InvalidExpression(
        f"Invalid {what}: Incorrect operand type for operator or function;"
        f" operator or function: {operator}, operand type: {kind}"
    )


def _check_condition(node: Node, given: Placeholders, what: str) -> None:
    if isinstance(node, Logical):
        _check_condition(node.left, given, what)
        _check_condition(node.right, given, what)
    elif isinstance(node, Not):
        _check_condition(node.operand, given, what)
    elif isinstance(node, Comparison) and node.op not in ("=", "<>"):
        for side in (node.left, node.right):
            kind = _operand_type(side, given)
            if kind is not None and kind not in SCALARS:
                raise _refuse(what, node.op, kind)
    elif isinstance(node, Between):
        low, high = node.low, node.high
        if isinstance(low, ValueRef) and isinstance(high, ValueRef):
            order = compare(given.values[low.name], given.values[high.name])
            if order is not None and order > 0:
                raise InvalidExpression(
                    f"Invalid {what}: The BETWEEN operator requires upper bound to be greater"
                    " than or equal to lower bound"
                )
    elif isinstance(node, Function):
        if node.name.startswith("attribute_") and not isinstance(node.args[0], Path):
            raise InvalidExpression(
                f"Invalid {what}: Operator or function requires a document path;"
                f" operator or function: {node.name}"
            )
        if node.name == "begins_with":
            kind = _operand_type(node.args[1], given)
            if kind is not None and kind not in ("S", "B"):
                raise _refuse(what, "begins_with", kind)
        if node.name == "attribute_type":
            kind = _operand_type(node.args[1], given)
            value = given.values[node.args[1].name] if isinstance(node.args[1], ValueRef) else {}
            if kind != "S" or value["S"] not in _TYPE_NAMES:
                raise InvalidExpression(
                    f"Invalid {what}: Invalid attribute type name found; type: {value}"
                )


def _check_update(update: Update, given: Placeholders) -> None:
    for _, value in update.add:
        kind = type_of(given.values[value.name])
        if kind != "N" and kind not in SETS:
            raise _refuse("UpdateExpression", "ADD", kind)
    for _, value in update.delete:
        kind = type_of(given.values[value.name])
        if kind not in SETS:
            raise _refuse("UpdateExpression", "DELETE", kind)
    for _, term in update.set:
        if isinstance(term, Arithmetic):
            for side in (term.left, term.right):
                side_kind = _operand_type(side, given)
                if side_kind is not None and side_kind != "N":
                    raise _refuse("UpdateExpression", term.op, side_kind)


def update_targets(update: Update, names: Mapping[str, str]) -> list[Concrete]:
    """Every path an update writes, with placeholders resolved; two may not overlap."""
    paths = [p for p, _ in update.set] + list(update.remove)
    paths += [p for p, _ in update.add] + [p for p, _ in update.delete]
    targets = [concrete(p, names) for p in paths]
    for i, one in enumerate(targets):
        for other in targets[i + 1 :]:
            if one[: len(other)] == other or other[: len(one)] == one:
                raise InvalidExpression(
                    "Invalid UpdateExpression: Two document paths overlap with each other; must"
                    " remove or rewrite one of these paths; path one:"
                    f" [{_show(one)}], path two: [{_show(other)}]"
                )
    return targets


def _show(path: Concrete) -> str:
    return ", ".join(f"[{e}]" if isinstance(e, int) else e for e in path)


# Reading an item -----------------------------------------------------------------------------
def concrete(path: Path, names: Mapping[str, str]) -> Concrete:
    return tuple(names[e] if isinstance(e, str) and e.startswith("#") else e for e in path.elements)


def lookup(item: Mapping[str, AttributeValue], path: Concrete) -> AttributeValue | None:
    value: AttributeValue | None = {"M": item}
    for element in path:
        if value is None:
            return None
        if isinstance(element, int):
            items = value.get("L")
            value = items[element] if items is not None and element < len(items) else None
        else:
            members = value.get("M")
            value = members.get(element) if members is not None else None
    return value


def operand(
    node: Node, item: Mapping[str, AttributeValue], given: Placeholders
) -> AttributeValue | None:
    if isinstance(node, ValueRef):
        return given.values[node.name]
    if isinstance(node, Path):
        return lookup(item, concrete(node, given.names))
    if isinstance(node, Function) and node.name == "size":
        value = operand(node.args[0], item, given)
        if value is None:
            return None
        kind, data = next(iter(value.items()))
        if kind in ("N", "BOOL", "NULL"):
            return None
        return {"N": str(len(data))}
    raise InvalidExpression(f"Unsupported operand {node!r}")


def holds(node: Node, item: Mapping[str, AttributeValue], given: Placeholders) -> bool:
    """Whether a condition (or filter) is true of an item ({} when the item does not exist)."""
    if isinstance(node, Logical):
        if node.op == "AND":
            return holds(node.left, item, given) and holds(node.right, item, given)
        return holds(node.left, item, given) or holds(node.right, item, given)
    if isinstance(node, Not):
        return not holds(node.operand, item, given)
    if isinstance(node, Comparison):
        return _compares(node.op, operand(node.left, item, given), operand(node.right, item, given))
    if isinstance(node, Between):
        subject = operand(node.subject, item, given)
        low, high = operand(node.low, item, given), operand(node.high, item, given)
        return _compares(">=", subject, low) and _compares("<=", subject, high)
    if isinstance(node, In):
        subject = operand(node.subject, item, given)
        return any(_compares("=", subject, operand(o, item, given)) for o in node.options)
    if isinstance(node, Function):
        return _function(node, item, given)
    raise InvalidExpression(f"Not a condition: {node!r}")


def _compares(op: str, left: AttributeValue | None, right: AttributeValue | None) -> bool:
    assert op in COMPARATORS
    if left is None or right is None:
        return op == "<>"
    if op == "=":
        return equal(left, right)
    if op == "<>":
        return not equal(left, right)
    order = compare(left, right)
    if order is None:
        return False
    return {"<": order < 0, "<=": order <= 0, ">": order > 0, ">=": order >= 0}[op]


def _function(node: Function, item: Mapping[str, AttributeValue], given: Placeholders) -> bool:
    first = operand(node.args[0], item, given)
    if node.name == "attribute_exists":
        return first is not None
    if node.name == "attribute_not_exists":
        return first is None
    second = operand(node.args[1], item, given)
    if first is None or second is None:
        return False
    if node.name == "attribute_type":
        return type_of(first) == second.get("S")
    kind, data = next(iter(first.items()))
    other_kind, other = next(iter(second.items()))
    if node.name == "begins_with":
        return kind == other_kind and kind in ("S", "B") and bool(data.startswith(other))
    # contains: a substring, a member of a set, or an element of a list
    if kind in ("S", "B"):
        return kind == other_kind and other in data
    if kind in SETS:
        return SETS[kind] == other_kind and any(equal({other_kind: m}, second) for m in data)
    if kind == "L":
        return any(equal(element, second) for element in data)
    return False


# Updating an item ----------------------------------------------------------------------------
def updated(update: Update, item: Item, given: Placeholders) -> Item:
    """The item after an update expression. Every operand is read from the item as it was."""
    sets = [(concrete(p, given.names), _term(t, item, given)) for p, t in update.set]
    result = {name: clone(value) for name, value in item.items()}
    for path, value in sets:
        _assign(result, path, clone(value))
    for removed in update.remove:
        _remove(result, concrete(removed, given.names))
    for target, ref in update.add:
        path, value = concrete(target, given.names), given.values[ref.name]
        current = lookup(result, path)
        if current is None:
            _assign(result, path, clone(value))
        elif type_of(current) == "N" == type_of(value):
            _assign(result, path, add(current, value))
        elif type_of(current) == type_of(value) in SETS:
            kind = type_of(value)
            merged = list(current[kind]) + [m for m in value[kind] if m not in current[kind]]
            _assign(result, path, {kind: merged})
        else:
            raise EvaluationError(_WRONG_TYPE)
    for target, ref in update.delete:
        path, value = concrete(target, given.names), given.values[ref.name]
        current = lookup(result, path)
        if current is None:
            continue
        kind = type_of(value)
        if type_of(current) != kind:
            raise EvaluationError(_WRONG_TYPE)
        gone = [{kind: d} for d in value[kind]]
        left = [m for m in current[kind] if not any(equal({kind: m}, d) for d in gone)]
        if left:
            _assign(result, path, {kind: left})
        else:
            _remove(result, path)
    return result


def _term(node: Node, item: Item, given: Placeholders) -> AttributeValue:
    if isinstance(node, Arithmetic):
        left, right = _term(node.left, item, given), _term(node.right, item, given)
        if type_of(left) != "N" or type_of(right) != "N":
            raise EvaluationError(_WRONG_TYPE)
        return add(left, right, 1 if node.op == "+" else -1)
    if isinstance(node, Function) and node.name == "if_not_exists":
        subject = node.args[0]
        assert isinstance(subject, Path)
        current = lookup(item, concrete(subject, given.names))
        return current if current is not None else _term(node.args[1], item, given)
    if isinstance(node, Function) and node.name == "list_append":
        first, second = (_term(a, item, given) for a in node.args)
        if type_of(first) != "L" or type_of(second) != "L":
            raise EvaluationError(_WRONG_TYPE)
        return {"L": [*first["L"], *second["L"]]}
    value = operand(node, item, given)
    if value is None:
        raise EvaluationError(_MISSING)
    return value


def _parent(item: Item, path: Concrete) -> AttributeValue:
    parent = lookup(item, path[:-1]) if len(path) > 1 else {"M": item}
    last = path[-1]
    if parent is None or type_of(parent) != ("L" if isinstance(last, int) else "M"):
        raise EvaluationError(_BAD_PATH)
    return parent


def _assign(item: Item, path: Concrete, value: AttributeValue) -> None:
    parent, last = _parent(item, path), path[-1]
    if isinstance(last, int):
        elements = parent["L"]
        if last < len(elements):
            elements[last] = value
        else:
            elements.append(value)  # past the end: DynamoDB appends
    else:
        parent["M"][last] = value


def _remove(item: Item, path: Concrete) -> None:
    parent, last = _parent(item, path), path[-1]
    if isinstance(last, int):
        if last < len(parent["L"]):
            del parent["L"][last]
    else:
        parent["M"].pop(last, None)
