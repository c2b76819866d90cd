"""Cached AWS clients, built on first use (no network or environment reads at import).

Built with botocore directly: boto3 adds nothing we use here and ~110 ms to a cold start."""

from __future__ import annotations

from functools import cache
from typing import Any

from botocore.config import Config
from botocore.session import Session, get_session

from forge.settings import get_settings

# Fail fast: a slow budget store must turn into a refused request, not a hung one.
_DYNAMODB_CONFIG = Config(
    connect_timeout=2,
    read_timeout=5,
    retries={"mode": "standard", "max_attempts": 3},
    max_pool_connections=64,
)


@cache
def _session() -> Session:
    return get_session()


@cache
def dynamodb_client() -> Any:
    settings = get_settings()
    return _session().create_client(
        "dynamodb", endpoint_url=settings.aws_endpoint_url, config=_DYNAMODB_CONFIG
    )


@cache
def s3_client() -> Any:
    settings = get_settings()
    # Path-style keeps presigned URLs valid for the local emulator and for bucket names with dots.
    config = Config(s3={"addressing_style": "path"}, signature_version="s3v4")
    return _session().create_client("s3", endpoint_url=settings.aws_endpoint_url, config=config)
