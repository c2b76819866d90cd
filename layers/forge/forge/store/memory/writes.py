"""One item's write (Put, Update, Delete or ConditionCheck), checked as DynamoDB checks a request
before touching anything, then decided against the item as it is: the new item, or why not.
Single-item calls and transactions share it, so their semantics cannot drift apart."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from forge.store.memory import errors
from forge.store.memory.evaluate import (
    EvaluationError,
    InvalidExpression,
    Placeholders,
    check,
    holds,
    update_targets,
    updated,
)
from forge.store.memory.expressions import (
    ExpressionError,
    Parsed,
    Update,
    parse_condition,
    parse_update,
)
from forge.store.memory.tables import PrimaryKey, Table
from forge.store.memory.values import InvalidValue, Item, canonical, canonical_item, clone_item

CONDITION_FAILED = "The conditional request failed"
_LEGACY = ("Expected", "AttributeUpdates", "ConditionalOperator", "AttributesToGet")


@dataclass
class Write:
    table: Table
    key: PrimaryKey
    kind: str  # Put | Update | Delete | ConditionCheck
    key_item: Item
    given: Placeholders
    condition: Parsed | None = None
    update: Update | None = None
    item: Item | None = None  # what a Put writes
    old_on_failure: bool = False
    targets: list[tuple[str | int, ...]] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    old: Item | None
    new: Item | None  # the item after the write (None: absent)
    failure: dict[str, Any] | None = None  # a cancellation reason: why it cannot apply


def placeholders(
    params: Mapping[str, Any], expressions: list[tuple[str, Parsed]], operation: str
) -> Placeholders:
    """The request's ExpressionAttributeNames/Values, checked against its expressions as
    DynamoDB checks them: each defined, each used, none empty."""
    names = params.get("ExpressionAttributeNames")
    values = params.get("ExpressionAttributeValues")
    for label, given in (
        ("ExpressionAttributeNames", names),
        ("ExpressionAttributeValues", values),
    ):
        if given is None:
            continue
        if not expressions:
            raise errors.validation(
                f"{label} can only be specified when using expressions", operation
            )
        if not given:
            raise errors.validation(f"{label} must not be empty", operation)
    try:
        bound = Placeholders(
            dict(names or {}), {k: canonical(v) for k, v in (values or {}).items()}
        )
    except InvalidValue as exc:
        raise errors.validation(str(exc), operation) from None
    try:
        for what, parsed in expressions:
            check(parsed, bound, what)
    except InvalidExpression as exc:
        raise errors.validation(str(exc), operation) from None
    for label, given_keys, attr in (
        ("ExpressionAttributeNames", bound.names, "names"),
        ("ExpressionAttributeValues", bound.values, "values"),
    ):
        used = set().union(*(getattr(p, attr) for _, p in expressions))
        unused = sorted(set(given_keys) - used)
        if unused:
            raise errors.validation(
                f"Value provided in {label} unused in expressions: keys: {{{', '.join(unused)}}}",
                operation,
            )
    return bound


def parsed(text: str | None, what: str, operation: str) -> Parsed | None:
    if text is None:
        return None
    try:
        return parse_update(text) if what == "UpdateExpression" else parse_condition(text, what)
    except ExpressionError as exc:
        raise errors.validation(str(exc), operation) from None


def prepare(
    tables: Mapping[str, Table], kind: str, params: Mapping[str, Any], operation: str
) -> Write:
    """A write as DynamoDB validates it on arrival: table, key, expressions, placeholders."""
    for legacy in _LEGACY:
        if legacy in params:
            raise NotImplementedError(f"the memory twin does not model the legacy {legacy}")
    table = tables.get(params["TableName"])
    if table is None:
        raise errors.not_found(operation)
    condition = parsed(params.get("ConditionExpression"), "ConditionExpression", operation)
    update = parsed(params.get("UpdateExpression"), "UpdateExpression", operation)
    expressions = [("ConditionExpression", p) for p in [condition] if p is not None]
    expressions += [("UpdateExpression", p) for p in [update] if p is not None]
    given = placeholders(params, expressions, operation)
    try:
        if kind == "Put":
            item = canonical_item(params["Item"])
            key = table.check(item)
            key_item = table.key_item(item)
        else:
            item = None
            key_item = canonical_item(params["Key"])
            key = table.primary_key(key_item, exact=True)
        targets = update_targets(update.update, given.names) if update is not None else []
    except (InvalidValue, InvalidExpression) as exc:
        raise errors.validation(str(exc), operation) from None
    for target in targets:
        if target[0] in table.schema.names:
            raise errors.validation(
                "One or more parameter values were invalid: Cannot update attribute"
                f" {target[0]}. This attribute is part of the key",
                operation,
            )
    return Write(
        table=table,
        key=key,
        kind=kind,
        key_item=key_item,
        given=given,
        condition=condition,
        update=update.update if update is not None else None,
        item=item,
        old_on_failure=params.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD",
        targets=targets,
    )


def decide(write: Write) -> Outcome:
    """What the write would do to the item as it is now (nothing is changed here)."""
    old = write.table.items.get(write.key)
    if write.condition is not None and not holds(write.condition.condition, old or {}, write.given):
        reason: dict[str, Any] = {"Code": "ConditionalCheckFailed", "Message": CONDITION_FAILED}
        if write.old_on_failure and old is not None:
            reason["Item"] = old
        return Outcome(old, old, reason)
    if write.kind == "Put":
        return Outcome(old, write.item)
    if write.kind == "Delete":
        return Outcome(old, None)
    if write.kind == "ConditionCheck" or write.update is None:
        new = old if write.kind == "ConditionCheck" else (old or dict(write.key_item))
        return Outcome(old, new)
    try:
        new = updated(write.update, old or dict(write.key_item), write.given)
        write.table.check(new)
    except (EvaluationError, InvalidValue) as exc:
        return Outcome(old, old, {"Code": "ValidationError", "Message": str(exc)})
    return Outcome(old, new)


def raise_failure(outcome: Outcome, operation: str) -> None:
    """A single-item call's failure, as DynamoDB answers it."""
    reason = outcome.failure
    if reason is None:
        return
    error: ClientError
    if reason["Code"] == "ConditionalCheckFailed":
        error = errors.condition_failed(operation, reason.get("Item"))
    else:
        error = errors.validation(reason["Message"], operation)
    raise error


def returned(write: Write, outcome: Outcome, mode: str) -> dict[str, Any]:
    """What a write returns as Attributes, per ReturnValues."""
    old, new = outcome.old, outcome.new
    touched = {t[0] for t in write.targets}
    chosen: Item | None = None
    if mode == "ALL_OLD":
        chosen = old
    elif mode == "ALL_NEW":
        chosen = new
    elif mode == "UPDATED_OLD" and old is not None:
        chosen = {k: v for k, v in old.items() if k in touched}
    elif mode == "UPDATED_NEW" and new is not None:
        chosen = {k: v for k, v in new.items() if k in touched}
    return {"Attributes": clone_item(chosen)} if chosen else {}
