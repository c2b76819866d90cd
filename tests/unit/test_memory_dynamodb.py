"""The in-memory twin on its own: what DynamoDB does that the contract suite does not reach
through the adapters (and where moto is known to differ from DynamoDB), and the fault
schedule's mechanics."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
)

from forge.store.memory import FaultKind, Faults, MemoryDynamoDB
from forge.store.memory.expressions import ExpressionError, parse_condition, parse_update

TABLE = "t"


def twin(faults: Faults | None = None, **options: Any) -> MemoryDynamoDB:
    db = MemoryDynamoDB(faults=faults, **options)
    db.create_table(
        TableName=TABLE,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "g", "AttributeType": "S"},
            {"AttributeName": "at", "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-g",
                "KeySchema": [
                    {"AttributeName": "g", "KeyType": "HASH"},
                    {"AttributeName": "at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return db


def key(pk: str, sk: str = "x") -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def code(call: Any, **params: Any) -> str:
    with pytest.raises(ClientError) as raised:
        call(**params)
    return str(raised.value.response["Error"]["Code"])


# Expressions --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    ["a = ", "a == :v", "(a = :v", "a = :v)", "foo(a)", "a BETWEEN :x", "a IN ()", "NOT", ""],
)
def test_malformed_conditions_are_refused(text: str) -> None:
    with pytest.raises(ExpressionError):
        parse_condition(text)


@pytest.mark.parametrize(
    "text", ["SET a = :v SET b = :v", "ADD a b", "a = :v", "SET a :v", "REMOVE", "SET a = :v,"]
)
def test_malformed_updates_are_refused(text: str) -> None:
    with pytest.raises(ExpressionError):
        parse_update(text)


def test_not_binds_tighter_than_and_which_binds_tighter_than_or() -> None:
    db = twin()
    db.put_item(TableName=TABLE, Item={**key("p"), "a": {"N": "1"}, "b": {"N": "2"}})
    values = {":one": {"N": "1"}, ":two": {"N": "2"}}

    def holds(condition: str) -> bool:
        try:
            db.put_item(
                TableName=TABLE,
                Item={**key("p"), "a": {"N": "1"}, "b": {"N": "2"}},
                ConditionExpression=condition,
                ExpressionAttributeValues={k: v for k, v in values.items() if k in condition},
            )
            return True
        except ClientError:
            return False

    assert holds("a = :two OR a = :one AND b = :two")
    assert not holds("(a = :two OR a = :one) AND b = :one")
    assert holds("NOT a = :two AND b = :two")
    assert not holds("NOT (a = :one AND b = :two)")
    assert holds("a < b AND size(pk) = :one")
    assert not holds("contains(pk, :one)")  # a string does not contain a number
    assert holds("a IN (:two, :one) AND b BETWEEN :one AND :two")


def test_comparisons_across_types_are_false_not_errors() -> None:
    db = twin()
    db.put_item(TableName=TABLE, Item={**key("p"), "s": {"S": "10"}, "n": {"N": "9"}})
    cases = [
        ("s > :n", {":n": {"N": "9"}}),
        ("s < :n", {":n": {"N": "9"}}),
        ("n = :s", {":s": {"S": "9"}}),
        ("absent >= :n", {":n": {"N": "9"}}),
        ("s <> :s", {":s": {"S": "10"}}),
    ]
    for condition, values in cases:
        refused = code(
            db.put_item,
            TableName=TABLE,
            Item=key("p"),
            ConditionExpression=condition,
            ExpressionAttributeValues=values,
        )
        assert refused == "ConditionalCheckFailedException", condition


def test_numbers_are_exact_and_canonical() -> None:
    db = twin()
    db.put_item(TableName=TABLE, Item={**key("n"), "v": {"N": "0100.500"}, "z": {"N": "-0"}})
    item = db.get_item(TableName=TABLE, Key=key("n"))["Item"]
    assert (item["v"], item["z"]) == ({"N": "100.5"}, {"N": "0"})
    big = "9" * 38
    db.update_item(
        TableName=TABLE,
        Key=key("n"),
        UpdateExpression="SET v = :big",
        ExpressionAttributeValues={":big": {"N": big}},
    )
    assert (
        code(
            db.update_item,
            TableName=TABLE,
            Key=key("n"),
            UpdateExpression="ADD v :tiny",
            ExpressionAttributeValues={":tiny": {"N": "0.1"}},  # would need 39 digits
        )
        == "ValidationException"
    )
    assert db.get_item(TableName=TABLE, Key=key("n"))["Item"]["v"] == {"N": big}
    with pytest.raises(ClientError):
        db.put_item(TableName=TABLE, Item={**key("n"), "v": {"N": "NaN"}})


def test_key_and_index_values_are_checked_on_write() -> None:
    db = twin()
    assert code(db.put_item, TableName=TABLE, Item={"pk": {"S": "p"}}) == "ValidationException"
    assert code(db.put_item, TableName=TABLE, Item=key("")) == "ValidationException"
    assert code(db.put_item, TableName=TABLE, Item={**key("p"), "g": {"N": "1"}}) == (
        "ValidationException"  # moto accepts an index key of the wrong type; DynamoDB does not
    )
    too_big = {**key("p"), "blob": {"S": "x" * (400 * 1024)}}
    assert code(db.put_item, TableName=TABLE, Item=too_big) == "ValidationException"
    assert "Item" not in db.get_item(TableName=TABLE, Key=key("p"))


def test_botocore_validates_parameters_first() -> None:
    db = twin()
    with pytest.raises(ParamValidationError):
        db.get_item(TableName=TABLE, Key=key("p"), Bogus=True)
    with pytest.raises(ParamValidationError):
        db.put_item(TableName=TABLE, Item={**key("p"), "n": {"N": 1}})
    with pytest.raises(NotImplementedError):
        db.get_item(TableName=TABLE, Key=key("p"), ProjectionExpression="pk")
    with pytest.raises(db.exceptions.ResourceNotFoundException):
        db.get_item(TableName="nope", Key=key("p"))


# Queries, pages, indexes -------------------------------------------------------------------
def test_limit_stops_with_a_last_key_even_when_nothing_follows() -> None:
    db = twin()
    for sk in "abc":
        db.put_item(TableName=TABLE, Item=key("p", sk))
    page = db.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "p"}},
        Limit=3,
    )
    # DynamoDB's documented behaviour (moto returns no LastEvaluatedKey here).
    assert page["LastEvaluatedKey"] == key("p", "c") and page["Count"] == 3
    rest = db.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "p"}},
        ExclusiveStartKey=page["LastEvaluatedKey"],
    )
    assert rest["Items"] == [] and "LastEvaluatedKey" not in rest


def test_a_small_page_size_makes_queries_paginate() -> None:
    db = twin(max_page_bytes=64)
    for n in range(10):
        db.put_item(TableName=TABLE, Item={**key("p", f"{n:02d}"), "pad": {"S": "x" * 20}})
    pages, request = (
        0,
        {
            "TableName": TABLE,
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": {"S": "p"}},
        },
    )
    seen: list[str] = []
    while True:
        page = db.query(**request)
        pages += 1
        seen += [i["sk"]["S"] for i in page["Items"]]
        if "LastEvaluatedKey" not in page:
            break
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    assert seen == [f"{n:02d}" for n in range(10)] and pages > 3


def test_a_start_key_outside_the_query_is_refused() -> None:
    db = twin()
    assert (
        code(
            db.query,
            TableName=TABLE,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "p"}},
            ExclusiveStartKey=key("q"),
        )
        == "ValidationException"
    )


def test_a_keys_only_index_projects_keys_and_a_sparse_one_skips_items() -> None:
    db = twin()
    db.put_item(
        TableName=TABLE, Item={**key("a"), "g": {"S": "G"}, "at": {"N": "2"}, "x": {"S": "1"}}
    )
    db.put_item(TableName=TABLE, Item={**key("b"), "g": {"S": "G"}, "x": {"S": "2"}})  # no `at`
    page = db.query(
        TableName=TABLE,
        IndexName="by-g",
        KeyConditionExpression="g = :g",
        ExpressionAttributeValues={":g": {"S": "G"}},
    )
    assert page["Items"] == [{**key("a"), "g": {"S": "G"}, "at": {"N": "2"}}]


def test_key_conditions_dynamodb_refuses() -> None:
    db = twin()
    for condition in (
        "sk = :p",
        "pk = :p OR sk = :p",
        "pk = :p AND sk = :p AND sk = :p",
        "pk < :p",
        "pk = :p AND other = :p",
    ):
        assert (
            code(
                db.query,
                TableName=TABLE,
                KeyConditionExpression=condition,
                ExpressionAttributeValues={":p": {"S": "p"}},
            )
            == "ValidationException"
        ), condition


# Writes, streams, tokens -------------------------------------------------------------------
def test_stream_records_follow_every_change() -> None:
    db = twin()
    db.put_item(TableName=TABLE, Item={**key("s"), "v": {"N": "1"}})
    db.put_item(TableName=TABLE, Item={**key("s"), "v": {"N": "1"}})  # no change: no record
    db.update_item(
        TableName=TABLE,
        Key=key("s"),
        UpdateExpression="SET v = :v",
        ExpressionAttributeValues={":v": {"N": "2"}},
    )
    db.delete_item(TableName=TABLE, Key=key("s"))
    records = db.stream_records(TABLE)
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    assert records[1]["dynamodb"]["OldImage"]["v"] == {"N": "1"}
    assert records[1]["dynamodb"]["NewImage"]["v"] == {"N": "2"}


def test_a_client_request_token_makes_a_retried_transaction_a_no_op() -> None:
    now = [0.0]
    db = twin(clock=lambda: now[0])
    items = [
        {
            "Update": {
                "TableName": TABLE,
                "Key": key("c"),
                "UpdateExpression": "ADD n :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        }
    ]
    for _ in range(3):
        db.transact_write_items(TransactItems=items, ClientRequestToken="tok-1")
    assert db.get_item(TableName=TABLE, Key=key("c"))["Item"]["n"] == {"N": "1"}
    other = [{**items[0], "Update": {**items[0]["Update"], "Key": key("d")}}]
    assert (
        code(db.transact_write_items, TransactItems=other, ClientRequestToken="tok-1")
        == "IdempotentParameterMismatchException"
    )
    now[0] = 601.0  # ten minutes later the token is forgotten
    db.transact_write_items(TransactItems=items, ClientRequestToken="tok-1")
    assert db.get_item(TableName=TABLE, Key=key("c"))["Item"]["n"] == {"N": "2"}


def test_a_transaction_update_that_cannot_apply_is_a_validation_error_reason() -> None:
    db = twin()
    with pytest.raises(ClientError) as raised:
        db.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": TABLE, "Item": key("v1")}},
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": key("v2"),
                        "UpdateExpression": "SET n = n + :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
            ]
        )
    reasons = raised.value.response["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["None", "ValidationError"]
    assert "Item" not in db.get_item(TableName=TABLE, Key=key("v1"))


def test_batch_writes() -> None:
    db = twin()
    db.batch_write_item(
        RequestItems={TABLE: [{"PutRequest": {"Item": key(f"b{n}")}} for n in range(3)]}
    )
    db.batch_write_item(RequestItems={TABLE: [{"DeleteRequest": {"Key": key("b1")}}]})
    assert [i["pk"]["S"] for i in db.table_items(TABLE)] == ["b0", "b2"]


def test_one_lock_makes_concurrent_updates_exact() -> None:
    db = twin()

    def bump(_: int) -> None:
        db.update_item(
            TableName=TABLE,
            Key=key("counter"),
            UpdateExpression="ADD n :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(bump, range(400)))
    assert db.get_item(TableName=TABLE, Key=key("counter"))["Item"]["n"] == {"N": "400"}


# Faults -----------------------------------------------------------------------------------
def test_each_fault_kind_surfaces_as_botocore_raises_it() -> None:
    faults = Faults()
    db = twin(faults)
    put = {"TableName": TABLE, "Item": key("f")}
    faults.inject(FaultKind.UNREACHABLE)
    with pytest.raises(EndpointConnectionError):
        db.put_item(**put)
    faults.inject(FaultKind.TIMEOUT)
    with pytest.raises(ConnectTimeoutError):
        db.put_item(**put)
    faults.inject(FaultKind.THROTTLED)
    assert code(db.put_item, **put) == "ProvisionedThroughputExceededException"
    faults.inject(FaultKind.INTERNAL_ERROR)
    assert code(db.put_item, **put) == "InternalServerError"
    faults.inject(FaultKind.CONFLICT)
    assert code(db.put_item, **put) == "TransactionConflictException"
    assert db.table_items(TABLE) == []  # none of those applied
    faults.inject(FaultKind.LOST_RESPONSE)
    with pytest.raises(ReadTimeoutError):
        db.put_item(**put)
    assert db.table_items(TABLE) == [key("f")]  # applied, answer lost
    assert [i.kind for i in faults.log] == [
        FaultKind.UNREACHABLE,
        FaultKind.TIMEOUT,
        FaultKind.THROTTLED,
        FaultKind.INTERNAL_ERROR,
        FaultKind.CONFLICT,
        FaultKind.LOST_RESPONSE,
    ]


def test_rules_match_by_operation_and_key_and_count() -> None:
    faults = Faults()
    db = twin(faults)
    faults.inject(
        FaultKind.CONFLICT, operation="TransactWriteItems", key={"pk": "b"}, skip=1, times=2
    )
    items = [
        {"Put": {"TableName": TABLE, "Item": key("a")}},
        {"Put": {"TableName": TABLE, "Item": key("b")}},
    ]
    db.transact_write_items(TransactItems=items)  # skipped
    reasons = []
    for _ in range(3):
        try:
            db.transact_write_items(TransactItems=items)
        except ClientError as exc:
            reasons.append([r["Code"] for r in exc.response["CancellationReasons"]])
    assert reasons == [["None", "TransactionConflict"]] * 2


def test_latency_goes_through_the_injected_sleep_outside_the_lock() -> None:
    slept: list[float] = []
    lock_free: list[bool] = []

    db: MemoryDynamoDB

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        lock_free.append(db._lock.acquire(blocking=False))
        db._lock.release()

    db = twin()
    db.faults = Faults(latency=0.25, sleep=sleep)
    db.get_item(TableName=TABLE, Key=key("x"))
    db.put_item(TableName=TABLE, Item=key("x"))
    assert slept == [0.25, 0.25] and all(lock_free)


def test_rates_are_drawn_from_the_seed() -> None:
    def run(seed: int) -> list[Any]:
        faults = Faults(seed=seed, rates={FaultKind.THROTTLED: 0.5})
        db = twin()
        db.faults = faults
        for n in range(40):
            with contextlib.suppress(ClientError):
                db.put_item(TableName=TABLE, Item=key(str(n)))
        return [i.call for i in faults.log]

    assert run(1) == run(1) != run(2)
    assert 5 < len(run(1)) < 35


def test_with_overlap_a_transaction_in_flight_conflicts_with_the_next() -> None:
    in_flight, release = threading.Event(), threading.Event()

    def sleep(_: float) -> None:
        if not in_flight.is_set():  # the first write waits "on the network" until released
            in_flight.set()
            release.wait(5)

    db = twin()
    db.faults = Faults(overlap=True, latency=0.001, sleep=sleep)
    write = [{"Put": {"TableName": TABLE, "Item": key("o")}}]
    first = threading.Thread(target=db.transact_write_items, kwargs={"TransactItems": write})
    first.start()
    assert in_flight.wait(5)
    with pytest.raises(ClientError) as raised:
        db.transact_write_items(
            TransactItems=[*write, {"Put": {"TableName": TABLE, "Item": key("p")}}]
        )
    assert [r["Code"] for r in raised.value.response["CancellationReasons"]] == [
        "TransactionConflict",
        "None",
    ]
    assert code(db.put_item, TableName=TABLE, Item=key("o")) == "TransactionConflictException"
    release.set()
    first.join(5)
    assert db.table_items(TABLE) == [key("o")]
    db.put_item(TableName=TABLE, Item=key("o"))  # nothing in flight any more
