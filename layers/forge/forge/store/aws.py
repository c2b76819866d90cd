"""AWS clients, built with botocore directly: boto3 adds nothing we use here and ~110 ms to
a cold start. Builders only: forge.wiring decides when to build them and from what settings."""

from __future__ import annotations

from functools import cache
from typing import Any

from botocore.config import Config
from botocore.session import Session, get_session

# Fail fast: a slow budget store must turn into a refused request, not a hung one.
_DYNAMODB_CONFIG = Config(
    connect_timeout=2,
    read_timeout=5,
    retries={"mode": "standard", "max_attempts": 3},
    max_pool_connections=64,
)
# The provider key secret: read by the proxy on a request's path, so it fails fast too.
_SECRETS_CONFIG = Config(
    connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 2}
)
# Path-style keeps presigned URLs valid for the local emulator and for bucket names with dots.
_S3_CONFIG = Config(s3={"addressing_style": "path"}, signature_version="s3v4")


@cache
def _session() -> Session:
    return get_session()


def make_dynamodb_client(endpoint_url: str | None) -> Any:
    return _session().create_client("dynamodb", endpoint_url=endpoint_url, config=_DYNAMODB_CONFIG)


def make_s3_client(endpoint_url: str | None) -> Any:
    return _session().create_client("s3", endpoint_url=endpoint_url, config=_S3_CONFIG)


def make_sqs_client(endpoint_url: str | None) -> Any:
    return _session().create_client("sqs", endpoint_url=endpoint_url)


def make_secretsmanager_client(endpoint_url: str | None) -> Any:
    return _session().create_client(
        "secretsmanager", endpoint_url=endpoint_url, config=_SECRETS_CONFIG
    )
