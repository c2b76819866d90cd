"""The embedded emulator itself: atomic transactions with item-level rollback (no phantom
stream records), and one request at a time."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from forge_tools.emulator import Emulator, Resources


def stream_records(emulator: Emulator, table: str) -> list[dict]:
    dynamodb, streams = emulator.client("dynamodb"), emulator.client("dynamodbstreams")
    arn = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    return list(streams.get_records(ShardIterator=iterator)["Records"])


def test_a_cancelled_transaction_changes_nothing_and_streams_nothing(
    emulator: Emulator, aws_stack: Resources
) -> None:
    db = emulator.client("dynamodb")
    ledger, budget = aws_stack.tables["LedgerTable"], aws_stack.tables["BudgetTable"]
    db.put_item(TableName=budget, Item={"pk": {"S": "b"}, "sk": {"S": "1"}, "n": {"N": "5"}})
    db.put_item(TableName=budget, Item={"pk": {"S": "c"}, "sk": {"S": "1"}, "n": {"N": "5"}})
    db.put_item(TableName=ledger, Item={"pk": {"S": "kept"}, "sk": {"S": "1"}})
    before = stream_records(emulator, ledger)

    with pytest.raises(ClientError) as cancelled:
        db.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": ledger, "Item": {"pk": {"S": "new"}, "sk": {"S": "1"}}}},
                {
                    "Update": {
                        "TableName": budget,
                        "Key": {"pk": {"S": "b"}, "sk": {"S": "1"}},
                        "UpdateExpression": "SET n = :n",
                        "ExpressionAttributeValues": {":n": {"N": "6"}},
                    }
                },
                {"Delete": {"TableName": ledger, "Key": {"pk": {"S": "kept"}, "sk": {"S": "1"}}}},
                {
                    "ConditionCheck": {
                        "TableName": budget,
                        "Key": {"pk": {"S": "c"}, "sk": {"S": "1"}},
                        "ConditionExpression": "n = :seven",
                        "ExpressionAttributeValues": {":seven": {"N": "7"}},
                    }
                },
            ]
        )
    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException", (
        cancelled.value.response
    )

    assert "Item" not in db.get_item(TableName=ledger, Key={"pk": {"S": "new"}, "sk": {"S": "1"}})
    assert "Item" in db.get_item(TableName=ledger, Key={"pk": {"S": "kept"}, "sk": {"S": "1"}})
    kept = db.get_item(TableName=budget, Key={"pk": {"S": "b"}, "sk": {"S": "1"}})["Item"]
    assert kept["n"] == {"N": "5"}
    assert stream_records(emulator, ledger) == before  # no phantom records

    db.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": ledger, "Item": {"pk": {"S": "new"}, "sk": {"S": "1"}}}},
        ]
    )
    after = stream_records(emulator, ledger)
    assert len(after) == len(before) + 1
    assert after[-1]["dynamodb"]["Keys"]["pk"] == {"S": "new"}
