"""Idempotency-Key claims in the budget table (the IdempotencyStore port): one owner per key
at a time, whose lease others may take over once it runs out; its answer kept for replays."""

from __future__ import annotations

from botocore.exceptions import ClientError

from forge.domain.idempotency import REPLAY_TTL_SECONDS, IdempotencyRecord, StoredResponse
from forge.store.dynamo import schema
from forge.store.dynamo.base import NOT_EXISTS, DynamoTables, is_condition_failure, store_errors
from forge.store.dynamo.items import dump, to_item


class DynamoIdempotency(DynamoTables):
    def claim_idempotency(
        self, account_id: str, key: str, record: IdempotencyRecord, now: int
    ) -> IdempotencyRecord | None:
        """Claim a key (None), or return the record of whoever holds it."""
        item = {
            **schema.idempotency_key(account_id, key),
            **dump(record),
            "ttl": now + REPLAY_TTL_SECONDS,
        }
        with store_errors():
            try:
                self._db.put_item(
                    TableName=self._budget,
                    Item=to_item(item),
                    ConditionExpression=f"{NOT_EXISTS}"
                    " OR (#state = :running AND lease_until < :now)",
                    ExpressionAttributeNames={"#state": "state"},
                    ExpressionAttributeValues=to_item({":running": "in_progress", ":now": now}),
                )
                return None
            except ClientError as exc:
                if not is_condition_failure(exc):
                    raise
        return self.read_idempotency(account_id, key) or record

    def read_idempotency(self, account_id: str, key: str) -> IdempotencyRecord | None:
        item = self._get(schema.idempotency_key(account_id, key))
        return IdempotencyRecord.model_validate(item) if item else None

    def finish_idempotency(
        self, account_id: str, key: str, request_id: str, response: StoredResponse | None
    ) -> None:
        """Store the response for replays, or (None) release the claim for a clean retry."""
        key_item = to_item(schema.idempotency_key(account_id, key))
        with store_errors():
            try:
                if response is None:
                    self._db.delete_item(
                        TableName=self._budget,
                        Key=key_item,
                        ConditionExpression="request_id = :rid",
                        ExpressionAttributeValues=to_item({":rid": request_id}),
                    )
                else:
                    self._db.update_item(
                        TableName=self._budget,
                        Key=key_item,
                        UpdateExpression="SET #state = :done, #response = :response",
                        ConditionExpression="request_id = :rid",
                        ExpressionAttributeNames={"#state": "state", "#response": "response"},
                        ExpressionAttributeValues=to_item(
                            {":done": "done", ":response": dump(response), ":rid": request_id}
                        ),
                    )
            except ClientError as exc:
                if not is_condition_failure(exc):
                    raise
                # Our lease ran out and another request took the key over: leave it to it.
