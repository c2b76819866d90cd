"""`forge-admin catalog ...`: the model catalog kept in the budget table (models, their
ordered routes, prices per 1M tokens and the operator multiplier). Containers pick a change
up within FORGE_CATALOG_TTL_SECONDS."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from forge.domain.money import RouteType, format_micros


def add_parser(groups: Any) -> None:
    catalog = groups.add_parser("catalog").add_subparsers(dest="action", required=True)
    catalog.add_parser("list", help="every model with its routes and effective prices")
    seed = catalog.add_parser("seed", help="load a catalog file (default: the shipped one)")
    seed.add_argument("--file", type=Path, help="a catalog JSON file ({'models': [...]})")
    seed.add_argument("--replace", action="store_true", help="drop models the file lacks")
    put = catalog.add_parser("put", help="add or replace one model from JSON ('-': stdin)")
    put.add_argument("--file", required=True)
    remove = catalog.add_parser("remove", help="remove a model")
    remove.add_argument("--model", required=True)

    add = catalog.add_parser("route-add", help="add a route to a model (creating the model)")
    add.add_argument("--model", required=True)
    add.add_argument("--provider", required=True)
    add.add_argument("--upstream-model", required=True)
    add.add_argument("--route-type", choices=[t.value for t in RouteType], required=True)
    add.add_argument("--input", required=True, help="price per 1M input tokens")
    add.add_argument("--cached-input", required=True, help="price per 1M cached input tokens")
    add.add_argument("--output", required=True, help="price per 1M output tokens")
    add.add_argument("--multiplier", default="1")
    add.add_argument("--max-output-tokens", type=int, default=4096)
    add.add_argument(
        "--token-limit-param",
        choices=["max_tokens", "max_completion_tokens"],
        help="the field an OpenAI(-compatible) upstream takes the output limit in (OpenAI's"
        " reasoning models: max_completion_tokens); default: the one the client used",
    )
    add.add_argument("--position", type=int, help="0-based place in the fallback order")
    add.add_argument("--description", help="the model's description, if it is new")
    add.add_argument("--mode", choices=["chat", "embeddings"], default="chat")

    drop = catalog.add_parser("route-remove", help="remove a route (provider:upstream_model)")
    drop.add_argument("--model", required=True)
    drop.add_argument("--route", required=True)

    multiplier = catalog.add_parser("multiplier", help="set a route's operator multiplier")
    multiplier.add_argument("--model", required=True)
    multiplier.add_argument("--route", required=True, help="provider:upstream_model")
    multiplier.add_argument("--multiplier", required=True)


def describe(model: Any) -> dict[str, Any]:
    return {
        "id": model.id,
        "mode": model.mode,
        "description": model.description,
        "routes": [
            {
                "route": r.name,
                "route_type": r.route_type.value,
                "bucket": r.bucket.value,
                "multiplier": r.multiplier,
                "max_output_tokens": r.max_output_tokens,
                "token_limit_param": r.token_limit_param,
                "prices_per_1m": r.prices.model_dump(),
                "effective_per_1m": {
                    name: format_micros(micros)
                    for name, micros in r.effective_prices.model_dump().items()
                },
                "currency": r.bucket.currency,
            }
            for r in model.routes
        ],
    }


def run(args: argparse.Namespace) -> None:
    from pydantic import ValidationError

    from forge.domain.catalog import CatalogModel, load_catalog
    from forge.domain.errors import InvalidRequest, NotFound
    from forge.settings import get_settings
    from forge.store.dynamo.catalog import DynamoCatalogStore
    from forge.wiring import dynamodb_client

    store = DynamoCatalogStore(dynamodb_client(), get_settings().budget_table)

    def current() -> list[CatalogModel]:
        stored = store.read_catalog()
        return (stored or load_catalog()).models

    def model(model_id: str) -> CatalogModel:
        found = next((m for m in current() if m.id == model_id), None)
        if found is None:
            raise NotFound(f"No model '{model_id}' in the catalog")
        return found

    def print_json(value: Any) -> None:
        print(json.dumps(value, indent=2))

    try:
        _act(args, store, current, model, print_json)
    except ValidationError as exc:
        raise InvalidRequest(str(exc).replace("\n", "; ")) from None


def _act(args: argparse.Namespace, store: Any, current: Any, model: Any, print_json: Any) -> None:
    from forge.domain.catalog import CatalogModel, RouteSpec, read_catalog_file
    from forge.domain.errors import InvalidRequest, NotFound

    match args.action:
        case "list":
            print_json([describe(m) for m in current()])
        case "seed":
            written = store.seed(read_catalog_file(args.file), replace=args.replace)
            print_json({"seeded": written})
        case "put":
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
            updated = CatalogModel.model_validate_json(text)
            store.put_model(updated)
            print_json(describe(updated))
        case "remove":
            store.remove_model(args.model)
            print_json({"removed": args.model})
        case "route-add":
            route = RouteSpec.model_validate(
                {
                    "provider": args.provider,
                    "upstream_model": args.upstream_model,
                    "route_type": args.route_type,
                    "prices": {
                        "input": args.input,
                        "cached_input": args.cached_input,
                        "output": args.output,
                    },
                    "multiplier": args.multiplier,
                    "max_output_tokens": args.max_output_tokens,
                    "token_limit_param": args.token_limit_param,
                }
            )
            existing = next((m for m in current() if m.id == args.model), None)
            routes = [r for r in (existing.routes if existing else []) if r.name != route.name]
            routes.insert(len(routes) if args.position is None else args.position, route)
            updated = CatalogModel(
                id=args.model,
                description=args.description or (existing.description if existing else ""),
                mode=existing.mode if existing else args.mode,
                routes=routes,
            )
            store.put_model(updated)
            print_json(describe(updated))
        case "route-remove":
            found = model(args.model)
            routes = [r for r in found.routes if r.name != args.route]
            if len(routes) == len(found.routes):
                raise NotFound(f"No route '{args.route}' on '{args.model}'")
            if not routes:
                raise InvalidRequest("A model keeps at least one route; remove the model instead")
            store.put_model(found.model_copy(update={"routes": routes}))
            print_json(describe(model(args.model)))
        case "multiplier":
            found = model(args.model)
            if not any(r.name == args.route for r in found.routes):
                raise NotFound(f"No route '{args.route}' on '{args.model}'")
            routes = [
                RouteSpec.model_validate({**r.model_dump(), "multiplier": args.multiplier})
                if r.name == args.route
                else r
                for r in found.routes
            ]
            store.put_model(found.model_copy(update={"routes": routes}))
            print_json(describe(model(args.model)))
