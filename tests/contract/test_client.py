"""The DynamoDB client itself, on both backends: the semantics the adapters rely on, asked
directly (conditions, transactions and their cancellation reasons, update expressions, key
conditions, indexes, pages) and the errors with their codes and shapes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.contract.conftest import Backend


def key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def n(value: int | str) -> dict[str, str]:
    return {"N": str(value)}


def plain(value: Any) -> Any:
    """A response without its metadata, numbers compared by value (DynamoDB normalises them,
    moto keeps the text it was given)."""
    if isinstance(value, dict):
        if set(value) == {"N"} and isinstance(value["N"], str):
            return {"N": Decimal(value["N"])}
        return {k: plain(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def error(call: Any, **params: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as raised:
        call(**params)
    return plain(raised.value.response)  # type: ignore[no-any-return]


def test_conditional_writes_and_their_errors(backend: Backend) -> None:
    db, table = backend.client, backend.budget_table
    db.put_item(TableName=table, Item={**key("a", "1"), "n": n("1.50"), "s": {"S": "x"}})
    new_only = {"ConditionExpression": "attribute_not_exists(pk)"}
    failed = error(db.put_item, TableName=table, Item=key("a", "1"), **new_only)
    assert failed == {
        "Error": {
            "Code": "ConditionalCheckFailedException",
            "Message": "The conditional request failed",
        },
        "message": "The conditional request failed",
    }
    with_old = error(
        db.put_item,
        TableName=table,
        Item=key("a", "1"),
        ReturnValuesOnConditionCheckFailure="ALL_OLD",
        **new_only,
    )
    assert with_old["Item"] == plain({**key("a", "1"), "n": n("1.5"), "s": {"S": "x"}})
    checks = [
        ("n >= :v", {":v": n(1)}, True),
        ("n > :v", {":v": n("1.5")}, False),
        ("n BETWEEN :a AND :b", {":a": n(1), ":b": n(2)}, True),
        ("s IN (:a, :b)", {":a": {"S": "y"}, ":b": {"S": "x"}}, True),
        ("begins_with(pk, :p) AND NOT attribute_exists(gone)", {":p": {"S": "a"}}, True),
        ("(s = :x OR s = :y) AND n <> :v", {":x": {"S": "q"}, ":y": {"S": "x"}, ":v": n(2)}, True),
        ("attribute_exists(gone) OR s = :v", {":v": {"S": "y"}}, False),
        ("gone <> :v", {":v": n(1)}, True),
        ("gone = :v OR gone < :v OR gone >= :v", {":v": n(1)}, False),
    ]
    for condition, values, holds in checks:
        params = {
            "TableName": table,
            "Key": key("a", "1"),
            "UpdateExpression": "SET touched = :t",
            "ConditionExpression": condition,
            "ExpressionAttributeValues": {**values, ":t": {"BOOL": True}},
        }
        if holds:
            db.update_item(**params)
        else:
            assert (
                error(db.update_item, **params)["Error"]["Code"]
                == "ConditionalCheckFailedException"
            )
    db.delete_item(
        TableName=table,
        Key=key("a", "1"),
        ConditionExpression="touched = :t",
        ExpressionAttributeValues={":t": {"BOOL": True}},
    )
    assert "Item" not in db.get_item(TableName=table, Key=key("a", "1"))


def test_update_expressions(backend: Backend) -> None:
    db, table = backend.client, backend.budget_table
    first = db.update_item(
        TableName=table,
        Key=key("u", "1"),
        UpdateExpression="SET a = if_not_exists(a, :zero) + :one, m = :m ADD c :one, tags :tags",
        ExpressionAttributeValues={
            ":zero": n(0),
            ":one": n(1),
            ":m": {"M": {"k": n(1), "l": {"L": [{"S": "x"}]}}},
            ":tags": {"SS": ["b", "a"]},
        },
        ReturnValues="ALL_NEW",
    )
    assert plain(first)["Attributes"]["a"] == {"N": Decimal(1)}
    second = db.update_item(
        TableName=table,
        Key=key("u", "1"),
        UpdateExpression="SET a = a - :half, #m.#k = #m.#k + :one, #m.l[1] = :y"
        " REMOVE gone ADD c :one, tags :more",
        ExpressionAttributeNames={"#m": "m", "#k": "k"},
        ExpressionAttributeValues={
            ":half": n("0.5"),
            ":one": n(1),
            ":y": {"S": "y"},
            ":more": {"SS": ["c"]},
        },
        ReturnValues="UPDATED_NEW",
    )
    updated = plain(second)["Attributes"]
    assert updated["a"] == {"N": Decimal("0.5")}
    assert updated["c"] == {"N": Decimal(2)}
    assert sorted(updated["tags"]["SS"]) == ["a", "b", "c"]
    assert updated["m"]["M"]["k"] == {"N": Decimal(2)}
    assert updated["m"]["M"]["l"] == {"L": [{"S": "x"}, {"S": "y"}]}
    exact = db.update_item(
        TableName=table,
        Key=key("u", "1"),
        UpdateExpression="ADD big :big",
        ExpressionAttributeValues={":big": n("0.1")},
        ReturnValues="UPDATED_NEW",
    )
    again = db.update_item(
        TableName=table,
        Key=key("u", "1"),
        UpdateExpression="ADD big :big",
        ExpressionAttributeValues={":big": n("0.2")},
        ReturnValues="UPDATED_NEW",
    )
    assert plain(exact)["Attributes"]["big"] == {"N": Decimal("0.1")}
    assert plain(again)["Attributes"]["big"] == {"N": Decimal("0.3")}  # exact, never a float
    swapped = db.update_item(
        TableName=table,
        Key=key("u", "1"),
        UpdateExpression="SET a = c, c = a",  # operands are read from the item as it was
        ReturnValues="UPDATED_NEW",
    )
    assert plain(swapped)["Attributes"] == {"a": {"N": Decimal(2)}, "c": {"N": Decimal("0.5")}}
    missing = error(
        db.update_item,
        TableName=table,
        Key=key("u", "1"),
        UpdateExpression="SET z = nothing + :one",
        ExpressionAttributeValues={":one": n(1)},
    )
    assert missing["Error"]["Code"] == "ValidationException"


@pytest.mark.parametrize(
    "params",
    [
        {"UpdateExpression": "SET status = :v", "ExpressionAttributeValues": {":v": n(1)}},
        {"UpdateExpression": "SET a = :v"},
        {"UpdateExpression": "SET a = :v", "ExpressionAttributeValues": {":v": n(1), ":w": n(2)}},
        {
            "UpdateExpression": "SET a = :v",
            "ExpressionAttributeValues": {":v": n(1)},
            "ExpressionAttributeNames": {"#unused": "x"},
        },
        {"UpdateExpression": "SET pk = :v", "ExpressionAttributeValues": {":v": {"S": "x"}}},
        {"UpdateExpression": "SET a = :v ADD a :v", "ExpressionAttributeValues": {":v": n(1)}},
        {
            "UpdateExpression": "SET a = :v",
            "ExpressionAttributeValues": {":v": n(1)},
            "Key": {"pk": {"S": "x"}},
        },
        {"UpdateExpression": "SET a = = :v", "ExpressionAttributeValues": {":v": n(1)}},
    ],
    ids=[
        "reserved",
        "undefined",
        "unused-value",
        "unused-name",
        "key",
        "overlap",
        "schema",
        "syntax",
    ],
)
def test_requests_dynamodb_refuses(backend: Backend, params: dict[str, Any]) -> None:
    db = backend.client
    request = {"TableName": backend.budget_table, "Key": key("v", "1"), **params}
    assert error(db.update_item, **request)["Error"]["Code"] == "ValidationException"
    assert "Item" not in db.get_item(TableName=backend.budget_table, Key=key("v", "1"))


def test_transactions_are_all_or_nothing_with_one_reason_per_item(backend: Backend) -> None:
    db, table = backend.client, backend.budget_table
    db.put_item(TableName=table, Item={**key("t", "1"), "n": n(5)})
    items = [
        {"Put": {"TableName": table, "Item": key("t", "2")}},
        {
            "Update": {
                "TableName": table,
                "Key": key("t", "1"),
                "UpdateExpression": "SET n = n - :v",
                "ConditionExpression": "n >= :v",
                "ExpressionAttributeValues": {":v": n(6)},
            }
        },
        {
            "ConditionCheck": {
                "TableName": table,
                "Key": key("t", "3"),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        },
        {
            "Delete": {
                "TableName": table,
                "Key": key("t", "4"),
                "ConditionExpression": "attribute_exists(pk)",
            }
        },
    ]
    cancelled = error(db.transact_write_items, TransactItems=items)
    assert cancelled["Error"]["Code"] == "TransactionCanceledException"
    assert cancelled["CancellationReasons"] == [
        {"Code": "None"},
        {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"},
        {"Code": "None"},
        {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"},
    ]
    assert "Item" not in db.get_item(TableName=table, Key=key("t", "2"))
    items[1]["Update"]["ExpressionAttributeValues"] = {":v": n(5)}
    del items[3]
    db.transact_write_items(TransactItems=items)
    assert plain(db.get_item(TableName=table, Key=key("t", "1")))["Item"]["n"] == {"N": Decimal(0)}
    assert "Item" in db.get_item(TableName=table, Key=key("t", "2"))

    twice = [{"Put": {"TableName": table, "Item": key("t", "9")}}] * 2
    assert (
        error(db.transact_write_items, TransactItems=twice)["Error"]["Code"]
        == "ValidationException"
    )
    many = [{"Put": {"TableName": table, "Item": key("t", f"m{i}")}} for i in range(101)]
    assert (
        error(db.transact_write_items, TransactItems=many)["Error"]["Code"] == "ValidationException"
    )
    assert "Item" not in db.get_item(TableName=table, Key=key("t", "m0"))
    assert db.transact_write_items(TransactItems=many[:100]) is not None


def test_key_conditions_directions_and_pages(backend: Backend) -> None:
    db, table = backend.client, backend.budget_table
    sks = ["a", "a#1", "a#2", "a#3", "b", "b#1", "c"]
    for sk in sks:
        db.put_item(TableName=table, Item={**key("q", sk), "kind": {"S": sk[0]}})
    db.put_item(TableName=table, Item=key("q2", "a"))

    def query(condition: str, **extra: Any) -> list[str]:
        values = {":p": {"S": "q"}, ":x": {"S": "a#1"}, ":y": {"S": "b"}, ":pre": {"S": "a#"}}
        used = {k: v for k, v in values.items() if k in condition + str(extra)}
        out: list[str] = []
        request = {
            "TableName": table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": used,
            **extra,
        }
        while True:
            page = db.query(**request)
            out += [i["sk"]["S"] for i in page["Items"]]
            if "LastEvaluatedKey" not in page:
                return out
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    assert query("pk = :p") == sks
    assert query("pk = :p AND sk = :x") == ["a#1"]
    assert query("pk = :p AND sk < :x") == ["a"]
    assert query("pk = :p AND sk <= :x") == ["a", "a#1"]
    assert query("pk = :p AND sk > :y") == ["b#1", "c"]
    assert query("pk = :p AND sk >= :y") == ["b", "b#1", "c"]
    assert query("pk = :p AND sk BETWEEN :x AND :y") == ["a#1", "a#2", "a#3", "b"]
    assert query("pk = :p AND begins_with(sk, :pre)") == ["a#1", "a#2", "a#3"]
    assert query("pk = :p", ScanIndexForward=False) == sks[::-1]
    assert query("pk = :p", Limit=2) == sks
    assert query("pk = :p AND sk > :x", Limit=1, ScanIndexForward=False) == [
        "c",
        "b#1",
        "b",
        "a#3",
        "a#2",
    ]
    filtered = db.query(
        TableName=table,
        KeyConditionExpression="pk = :p",
        FilterExpression="kind = :k",
        ExpressionAttributeValues={":p": {"S": "q"}, ":k": {"S": "b"}},
        Limit=5,
    )
    assert (filtered["Count"], filtered["ScannedCount"]) == (1, 5)  # Limit counts items read
    assert filtered["LastEvaluatedKey"] == key("q", "b")


def test_a_sparse_index(backend: Backend) -> None:
    db, table = backend.client, backend.budget_table
    for i in range(6):
        item = {**key(f"h{i}", "HOLD"), "expires_at_epoch": n(100 + i)}
        if i % 2 == 0:
            item["pending_shard"] = {"S": "1"}
        db.put_item(TableName=table, Item=item)
    db.update_item(TableName=table, Key=key("h2", "HOLD"), UpdateExpression="REMOVE pending_shard")
    page = db.query(
        TableName=table,
        IndexName="pending-holds",
        KeyConditionExpression="pending_shard = :s AND expires_at_epoch < :now",
        ExpressionAttributeValues={":s": {"S": "1"}, ":now": n(105)},
    )
    assert [i["pk"]["S"] for i in page["Items"]] == ["h0", "h4"]
    paged = db.query(
        TableName=table,
        IndexName="pending-holds",
        KeyConditionExpression="pending_shard = :s",
        ExpressionAttributeValues={":s": {"S": "1"}},
        Limit=1,
    )
    assert set(paged["LastEvaluatedKey"]) == {"pk", "sk", "pending_shard", "expires_at_epoch"}
    rest = db.query(
        TableName=table,
        IndexName="pending-holds",
        KeyConditionExpression="pending_shard = :s",
        ExpressionAttributeValues={":s": {"S": "1"}},
        ExclusiveStartKey=paged["LastEvaluatedKey"],
    )
    assert [i["pk"]["S"] for i in rest["Items"]] == ["h4"]
    refused = error(
        db.query,
        TableName=table,
        IndexName="pending-holds",
        KeyConditionExpression="pending_shard = :s",
        ExpressionAttributeValues={":s": {"S": "1"}},
        ConsistentRead=True,
    )
    assert refused["Error"]["Code"] == "ValidationException"


def test_batch_get_and_errors_for_unknown_tables(backend: Backend) -> None:
    db, table = backend.client, backend.budget_table
    db.put_item(TableName=table, Item={**key("b", "1"), "v": n(1)})
    got = db.batch_get_item(
        RequestItems={table: {"Keys": [key("b", "1"), key("b", "2")], "ConsistentRead": True}}
    )
    assert plain(got["Responses"][table]) == [plain({**key("b", "1"), "v": n(1)})]
    assert not got.get("UnprocessedKeys")
    missing = error(db.get_item, TableName="no-such-table", Key=key("b", "1"))
    assert missing["Error"]["Code"] == "ResourceNotFoundException"
