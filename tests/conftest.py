"""Shared test helpers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from forge import wiring
from tests.twin import memory_store, twin  # noqa: F401  (fixtures for every tier)


def clear_cached_factories() -> None:
    """Settings, clients and stores are cached per process; tests that change the environment
    must rebuild them."""
    wiring.clear()


@pytest.fixture(autouse=True)
def _fresh_factories() -> Iterator[None]:
    clear_cached_factories()
    yield
    clear_cached_factories()
