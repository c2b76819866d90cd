"""The catalog kept in the budget table: seeded from the shipped file, managed with
`forge-admin catalog ...`, read by each container at most once per TTL, and shown by
GET /v1/models with prices after the multiplier, route type and bucket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from forge.api import create_app
from forge.api.deps import get_gateway
from forge.domain.catalog import Catalog, CatalogSource, load_catalog
from forge.domain.errors import BudgetStoreUnavailable
from forge.domain.money import Bucket, RouteType
from forge.gateway import Gateway
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.providers.demo import create_demo_app
from forge.providers.openai import OpenAICompatProvider
from forge.settings import get_settings
from forge.store.dynamo.catalog import DynamoCatalogStore
from forge.wiring import dynamodb_client, get_store
from forge_tools import admin
from forge_tools.emulator import Resources


def catalog_store() -> DynamoCatalogStore:
    return DynamoCatalogStore(dynamodb_client(), get_settings().budget_table)


def forge_admin(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    admin.main(["catalog", *args])
    return json.loads(capsys.readouterr().out)


def test_an_unseeded_table_serves_the_shipped_file_and_seeding_keeps_its_order(
    aws_stack: Resources,
) -> None:
    store = catalog_store()
    assert store.read_catalog() is None
    assert CatalogSource(store).current() == load_catalog()

    store.seed(load_catalog())

    stored = store.read_catalog()
    assert stored == load_catalog()  # same models, same routes, same order


def test_admin_commands_change_routes_prices_and_order(
    aws_stack: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    forge_admin(capsys, "seed")
    added = forge_admin(
        capsys,
        "route-add",
        "--model",
        "demo-official",
        "--provider",
        "demo",
        "--upstream-model",
        "demo-routed-1",
        "--route-type",
        "routed",
        "--input",
        "2",
        "--cached-input",
        "0.5",
        "--output",
        "8",
        "--multiplier",
        "1.5",
        "--position",
        "0",
    )
    assert [r["route"] for r in added["routes"]] == ["demo:demo-routed-1", "demo:demo-official-1"]
    first = added["routes"][0]
    assert first["effective_per_1m"] == {
        "input": "3.000000",
        "cached_input": "0.750000",
        "output": "12.000000",
    }
    assert (first["bucket"], first["currency"]) == ("rmb", "CNY")

    changed = forge_admin(
        capsys, "multiplier", "--model", "demo-official", "--route", "demo:demo-routed-1",
        "--multiplier", "2",
    )  # fmt: skip
    assert changed["routes"][0]["effective_per_1m"]["output"] == "16.000000"
    kept = forge_admin(
        capsys, "route-remove", "--model", "demo-official", "--route", "demo:demo-routed-1"
    )
    assert [r["route"] for r in kept["routes"]] == ["demo:demo-official-1"]

    assert forge_admin(capsys, "remove", "--model", "demo-unavailable") == {
        "removed": "demo-unavailable"
    }
    listed = forge_admin(capsys, "list")
    assert "demo-unavailable" not in [m["id"] for m in listed]
    assert [m["id"] for m in listed][:2] == ["demo-official", "demo-routed"]

    with pytest.raises(SystemExit):
        admin.main(["catalog", "multiplier", "--model", "demo-official", "--route",
                    "demo:demo-official-1", "--multiplier", "0"])  # fmt: skip
    assert "multiplier must be positive" in capsys.readouterr().err


class CountingReader:
    def __init__(self, catalog: Catalog | None, fail: bool = False) -> None:
        self.catalog = catalog
        self.reads = 0
        self.fail = fail

    def read_catalog(self) -> Catalog | None:
        self.reads += 1
        if self.fail:
            raise BudgetStoreUnavailable("down")
        return self.catalog


def test_a_container_reads_the_catalog_at_most_once_per_ttl_and_keeps_it_in_an_outage() -> None:
    now = [0.0]
    reader = CountingReader(load_catalog())
    source = CatalogSource(reader, ttl_seconds=30, clock=lambda: now[0])
    for _ in range(50):
        source.current()
    assert reader.reads == 1
    now[0] = 31
    source.current()
    assert reader.reads == 2

    reader.fail = True
    now[0] = 62
    assert source.current() == load_catalog()  # the last good copy, not an outage

    cold = CatalogSource(CountingReader(None, fail=True))
    with pytest.raises(BudgetStoreUnavailable):  # no copy yet: fail closed
        cold.current()


def test_models_show_prices_after_the_multiplier_route_type_bucket_and_routes(
    aws_stack: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    store = get_store()
    account_id = create_account(store, "catalog test")
    credit_wallet(store, account_id, Bucket.CREDIT, "1", source="test", memo="fund")
    plaintext, _ = issue_key(store, account_id, route_types=frozenset({RouteType.OFFICIAL}))
    forge_admin(capsys, "seed")
    forge_admin(
        capsys, "route-add", "--model", "demo-official", "--provider", "demo",
        "--upstream-model", "demo-routed-1", "--route-type", "routed", "--input", "2",
        "--cached-input", "0.5", "--output", "8",
    )  # fmt: skip
    demo = OpenAICompatProvider(
        "http://demo.test/v1", "k", transport=httpx.ASGITransport(app=create_demo_app())
    )
    gateway = Gateway(
        store, {"demo": demo}, CatalogSource(catalog_store(), ttl_seconds=0), hold_ttl_seconds=960
    )
    app = create_app()
    app.dependency_overrides[get_gateway] = lambda: gateway

    async def scenario() -> tuple[Any, Any, httpx.Response]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gw",
            headers={"Authorization": f"Bearer {plaintext}"},
        ) as client:
            before = (await client.get("/v1/models")).json()
            forge_admin(
                capsys, "multiplier", "--model", "demo-official", "--route",
                "demo:demo-official-1", "--multiplier", "2",
            )  # fmt: skip
            after = (await client.get("/v1/models")).json()
            body = {"model": "demo-official", "messages": [{"role": "user", "content": "hi"}]}
            served = await client.post("/v1/chat/completions", json=body)
            return before, after, served

    before, after, served = asyncio.run(scenario())
    cards = {c["id"]: c for c in before["data"]}
    official = cards["demo-official"]
    assert official["route_type"] == "official" and official["bucket"] == "credit"
    assert official["prices"] == {
        "input": "0.500000",
        "cached_input": "0.250000",
        "output": "1.500000",
        "currency": "USD",
    }
    # An official-only key is shown only the routes it may use.
    assert [r["upstream_model"] for r in official["routes"]] == ["demo-official-1"]
    assert "demo-routed" not in cards
    gpt = next(m for m in load_catalog().models if m.id == "gpt-4o-mini")
    assert gpt.routes[0].multiplier == "1.1"  # the shipped file prices OpenAI with a margin
    assert {c["id"]: c for c in after["data"]}["demo-official"]["prices"]["output"] == "3.000000"
    assert served.status_code == 200
    receipt = store.get_receipt(account_id, served.headers["x-request-id"])
    assert receipt is not None and receipt.prices is not None
    assert receipt.prices.output == 3_000_000  # charged at the price in force


def test_a_route_can_name_the_field_its_upstream_takes_the_output_limit_in(
    aws_stack: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    forge_admin(capsys, "seed")
    common = ["--route-type", "official", "--input", "1", "--cached-input", "0.5", "--output", "4"]

    reasoning = forge_admin(
        capsys, "route-add", "--model", "o3", "--provider", "openai", "--upstream-model", "o3",
        *common, "--token-limit-param", "max_completion_tokens",
    )  # fmt: skip
    plain = forge_admin(
        capsys, "route-add", "--model", "gpt-4.1", "--provider", "openai", "--upstream-model",
        "gpt-4.1", *common,
    )  # fmt: skip

    assert reasoning["routes"][0]["token_limit_param"] == "max_completion_tokens"
    assert plain["routes"][0]["token_limit_param"] is None  # the field the client used
    stored = catalog_store().read_catalog()
    assert stored is not None
    o3 = stored.find("o3")
    assert o3 is not None and o3.routes[0].token_limit_param == "max_completion_tokens"
    shipped = load_catalog().find("o4-mini")
    assert shipped is not None and shipped.routes[0].token_limit_param == "max_completion_tokens"
    with pytest.raises(SystemExit):
        admin.main(["catalog", "route-add", "--model", "x", "--provider", "openai",
                    "--upstream-model", "x", *common,
                    "--token-limit-param", "max_output"])  # fmt: skip
