"""GET /v1/models and /v1/models/{id}: the catalog with prices after the multiplier, route
type and bucket, as far as this deployment offers it and the caller's key may use it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from forge.api.deps import GatewayDep, KeyDep
from forge.api.schemas import ModelCard, ModelList, ModelPrices, ModelRoute
from forge.domain.catalog import CatalogModel, RouteSpec
from forge.domain.errors import ModelNotFound
from forge.domain.money import format_micros
from forge.domain.records import ApiKey

router = APIRouter()


def _prices(route: RouteSpec) -> ModelPrices:
    prices = route.effective_prices
    return ModelPrices(
        input=format_micros(prices.input),
        cached_input=format_micros(prices.cached_input),
        output=format_micros(prices.output),
        currency=route.bucket.currency,
    )


def _card(model: CatalogModel, key: ApiKey) -> ModelCard | None:
    """The model as `key` sees it, priced at its first route (the one that serves unless it
    fails); None when the key may use none of its routes."""
    routes = [r for r in model.routes if r.route_type in key.route_types]
    if not routes or not key.allows_model(model.id):
        return None
    first = routes[0]
    return ModelCard(
        id=model.id,
        description=model.description,
        mode=model.mode,
        route_type=first.route_type.value,
        bucket=first.bucket.value,
        prices=_prices(first),
        routes=[
            ModelRoute(
                provider=r.provider,
                upstream_model=r.upstream_model,
                route_type=r.route_type.value,
                bucket=r.bucket.value,
                prices=_prices(r),
            )
            for r in routes
        ],
    )


@router.get("/v1/models")
async def list_models(key: KeyDep, gateway: GatewayDep) -> ModelList:
    """Each model the key may call; `routes` lists every route the key may use, in fallback
    order."""
    models = (await gateway.catalog()).available(await gateway.offered_providers())
    return ModelList(data=[card for model in models if (card := _card(model, key)) is not None])


@router.get("/v1/models/{model_id}")
async def retrieve_model(
    model_id: Annotated[str, Path(min_length=1, max_length=200)],
    key: KeyDep,
    gateway: GatewayDep,
) -> ModelCard:
    """One model as /v1/models lists it; 404 `model_not_found` when the catalog has no such
    model, no provider of its routes is offered here, or the key may not use it (its model scope
    or route types)."""
    catalog = await gateway.catalog()
    card = _card(catalog.resolve(model_id, await gateway.offered_providers()), key)
    if card is None:
        raise ModelNotFound(f"The model '{model_id}' is not available to this key", param="model")
    return card
