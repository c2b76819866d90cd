"""The in-memory twin for tests: a DynamoStore (or any adapter) over template.yaml's tables in
one line, and the fixtures that hand them out (registered for every test in tests/conftest.py).

    store = twin_store()                              # a DynamoStore on a fresh twin
    stack = twin_stack(Faults(seed=3, rates={FaultKind.CONFLICT: 0.1}))
    views = LedgerViews(stack.client, stack.ledger_table)
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from forge import wiring
from forge.store.dynamo.store import DynamoStore
from forge.store.memory import Faults
from forge_tools.template import MemoryStack, memory_stack

TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"


def twin_stack(faults: Faults | None = None) -> MemoryStack:
    """A fresh twin holding every table of template.yaml."""
    return memory_stack(TEMPLATE, faults=faults)


def store_on(stack: MemoryStack) -> DynamoStore:
    return DynamoStore(stack.client, stack.budget_table, stack.ledger_table)


def twin_store(faults: Faults | None = None) -> DynamoStore:
    """The DynamoDB budget store and ledger writer, on a fresh twin."""
    return store_on(twin_stack(faults))


def route_dynamodb_to(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every `dynamodb_client()` factory of this process (the cached one and each module's
    imported reference to it) hand out `client`, so `get_store()`, the views and the app run
    on the twin; the monkeypatch undoes it."""
    original = wiring.dynamodb_client
    routed = cache(lambda: client)  # cache_clear() still works for clear_cached_factories
    for module in list(sys.modules.values()):  # test modules too, whatever their import name
        if getattr(module, "dynamodb_client", None) is original:
            monkeypatch.setattr(module, "dynamodb_client", routed)


@pytest.fixture
def twin() -> MemoryStack:
    """A fresh in-memory twin with template.yaml's tables."""
    return twin_stack()


@pytest.fixture
def memory_store(twin: MemoryStack) -> DynamoStore:
    """A DynamoStore on a fresh in-memory twin (no emulator, no environment)."""
    return store_on(twin)
