"""The one place objects are built from settings: clients, stores, views, providers, the meter
and the gateway of this process. Cached factories: nothing is built, read or dialled at import,
and each is built once per container (tests clear them with `clear()`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import TYPE_CHECKING, Any

from forge.ports import NO_METER, Meter
from forge.settings import Settings, get_settings
from forge.store.aws import (
    make_dynamodb_client,
    make_s3_client,
    make_secretsmanager_client,
    make_sqs_client,
)
from forge.store.dynamo.store import DynamoStore

# Each adapter below loads in the factory that builds it, so a function imports only those
# its path uses (the proxy: the store, the catalog, the gateway and its providers).
if TYPE_CHECKING:
    from forge.gateway import Gateway
    from forge.gateway.auth import Keys
    from forge.providers.secret import ProviderSecret
    from forge.store.dynamo.catalog import DynamoCatalogStore
    from forge.store.dynamo.listings import ConsoleListings
    from forge.store.dynamo.views import LedgerViews
    from forge.store.failure_queue import SqsFailureQueue
    from forge.store.s3archive import S3Archive


@cache
def dynamodb_client() -> Any:
    """The stores' DynamoDB client: the lean wire client unless FORGE_DYNAMO_CLIENT=botocore."""
    settings = get_settings()
    if settings.dynamo_client == "wire":
        from forge.store.dynamo.wire import make_wire_client

        return make_wire_client(settings.aws_endpoint_url)
    return make_dynamodb_client(settings.aws_endpoint_url)


@cache
def s3_client() -> Any:
    return make_s3_client(get_settings().aws_endpoint_url)


@cache
def sqs_client() -> Any:
    return make_sqs_client(get_settings().aws_endpoint_url)


@cache
def secretsmanager_client() -> Any:
    return make_secretsmanager_client(get_settings().aws_endpoint_url)


@cache
def get_store() -> DynamoStore:
    settings = get_settings()
    return DynamoStore(dynamodb_client(), settings.budget_table, settings.ledger_table)


@cache
def get_archive() -> S3Archive:
    from forge.store.s3archive import S3Archive

    return S3Archive(s3_client(), get_settings().archive_bucket)


def get_ledger_views() -> LedgerViews:
    """This process's views over its ledger table; cheap to build, the client is cached."""
    from forge.store.dynamo.views import LedgerViews

    return LedgerViews(dynamodb_client(), get_settings().ledger_table)


def get_console_listings() -> ConsoleListings:
    """The requests and runs listings (the web console's), over the ledger and budget tables."""
    from forge.store.dynamo.listings import ConsoleListings

    settings = get_settings()
    return ConsoleListings(dynamodb_client(), settings.ledger_table, settings.budget_table)


@cache
def get_keys() -> Keys:
    """API key lookups with this process's cache, shared by the gateway and the views, so a
    function that serves no paid call never builds a gateway (or reads provider keys)."""
    import time

    import anyio

    from forge.gateway.auth import Keys

    return Keys(
        get_store(),
        time.monotonic,
        anyio.to_thread.run_sync,
        get_meter(),
        run_later=background_jobs().submit,
    )


@cache
def background_jobs() -> ThreadPoolExecutor:
    """Two threads for work off every request's path (key refreshes, last-used stamps); one
    pool per process, kept across `clear()`."""
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="background")


def get_failure_queue(queue_url: str) -> SqsFailureQueue:
    """The archiver's on-failure queue (the stack's ArchiveFailureQueueUrl), for replay."""
    from forge.store.failure_queue import SqsFailureQueue

    return SqsFailureQueue(sqs_client(), queue_url)


def get_catalog_store() -> DynamoCatalogStore:
    from forge.store.dynamo.catalog import DynamoCatalogStore

    return DynamoCatalogStore(dynamodb_client(), get_settings().budget_table)


def get_provider_secret(settings: Settings | None = None) -> ProviderSecret | None:
    """The provider key secret of this deployment; None when keys come only from the
    environment (no FORGE_PROVIDER_SECRET_ID)."""
    from forge.providers.secret import ProviderSecret

    secret_id = (settings or get_settings()).provider_secret_id
    return ProviderSecret(secretsmanager_client(), secret_id) if secret_id else None


@cache
def get_meter() -> Meter:
    """This process's metrics: CloudWatch EMF lines on stdout when a namespace is set."""
    settings = get_settings()
    if not settings.metrics_namespace:
        return NO_METER
    from forge.telemetry import EmfMeter

    return EmfMeter(settings.metrics_namespace, settings.service_name)


@cache
def get_gateway() -> Gateway:
    return build_gateway(get_settings(), get_store(), get_keys())


def build_gateway(settings: Settings, store: DynamoStore, keys: Keys | None = None) -> Gateway:
    """The gateway of this process: its providers (offered as their keys say, the provider
    secret re-read at most every FORGE_PROVIDER_REFRESH_SECONDS), the catalog kept in the
    budget table (read at most once per TTL), and this container's retry policy and route
    health."""
    # Imported here: the archiver, statement and sweeper functions never load httpx or FastAPI.
    from forge.domain.catalog import CatalogSource
    from forge.domain.routing import RetryPolicy, RouteHealth
    from forge.gateway import Gateway
    from forge.providers.registry import configured_providers
    from forge.store.dynamo.catalog import DynamoCatalogStore

    secret = get_provider_secret(settings)

    catalog = CatalogSource(
        DynamoCatalogStore(dynamodb_client(), settings.budget_table),
        ttl_seconds=settings.catalog_ttl_seconds,
    )
    return Gateway(
        store,
        configured_providers(settings, secret.read if secret else None),
        catalog,
        hold_ttl_seconds=settings.hold_ttl_seconds,
        keys=keys,
        retry=RetryPolicy(
            attempts_per_route=settings.upstream_route_attempts,
            max_attempts=settings.upstream_max_attempts,
            base_delay=settings.retry_base_delay,
            max_delay=settings.retry_max_delay,
            max_retry_after=settings.retry_after_max,
        ),
        health=RouteHealth(
            threshold=settings.route_failure_threshold, cooldown=settings.route_cooldown_seconds
        ),
        meter=get_meter(),
    )


FACTORIES = (
    get_settings,
    dynamodb_client,
    s3_client,
    sqs_client,
    secretsmanager_client,
    get_store,
    get_archive,
    get_keys,
    get_meter,
    get_gateway,
)


def clear() -> None:
    """Forget everything built: the next use reads the environment again (tests)."""
    for factory in FACTORIES:
        factory.cache_clear()
