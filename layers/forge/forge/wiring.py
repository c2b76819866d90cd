"""The stores of this process, built once from settings (cached factories, no import-time I/O)."""

from __future__ import annotations

from functools import cache

from forge.settings import get_settings
from forge.store.aws import dynamodb_client, s3_client
from forge.store.dynamo.store import DynamoStore
from forge.store.s3archive import S3Archive


@cache
def get_store() -> DynamoStore:
    settings = get_settings()
    return DynamoStore(dynamodb_client(), settings.budget_table, settings.ledger_table)


@cache
def get_archive() -> S3Archive:
    return S3Archive(s3_client(), get_settings().archive_bucket)
