"""Integration fixtures: the embedded DynamoDB/S3 emulator with template.yaml's resources,
the environment pointing at it, the Lambda handlers loaded as Lambda loads them, and the
ledger archive with a history written through the real store."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from forge.settings import get_settings
from forge.store.s3archive import S3Archive
from forge_tools.emulator import REGION, Emulator, Resources
from forge_tools.lambda_local import LambdaContext, load_handler_module, to_lambda_record
from tests.conftest import clear_cached_factories
from tests.ledger_history import History
from tests.twin import route_dynamodb_to, twin_stack

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
EVENTS = ROOT / "events"
# The emulator's backend is process-wide: a token per import keeps stacks of a suite that
# imports these fixtures (tests/fuzz) apart from this one's.
_stack_ids = (f"{n}{secrets.token_hex(3)}" for n in itertools.count(1))


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    emu = Emulator(port=0).start()
    yield emu
    emu.stop()


def _stack(resources: Resources, monkeypatch: pytest.MonkeyPatch) -> Iterator[Resources]:
    for name, value in resources.environment().items():
        monkeypatch.setenv(name, value)
    clear_cached_factories()
    yield resources
    clear_cached_factories()


@pytest.fixture
def aws_stack(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Resources]:
    """Fresh tables and bucket (from template.yaml) per test, and the environment to reach
    them; settings and client caches are rebuilt around the test."""
    resources = emulator.create_resources(TEMPLATE, prefix=f"it{next(_stack_ids)}")
    yield from _stack(resources, monkeypatch)


@pytest.fixture(params=["emulator", "twin"])
def aws_stack_or_twin(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Resources]:
    """`aws_stack` on the emulator, then the same on the in-memory twin: get_store(), the views
    and the app reach the twin's tables; no S3 (its endpoint is a closed port). A module runs
    its tests on both by overriding `aws_stack` with this fixture."""
    if request.param == "emulator":
        emulator = request.getfixturevalue("emulator")
        resources = emulator.create_resources(TEMPLATE, prefix=f"it{next(_stack_ids)}")
        yield from _stack(resources, monkeypatch)
        return
    stack = twin_stack()
    closed = "http://127.0.0.1:9"  # anything that bypasses the twin fails fast, never leaks
    resources = Resources(closed, stack.tables, {"ArchiveBucket": "twin-archivebucket"})
    route_dynamodb_to(stack.client, monkeypatch)
    yield from _stack(resources, monkeypatch)


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext()


@pytest.fixture
def load_handler(aws_stack: Resources) -> Callable[[str], Callable[..., Any]]:
    """A fresh handler module per test, so its cached clients belong to this test's stack."""
    return lambda name: load_handler_module(name).handler


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
            records.append(to_lambda_record(record, arn, REGION))
    return {"Records": records}


@pytest.fixture
def ledger_stream_event(emulator: Emulator, aws_stack: Resources) -> Callable[[], dict[str, Any]]:
    """Reads the ledger table's stream of this test's stack into a Lambda event."""
    return lambda: lambda_stream_event(emulator, aws_stack.tables["LedgerTable"])


@pytest.fixture
def s3(emulator: Emulator) -> Any:
    return emulator.client("s3")


@pytest.fixture
def archive(aws_stack: Resources, s3: Any) -> S3Archive:
    return S3Archive(s3, get_settings().archive_bucket)


@pytest.fixture
def history(emulator: Emulator, aws_stack: Resources, archive: S3Archive) -> History:
    """Writes ledger entries through the real store and archives each one as it is written."""
    return History(
        emulator.client("dynamodb"),
        aws_stack.tables["BudgetTable"],
        aws_stack.tables["LedgerTable"],
        archive,
    )
