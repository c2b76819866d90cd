"""The stores of this process, built once from settings (cached factories, no import-time I/O)."""

from __future__ import annotations

from functools import cache

from forge.adapters.aws import dynamodb_client, s3_client
from forge.adapters.dynamo import DynamoStore
from forge.adapters.s3archive import S3Archive
from forge.settings import get_settings


@cache
def get_store() -> DynamoStore:
    settings = get_settings()
    return DynamoStore(dynamodb_client(), settings.budget_table, settings.ledger_table)


@cache
def get_archive() -> S3Archive:
    return S3Archive(s3_client(), get_settings().archive_bucket)
