"""AWS clients, built with botocore directly: boto3 adds nothing we use here and ~110 ms to
a cold start. Builders only: forge.wiring decides when to build them and from what settings."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botocore.session import Session

# Fail fast: a slow budget store must turn into a refused request, not a hung one. The wire
# client (forge.store.dynamo.wire) reproduces these settings for DynamoDB.
_DYNAMODB_CONFIG: dict[str, Any] = {
    "connect_timeout": 2,
    "read_timeout": 5,
    "retries": {"mode": "standard", "max_attempts": 3},
    "max_pool_connections": 64,
}
# The provider key secret: read by the proxy on a request's path, so it fails fast too.
_SECRETS_CONFIG: dict[str, Any] = {
    "connect_timeout": 2,
    "read_timeout": 5,
    "retries": {"mode": "standard", "max_attempts": 2},
}
# Path-style keeps presigned URLs valid for the local emulator and for bucket names with dots.
_S3_CONFIG: dict[str, Any] = {"s3": {"addressing_style": "path"}, "signature_version": "s3v4"}


@cache
def _session() -> Session:
    # Imported here: a process whose stores use the wire client never loads botocore's client
    # machinery unless it builds another client.
    from botocore.session import get_session

    return get_session()


def _client(service: str, endpoint_url: str | None, config: dict[str, Any] | None = None) -> Any:
    from botocore.config import Config

    return _session().create_client(
        service, endpoint_url=endpoint_url, config=Config(**config) if config else None
    )


def make_dynamodb_client(endpoint_url: str | None) -> Any:
    return _client("dynamodb", endpoint_url, _DYNAMODB_CONFIG)


def make_s3_client(endpoint_url: str | None) -> Any:
    return _client("s3", endpoint_url, _S3_CONFIG)


def make_sqs_client(endpoint_url: str | None) -> Any:
    return _client("sqs", endpoint_url)


def make_secretsmanager_client(endpoint_url: str | None) -> Any:
    return _client("secretsmanager", endpoint_url, _SECRETS_CONFIG)
