"""Shared test helpers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from forge.adapters.aws import dynamodb_client, s3_client
from forge.api.deps import get_gateway
from forge.settings import get_settings
from forge.stores import get_archive, get_store
from tests.twin import memory_store, twin  # noqa: F401  (fixtures for every tier)


def clear_cached_factories() -> None:
    """Settings, clients and stores are cached per process; tests that change the environment
    must rebuild them."""
    for factory in (get_settings, dynamodb_client, s3_client, get_store, get_archive, get_gateway):
        factory.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_factories() -> Iterator[None]:
    clear_cached_factories()
    yield
    clear_cached_factories()
