"""The embedded AWS emulator: moto's server app, serialised by one lock, on 127.0.0.1.

moto's backends are not thread-safe: concurrent conditional writes lose updates and even go
negative. Real DynamoDB makes each item write (and each transaction) atomic, so one lock around
the whole WSGI app is the faithful model, and it keeps the emulator's races from hiding ours.
moto's transaction rollback deep-copies whole tables (ever slower as they grow); it is
replaced here by an item-level rollback. Tables and the bucket are created from
template.yaml's own resource definitions (forge_tools.template).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from moto.dynamodb import models as _dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from forge_tools.template import create_tables, load_template

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


class _TableCopiesAreFree:
    """Stands in for the `copy` module inside moto.dynamodb.models: a Table "copy" is the
    table itself, so moto's whole-table backup before each transaction costs nothing (see
    _transact_with_item_rollback, which backs up only the items a transaction touches)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    @staticmethod
    def deepcopy(value: Any, memo: Any = None) -> Any:
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)


def _transact_with_item_rollback(original: Callable[..., Any]) -> Callable[..., Any]:
    """moto backs up every table a transaction touches with a deep copy: O(table size) per
    transaction, and the copy orphans the table's stream shard. This backs up only the items
    the transaction names, and the stream's length, and restores exactly those on failure.
    Safe because the emulator runs one request at a time."""

    def transact_write_items(backend: Any, transact_items: list[dict[str, Any]]) -> Any:
        saved: list[tuple[Any, Any, Any, Any]] = []
        streams: dict[int, tuple[Any, int]] = {}
        for entry in transact_items:
            op: Any = next(iter(entry.values()), {})
            table = backend.tables.get(op.get("TableName")) if isinstance(op, dict) else None
            key = (op.get("Key") or op.get("Item")) if table is not None else None
            if table is None or not key or table.hash_key_attr not in key:
                continue
            hash_value = DynamoType(key[table.hash_key_attr])
            range_value = None
            if table.range_key_attr is not None:
                if table.range_key_attr not in key:
                    continue
                range_value = DynamoType(key[table.range_key_attr])
            current = table.get_item(hash_value, range_value)
            saved.append((table, hash_value, range_value, copy.deepcopy(current)))
            if table.stream_shard is not None:
                streams[id(table)] = (table.stream_shard, len(table.stream_shard.items))
        try:
            return original(backend, transact_items)
        except Exception:
            for table, hash_value, range_value, item in reversed(saved):
                if range_value is None:
                    table.items.pop(hash_value, None)
                    if item is not None:
                        table.items[hash_value] = item
                else:
                    table.items[hash_value].pop(range_value, None)
                    if item is not None:
                        table.items[hash_value][range_value] = item
            for shard, length in streams.values():
                del shard.items[length:]  # no stream records for writes that never happened
            raise

    return transact_write_items


setattr(_dynamodb_models, "copy", _TableCopiesAreFree())  # noqa: B010 - a module patch
DynamoDBBackend.transact_write_items = _transact_with_item_rollback(  # type: ignore[method-assign]
    DynamoDBBackend.transact_write_items
)


class _LockedApp:
    """WSGI middleware: one request at a time, response body included."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            return list(self._app(environ, start_response))


@dataclass(frozen=True)
class Resources:
    """Physical names of the emulated resources, by their logical ids in template.yaml."""

    endpoint_url: str
    tables: dict[str, str]
    buckets: dict[str, str]

    def environment(self) -> dict[str, str]:
        """What a process needs to reach the emulated stack (and nothing else)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": REGION,
            **CREDENTIALS,
            "BUDGET_TABLE": self.tables["BudgetTable"],
            "LEDGER_TABLE": self.tables["LedgerTable"],
            "ARCHIVE_BUCKET": self.buckets["ArchiveBucket"],
        }


class Emulator:
    """Start with `start()`, create the template's resources with `create_resources()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = _LockedApp(DomainDispatcherApplication(create_backend_app))
        self._server: BaseWSGIServer = make_server(host, port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Emulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def create_resources(self, template_path: Path, prefix: str = "forge-local") -> Resources:
        """Create every table and bucket declared in the template, named after its logical id."""
        dynamodb, s3 = self.client("dynamodb"), self.client("s3")
        tables = create_tables(dynamodb, template_path, prefix)
        buckets: dict[str, str] = {}
        for logical_id, resource in load_template(template_path)["Resources"].items():
            if resource["Type"] == "AWS::S3::Bucket":
                name = f"{prefix}-{logical_id}".lower()
                s3.create_bucket(Bucket=name)
                buckets[logical_id] = name
        return Resources(self.endpoint_url, tables, buckets)
