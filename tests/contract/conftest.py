"""The contract suite's backends: every test runs on the embedded emulator (moto) reached through
botocore, on the same emulator reached through the lean wire client (forge.store.dynamo.wire),
and on the in-memory twin, through the very same adapter classes. After each test the two tables
are dumped; every later backend to run a test must leave exactly the items the first left
(timestamps masked), so neither the twin nor the wire client can drift unnoticed."""

from __future__ import annotations

import itertools
import json
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from forge.money_in import accounts, adjustments
from forge.money_in import codes as code_module
from forge.store.dynamo import keys as dynamo_keys
from forge.store.dynamo.catalog import DynamoCatalogStore
from forge.store.dynamo.items import TypeDeserializer
from forge.store.dynamo.store import DynamoStore
from forge.store.dynamo.views import LedgerViews
from forge.store.dynamo.wire import WireDynamoDB
from forge_tools.emulator import CREDENTIALS, REGION, Emulator
from forge_tools.template import create_tables, memory_stack
from tests.contract.money import NOW
from tests.integration.conftest import emulator  # noqa: F401  (shared fixture)
from tests.twin import TEMPLATE

BACKENDS = ("emulator", "wire", "twin")
_stacks = (f"ct{n}{secrets.token_hex(3)}" for n in itertools.count(1))
_left_behind: dict[tuple[str, str], tuple[str, list[str], int]] = {}  # test -> first's items
# Wall-clock instants (created_at, resolved_at...) and hours (usage cells) differ between the
# two runs of a test; so does the ttl stamped from time.time().
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}(:\d{2}:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?")
_VOLATILE_NUMBERS = {"ttl"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "items_vary: the test's resulting items depend on thread timing"
    )


@dataclass
class Backend:
    name: str
    client: Any
    tables: dict[str, str]

    @property
    def budget_table(self) -> str:
        return self.tables["BudgetTable"]

    @property
    def ledger_table(self) -> str:
        return self.tables["LedgerTable"]

    def store(self, clock: Callable[[], datetime] = lambda: NOW) -> DynamoStore:
        return DynamoStore(self.client, self.budget_table, self.ledger_table, clock=clock)

    def views(self) -> LedgerViews:
        return LedgerViews(self.client, self.ledger_table)

    def catalog(self) -> DynamoCatalogStore:
        return DynamoCatalogStore(self.client, self.budget_table)

    def items(self, table: str) -> list[dict[str, Any]]:
        """Every item of one table (a full, paged Scan), decoded."""
        found: list[dict[str, Any]] = []
        request: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
        while True:
            page = self.client.scan(**request)
            found += [{k: _decode(v) for k, v in item.items()} for item in page["Items"]]
            if "LastEvaluatedKey" not in page:
                return found
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def dump(self) -> list[str]:
        """Both tables, normalised for comparison across backends and runs."""
        lines = []
        for logical_id, table in sorted(self.tables.items()):
            for item in self.items(table):
                masked = {
                    k: "<volatile>" if k in _VOLATILE_NUMBERS else _mask(v) for k, v in item.items()
                }
                lines.append(f"{logical_id} {json.dumps(masked, sort_keys=True)}")
        return sorted(lines)


_decoder = TypeDeserializer()


def _decode(value: dict[str, Any]) -> Any:
    return _normalise(_decoder.deserialize(value))


def _normalise(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"N:{value.normalize():f}"
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(map(str, (_normalise(v) for v in value)))
    if isinstance(value, bytes):
        return f"B:{value.hex()}"
    return value


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return _INSTANT.sub("<instant>", value)
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value


@pytest.fixture(scope="session")
def emulator_client(emulator: Emulator) -> Any:  # noqa: F811
    return emulator.client("dynamodb")


@pytest.fixture(scope="session")
def wire_client(emulator: Emulator) -> Iterator[WireDynamoDB]:  # noqa: F811
    client = WireDynamoDB(
        emulator.endpoint_url,
        REGION,
        lambda: (CREDENTIALS["AWS_ACCESS_KEY_ID"], CREDENTIALS["AWS_SECRET_ACCESS_KEY"], None),
    )
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _deterministic_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids and codes the services draw at random, drawn from counters instead, so both backends
    are given the very same writes."""
    counter = itertools.count(1)
    new_id = lambda prefix: f"{prefix}_{next(counter):027x}"  # noqa: E731
    for module in (code_module, adjustments, accounts, dynamo_keys):
        monkeypatch.setattr(module, "new_id", new_id)
    codes = itertools.count(1)
    monkeypatch.setattr(code_module, "new_code", lambda: f"FORGE-0000-0000-{next(codes):04d}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "emulator":
        client = request.getfixturevalue("emulator_client")
        chosen = Backend("emulator", client, create_tables(client, TEMPLATE, next(_stacks)))
    elif request.param == "wire":
        botocore_client = request.getfixturevalue("emulator_client")
        tables = create_tables(botocore_client, TEMPLATE, next(_stacks))
        chosen = Backend("wire", request.getfixturevalue("wire_client"), tables)
    else:
        stack = memory_stack(TEMPLATE)
        chosen = Backend("twin", stack.client, stack.tables)
    yield chosen
    if request.node.get_closest_marker("items_vary") is None:
        _compare_with_other_backend(request, chosen)


def _compare_with_other_backend(request: pytest.FixtureRequest, chosen: Backend) -> None:
    params = getattr(request.node, "callspec", None)
    others = {k: repr(v) for k, v in (params.params if params else {}).items() if k != "backend"}
    test = (request.node.nodeid.split("[")[0], json.dumps(others, sort_keys=True))
    dump = chosen.dump()
    if test not in _left_behind:
        _left_behind[test] = (chosen.name, dump, 1)
        return
    first, expected, seen = _left_behind[test]
    if seen + 1 == len(BACKENDS):
        del _left_behind[test]
    else:
        _left_behind[test] = (first, expected, seen + 1)
    assert dump == expected, (
        f"{chosen.name} left other items than {first}:\n"
        + "\n".join(f"- {line}" for line in sorted(set(expected) - set(dump)))
        + "\n"
        + "\n".join(f"+ {line}" for line in sorted(set(dump) - set(expected)))
    )
