"""The embedded AWS emulator: moto's server app, serialised by one lock, on 127.0.0.1.

moto's backends are not thread-safe: concurrent conditional writes lose updates and even go
negative. Real DynamoDB makes each item write (and each transaction) atomic, so one lock around
the whole WSGI app is the faithful model, and it keeps the emulator's races from hiding ours.
Tables and the bucket are created from template.yaml's own resource definitions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import yaml
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}

# CloudFormation properties of AWS::DynamoDB::Table that CreateTable takes as they are.
_TABLE_PROPERTIES = (
    "KeySchema",
    "AttributeDefinitions",
    "BillingMode",
    "StreamSpecification",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
)


class _LockedApp:
    """WSGI middleware: one request at a time, response body included."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            return list(self._app(environ, start_response))


class _CfnLoader(yaml.SafeLoader):
    """Reads a SAM template, keeping intrinsic functions (!Ref, !Sub...) as plain values."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node, deep=True)}
    assert isinstance(node, yaml.MappingNode)
    return {suffix: loader.construct_mapping(node, deep=True)}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        return dict(yaml.load(fh, Loader=_CfnLoader))  # noqa: S506 - SafeLoader subclass


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
        resources = load_template(template_path)["Resources"]
        dynamodb, s3 = self.client("dynamodb"), self.client("s3")
        tables: dict[str, str] = {}
        buckets: dict[str, str] = {}
        for logical_id, resource in resources.items():
            props = resource.get("Properties", {})
            if resource["Type"] == "AWS::DynamoDB::Table":
                name = f"{prefix}-{logical_id}"
                spec = {k: props[k] for k in _TABLE_PROPERTIES if k in props}
                if "StreamSpecification" in spec:  # CloudFormation implies StreamEnabled
                    spec["StreamSpecification"] = {
                        "StreamEnabled": True,
                        **spec["StreamSpecification"],
                    }
                dynamodb.create_table(TableName=name, **spec)
                tables[logical_id] = name
            elif resource["Type"] == "AWS::S3::Bucket":
                name = f"{prefix}-{logical_id}".lower()
                s3.create_bucket(Bucket=name)
                buckets[logical_id] = name
        return Resources(self.endpoint_url, tables, buckets)
