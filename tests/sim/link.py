"""One container's connection to the shared twin: how a crash cuts it, and what it saw.

Every DynamoDB client call of a container (and of the driver's operator jobs) goes through a
Link, which
- refuses every call once its container has crashed (as a dead process's calls never leave);
- charges each fault the twin's schedule injects to the actor that made the call;
- notes the key of every item a write names, so the checks re-read only what may have moved;
- retries as botocore's standard mode does in production (forge.store.aws: 3 attempts):
  connection errors, timeouts and lost answers, 5xx and throttling. A retried write whose
  first attempt landed meets its own effect: that is where exactly-once guards earn their keep;
- stops a livelock: a store method that keeps retrying a cancelled transaction (a condition
  that can never pass, taken for contention) would otherwise spin for its 10 s deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectionError,
    EndpointConnectionError,
    HTTPClientError,
)

from forge.store.memory import MemoryDynamoDB
from tests.sim.scheduler import CURRENT

_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")
# Far more consecutive cancelled transactions than the conflict rate ever produces (p**30).
LIVELOCK_CANCELLATIONS = 30
# botocore's standard retry mode, as forge.store.aws configures it (no backoff: time is ours).
MAX_ATTEMPTS = 3
_RETRIED_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)


def _retried(exc: Exception) -> bool:
    if isinstance(exc, ConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return error.get("Code") in _RETRIED_CODES or status in (500, 502, 503, 504)
    return False


class Livelock(BaseException):
    """A store method retried a cancelled transaction without end."""


ItemKey = tuple[str, str, str]  # table, pk, sk


class Touched:
    """Keys of the items writes named since the last check (applied or not)."""

    def __init__(self) -> None:
        self.keys: dict[ItemKey, Mapping[str, Any]] = {}

    def note(self, table: str, raw: Mapping[str, Any]) -> None:
        pk, sk = raw.get("pk"), raw.get("sk")
        if pk is None or sk is None:
            return
        key = {"pk": pk, "sk": sk}
        self.keys[(table, str(pk["S"]), str(sk["S"]))] = key

    def take(self) -> dict[ItemKey, Mapping[str, Any]]:
        keys, self.keys = self.keys, {}
        return keys


def _named(operation: str, params: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if operation == "transact_write_items":
        for entry in params.get("TransactItems", []):
            for op in entry.values():
                yield op["TableName"], op.get("Key") or op.get("Item") or {}
    elif operation == "batch_write_item":
        for table, requests in params.get("RequestItems", {}).items():
            for request in requests:
                for op in request.values():
                    yield table, op.get("Key") or op.get("Item") or {}
    else:
        yield params["TableName"], params.get("Key") or params.get("Item") or {}


class Link:
    """A container's DynamoDB client over the shared twin (see the module docstring)."""

    def __init__(self, twin: MemoryDynamoDB, touched: Touched) -> None:
        self._twin = twin
        self._touched = touched
        self.alive = True
        self._cancelled_in_a_row = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._twin, name)
        if not callable(target):
            return target
        return self._calling(name, target)

    def _calling(self, name: str, target: Callable[..., Any]) -> Callable[..., Any]:
        def call(**params: Any) -> Any:
            if not self.alive:
                raise EndpointConnectionError(endpoint_url="memory://crashed-container")
            if name in _WRITES:
                for table, key in _named(name, params):
                    self._touched.note(table, key)
            injected = len(self._twin.faults.log)
            try:
                for attempt in range(1, MAX_ATTEMPTS + 1):
                    try:
                        response = target(**params)
                        break
                    except (ClientError, ConnectionError, HTTPClientError) as exc:
                        if attempt == MAX_ATTEMPTS or not _retried(exc):
                            raise
            except ClientError as exc:
                self._count_cancellation(exc)
                raise
            finally:
                if len(self._twin.faults.log) > injected and (actor := CURRENT.get()):
                    actor.store_faults += 1
            if name in _WRITES:  # reads in between (a re-read wallet) do not end a livelock
                self._cancelled_in_a_row = 0
            return response

        return call

    def _count_cancellation(self, exc: ClientError) -> None:
        if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
            return
        self._cancelled_in_a_row += 1
        if self._cancelled_in_a_row >= LIVELOCK_CANCELLATIONS:
            self._cancelled_in_a_row = 0
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            raise Livelock(
                f"{LIVELOCK_CANCELLATIONS} cancelled transactions in a row (last: {reasons})"
            )
