"""The twin's face: the low-level DynamoDB client API the adapters call, in memory.

`MemoryDynamoDB` takes and returns DynamoDB JSON exactly as a botocore client does, validates
parameters with botocore's own model, and raises botocore's errors with DynamoDB's codes and
shapes. One lock serialises every call: DynamoDB makes each item write and each transaction
atomic, and from outside a global lock is indistinguishable from that (only slower under
contention), so the twin can neither hide a race of ours nor invent one. For the same reason
two transactions never overlap here by themselves: `TransactionConflict` comes from the
`Faults` schedule (scripted, seeded, or, with `overlap`, from writes in flight at once).
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

from forge.store.memory import errors, reads
from forge.store.memory.faults import Call, Decision, FaultKind, Faults
from forge.store.memory.tables import Table
from forge.store.memory.values import InvalidValue, Item, canonical_item, clone_item
from forge.store.memory.writes import Outcome, Write, decide, prepare, raise_failure, returned

_MAX_TRANSACTION_ITEMS = 100
_MAX_BATCH_WRITES = 25
_TOKEN_SECONDS = 600  # a ClientRequestToken is remembered for 10 minutes
_ONE_OF = ("ConditionCheck", "Put", "Update", "Delete")
_BEFORE = {
    FaultKind.UNREACHABLE: lambda: EndpointConnectionError(endpoint_url=errors.ENDPOINT),
    FaultKind.TIMEOUT: lambda: ConnectTimeoutError(endpoint_url=errors.ENDPOINT),
}
_REFUSALS = {  # error code, message, HTTP status
    FaultKind.THROTTLED: (
        "ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput for the table was exceeded.",
        400,
    ),
    FaultKind.INTERNAL_ERROR: ("InternalServerError", "Internal server error", 500),
}
_CONFLICT_REASON = {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}


class MemoryDynamoDB:
    """An in-memory DynamoDB with the low-level client's interface (see the module docstring).

    `faults` schedules failures and latency; `max_page_bytes` stands for DynamoDB's 1 MB page
    (lower it to make small queries paginate); `clock` times ClientRequestToken memory."""

    def __init__(
        self,
        *,
        faults: Faults | None = None,
        max_page_bytes: int = 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.faults = faults if faults is not None else Faults()
        self.max_page_bytes = max_page_bytes
        self.exceptions = errors.modeled_exceptions()
        self._tables: dict[str, Table] = {}
        self._lock = threading.RLock()
        self._clock = clock
        self._calls = 0
        self._tokens: dict[str, tuple[str, float]] = {}

    # Plumbing: validation, faults, the lock ----------------------------------------------
    def _call(
        self,
        operation: str,
        params: dict[str, Any],
        run: Callable[[Decision | None], dict[str, Any]],
        items: Callable[[], list[tuple[str, Mapping[str, Any]]]] = list,
    ) -> dict[str, Any]:
        errors.validate_parameters(operation, params)
        touched = items()
        held, clash = self.faults.depart(operation, touched)
        try:
            self.faults.wait()
            with self._lock:
                self._calls += 1
                decision = self.faults.decide(Call(self._calls, operation, touched), clash)
                response = self._answer(operation, run, decision)
        finally:
            self.faults.arrive(held)
        response["ResponseMetadata"] = {
            "RequestId": hashlib.sha256(str(self._calls).encode()).hexdigest()[:32].upper(),
            "HTTPStatusCode": 200,
            "HTTPHeaders": {},
            "RetryAttempts": 0,
        }
        return response

    @staticmethod
    def _answer(
        operation: str,
        run: Callable[[Decision | None], dict[str, Any]],
        decision: Decision | None,
    ) -> dict[str, Any]:
        """Run the call under its fault: refused before applying, or applied and its answer
        lost, or (no fault) simply run."""
        kind = decision.kind if decision else None
        if kind in _BEFORE:
            raise _BEFORE[kind]()
        if kind in _REFUSALS:
            code, message, status = _REFUSALS[kind]
            raise errors.client_error(code, message, operation, status=status)
        if kind is FaultKind.CONFLICT and operation != "TransactWriteItems":
            raise errors.client_error(
                "TransactionConflictException", "Transaction is ongoing for the item", operation
            )
        try:
            response = run(decision)
        except Exception:
            if kind is FaultKind.LOST_RESPONSE:
                raise ReadTimeoutError(endpoint_url=errors.ENDPOINT) from None
            raise
        if kind is FaultKind.LOST_RESPONSE:
            raise ReadTimeoutError(endpoint_url=errors.ENDPOINT)
        return response

    def _table(self, name: str, operation: str) -> Table:
        table = self._tables.get(name)
        if table is None:
            raise errors.not_found(operation)
        return table

    def _key_of(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        table = self._tables.get(params.get("TableName", ""))
        raw = params.get("Key") or params.get("Item") or {}
        if table is None:
            return raw
        return {k: v for k, v in raw.items() if k in table.schema.names}

    # Tables ------------------------------------------------------------------------------
    def create_table(self, **params: Any) -> dict[str, Any]:
        """Create a table as CreateTable does (KeySchema, AttributeDefinitions, GSIs...)."""

        def run(_: Decision | None) -> dict[str, Any]:
            name = params["TableName"]
            if name in self._tables:
                raise errors.client_error(
                    "ResourceInUseException", f"Table already exists: {name}", "CreateTable"
                )
            if params.get("LocalSecondaryIndexes"):
                raise NotImplementedError("the memory twin does not model local secondary indexes")
            defined = {a["AttributeName"] for a in params["AttributeDefinitions"]}
            keyed = {e["AttributeName"] for e in params["KeySchema"]}
            for index in params.get("GlobalSecondaryIndexes") or []:
                keyed |= {e["AttributeName"] for e in index["KeySchema"]}
            if defined != keyed:
                raise errors.validation(
                    "One or more parameter values were invalid: Number of attributes in KeySchema"
                    " does not exactly match number of attributes defined in"
                    " AttributeDefinitions",
                    "CreateTable",
                )
            try:
                self._tables[name] = Table(name, params)
            except InvalidValue as exc:
                raise errors.validation(str(exc), "CreateTable") from None
            return {"TableDescription": self._describe(self._tables[name])}

        return self._call("CreateTable", params, run)

    def describe_table(self, **params: Any) -> dict[str, Any]:
        return self._call(
            "DescribeTable",
            params,
            lambda _: {"Table": self._describe(self._table(params["TableName"], "DescribeTable"))},
        )

    def delete_table(self, **params: Any) -> dict[str, Any]:
        def run(_: Decision | None) -> dict[str, Any]:
            table = self._table(params["TableName"], "DeleteTable")
            del self._tables[table.name]
            return {"TableDescription": self._describe(table)}

        return self._call("DeleteTable", params, run)

    def list_tables(self, **params: Any) -> dict[str, Any]:
        return self._call("ListTables", params, lambda _: {"TableNames": sorted(self._tables)})

    @staticmethod
    def _describe(table: Table) -> dict[str, Any]:
        spec = table.spec
        description: dict[str, Any] = {
            "TableName": table.name,
            "TableStatus": "ACTIVE",
            "KeySchema": spec["KeySchema"],
            "AttributeDefinitions": spec["AttributeDefinitions"],
            "ItemCount": len(table.items),
            "BillingModeSummary": {"BillingMode": spec.get("BillingMode", "PROVISIONED")},
            "TableArn": f"arn:aws:dynamodb:memory:000000000000:table/{table.name}",
        }
        if table.indexes:
            description["GlobalSecondaryIndexes"] = [
                {**index, "IndexStatus": "ACTIVE"} for index in spec["GlobalSecondaryIndexes"]
            ]
        if table.stream_view is not None:
            description["StreamSpecification"] = spec["StreamSpecification"]
            description["LatestStreamArn"] = f"{description['TableArn']}/stream/memory"
        return description

    # Reads -------------------------------------------------------------------------------
    def get_item(self, **params: Any) -> dict[str, Any]:
        items = lambda: [(params.get("TableName", ""), self._key_of(params))]  # noqa: E731
        return self._call("GetItem", params, lambda _: reads.get_item(self._tables, params), items)

    def query(self, **params: Any) -> dict[str, Any]:
        return self._call(
            "Query", params, lambda _: reads.query(self._tables, params, self.max_page_bytes)
        )

    def scan(self, **params: Any) -> dict[str, Any]:
        return self._call(
            "Scan", params, lambda _: reads.scan(self._tables, params, self.max_page_bytes)
        )

    def batch_get_item(self, **params: Any) -> dict[str, Any]:
        return self._call(
            "BatchGetItem", params, lambda d: reads.batch_get_item(self._tables, params, d)
        )

    def transact_get_items(self, **params: Any) -> dict[str, Any]:
        return self._call(
            "TransactGetItems", params, lambda _: reads.transact_get_items(self._tables, params)
        )

    # Single-item writes ------------------------------------------------------------------
    def put_item(self, **params: Any) -> dict[str, Any]:
        return self._write_one("PutItem", "Put", params)

    def update_item(self, **params: Any) -> dict[str, Any]:
        return self._write_one("UpdateItem", "Update", params)

    def delete_item(self, **params: Any) -> dict[str, Any]:
        return self._write_one("DeleteItem", "Delete", params)

    def _write_one(self, operation: str, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        def run(_: Decision | None) -> dict[str, Any]:
            write = prepare(self._tables, kind, params, operation)
            outcome = decide(write)
            raise_failure(outcome, operation)
            write.table.write(write.key, outcome.new)
            return returned(write, outcome, params.get("ReturnValues", "NONE"))

        return self._call(
            operation, params, run, lambda: [(params.get("TableName", ""), self._key_of(params))]
        )

    # Transactions ------------------------------------------------------------------------
    def transact_write_items(self, **params: Any) -> dict[str, Any]:
        """All or nothing: every condition holds and every item is written, or the call is
        cancelled with one reason per item and nothing changes."""
        entries = params.get("TransactItems", [])

        def touched() -> list[tuple[str, Mapping[str, Any]]]:
            out: list[tuple[str, Mapping[str, Any]]] = []
            for entry in entries:
                op: dict[str, Any] = next(iter(entry.values()), {}) if entry else {}
                out.append((op.get("TableName", ""), self._key_of(op)))
            return out

        def run(decision: Decision | None) -> dict[str, Any]:
            writes = self._prepare_transaction(entries)
            token = params.get("ClientRequestToken")
            if token is not None and self._replayed(token, entries):
                return {}
            outcomes: list[Outcome] = [decide(w) for w in writes]
            reasons = [o.failure or {"Code": "None"} for o in outcomes]
            if decision is not None and decision.kind is FaultKind.CONFLICT:
                reasons[decision.item] = dict(_CONFLICT_REASON)
            if any(r["Code"] != "None" for r in reasons):
                raise errors.cancelled(reasons)
            for write, outcome in zip(writes, outcomes, strict=True):
                if write.kind != "ConditionCheck":
                    write.table.write(write.key, outcome.new)
            if token is not None:
                self._tokens[token] = (_fingerprint(entries), self._clock())
            return {}

        return self._call("TransactWriteItems", params, run, touched)

    def _prepare_transaction(self, entries: list[dict[str, Any]]) -> list[Write]:
        operation = "TransactWriteItems"
        if len(entries) > _MAX_TRANSACTION_ITEMS:
            raise errors.validation(
                "1 validation error detected at 'transactItems' failed to satisfy constraint:"
                " Member must have length less than or equal to 100.",
                operation,
            )
        writes: list[Write] = []
        for entry in entries:
            kinds = [k for k in _ONE_OF if k in entry]
            if len(kinds) != 1:
                raise errors.validation(
                    "TransactItems can only contain one of Check, Put, Update or Delete", operation
                )
            writes.append(prepare(self._tables, kinds[0], entry[kinds[0]], operation))
        seen: set[tuple[str, Any]] = set()
        for write in writes:
            if (write.table.name, write.key) in seen:
                raise errors.validation(
                    "Transaction request cannot include multiple operations on one item", operation
                )
            seen.add((write.table.name, write.key))
        return writes

    def _replayed(self, token: str, entries: list[dict[str, Any]]) -> bool:
        """A retry with the same ClientRequestToken within 10 minutes of a committed
        transaction succeeds without writing again; other parameters are refused."""
        now = self._clock()
        self._tokens = {t: v for t, v in self._tokens.items() if now - v[1] < _TOKEN_SECONDS}
        if token not in self._tokens:
            return False
        if self._tokens[token][0] != _fingerprint(entries):
            raise errors.client_error(
                "IdempotentParameterMismatchException",
                "The request uses the same client token as a previous, but non-identical request.",
                "TransactWriteItems",
            )
        return True

    def batch_write_item(self, **params: Any) -> dict[str, Any]:
        """Puts and deletes without conditions, each atomic on its own (not all-or-nothing)."""
        requests = params.get("RequestItems", {})

        def touched() -> list[tuple[str, Mapping[str, Any]]]:
            return [
                (name, self._key_of({"TableName": name, **next(iter(r.values()))}))
                for name, rs in requests.items()
                for r in rs
            ]

        def run(decision: Decision | None) -> dict[str, Any]:
            operation = "BatchWriteItem"
            flat = [(name, r) for name, rs in requests.items() for r in rs]
            if len(flat) > _MAX_BATCH_WRITES:
                raise errors.validation(
                    "Too many items requested for the BatchWriteItem call", operation
                )
            writes = []
            for name, request in flat:
                if "PutRequest" in request:
                    p = {"TableName": name, **request["PutRequest"]}
                    writes.append((name, request, prepare(self._tables, "Put", p, operation)))
                else:
                    p = {"TableName": name, **request["DeleteRequest"]}
                    writes.append((name, request, prepare(self._tables, "Delete", p, operation)))
            if len({(w.table.name, w.key) for _, _, w in writes}) != len(writes):
                raise errors.validation("Provided list of item keys contains duplicates", operation)
            unprocessed: dict[str, list[dict[str, Any]]] = {}
            for position, (name, request, write) in enumerate(writes):
                if reads.left_out(decision, position):
                    unprocessed.setdefault(name, []).append(request)
                    continue
                write.table.write(write.key, decide(write).new)
            return {"UnprocessedItems": unprocessed}

        return self._call("BatchWriteItem", params, run, touched)

    # For tests and simulations -----------------------------------------------------------
    def table_items(self, table_name: str) -> list[Item]:
        """Every item of a table, in key order (copies): what a test inspects."""
        with self._lock:
            table = self._table(table_name, "Scan")
            return [clone_item(table.items[k]) for k in sorted(table.items, key=_key_order)]

    def stream_records(self, table_name: str) -> list[dict[str, Any]]:
        """The table's stream so far (DynamoDB Streams' record shape, oldest first)."""
        with self._lock:
            return copy.deepcopy(self._table(table_name, "Scan").stream)

    def seed_items(self, table_name: str, items: list[Item]) -> None:
        """Write items directly (no conditions, no faults): test set-up."""
        with self._lock:
            table = self._table(table_name, "PutItem")
            for raw in items:
                item = canonical_item(raw)
                table.write(table.check(item), item)


def _fingerprint(entries: list[dict[str, Any]]) -> str:
    text = json.dumps(entries, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def _key_order(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple("" if part is None else part for part in key)
