"""Integration fixtures: the embedded DynamoDB/S3 emulator with template.yaml's resources,
the environment pointing at it, and the Lambda handlers loaded as Lambda loads them."""

from __future__ import annotations

import importlib.util
import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from forge.adapters import aws
from forge.settings import get_settings
from forge_tools.emulator import Emulator, Resources

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
EVENTS = ROOT / "events"
_stack_ids = itertools.count(1)


def _clear_factories() -> None:
    for factory in (get_settings, aws.dynamodb_client, aws.s3_client):
        factory.cache_clear()


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    emu = Emulator(port=0).start()
    yield emu
    emu.stop()


@pytest.fixture
def aws_stack(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Resources]:
    """Fresh tables and bucket (from template.yaml) per test, and the environment to reach
    them; settings and client caches are rebuilt around the test."""
    resources = emulator.create_resources(TEMPLATE, prefix=f"it{next(_stack_ids)}")
    for name, value in resources.environment().items():
        monkeypatch.setenv(name, value)
    _clear_factories()
    yield resources
    _clear_factories()


@dataclass
class LambdaContext:
    """The parts of Lambda's context object that handlers and Powertools read."""

    function_name: str = "TestFunction"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:TestFunction"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/TestFunction"
    log_stream_name: str = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext()


def load_function(name: str) -> ModuleType:
    """Import functions/<name>/app.py by file, as Lambda does (each function has an `app`)."""
    path = ROOT / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"function_{name}_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def load_handler(aws_stack: Resources) -> Callable[[str], Callable[..., Any]]:
    """A fresh handler module per test, so its cached clients belong to this test's stack."""
    return lambda name: load_function(name).handler


def lambda_stream_event(emulator: Emulator, table_name: str) -> dict[str, Any]:
    """Everything on a table's stream so far, as the event Lambda would deliver."""
    dynamodb, streams = emulator.client("dynamodb"), emulator.client("dynamodbstreams")
    arn = dynamodb.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]
    records: list[dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for record in streams.get_records(ShardIterator=iterator)["Records"]:
            change = dict(record["dynamodb"])
            created = change["ApproximateCreationDateTime"]
            change["ApproximateCreationDateTime"] = int(created.timestamp())
            records.append({**record, "dynamodb": change, "eventSourceARN": arn})
    return {"Records": records}


@pytest.fixture
def ledger_stream_event(emulator: Emulator, aws_stack: Resources) -> Callable[[], dict[str, Any]]:
    """Reads the ledger table's stream of this test's stack into a Lambda event."""
    return lambda: lambda_stream_event(emulator, aws_stack.tables["LedgerTable"])
