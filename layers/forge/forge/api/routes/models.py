"""GET /v1/models: the catalog with prices after the multiplier, route type and bucket."""

from __future__ import annotations

from fastapi import APIRouter

from forge.api.deps import GatewayDep, KeyDep
from forge.api.schemas import ModelCard, ModelList, ModelPrices, ModelRoute
from forge.domain.catalog import RouteSpec
from forge.domain.money import format_micros

router = APIRouter()


def _prices(route: RouteSpec) -> ModelPrices:
    prices = route.effective_prices
    return ModelPrices(
        input=format_micros(prices.input),
        cached_input=format_micros(prices.cached_input),
        output=format_micros(prices.output),
        currency=route.bucket.currency,
    )


@router.get("/v1/models")
async def list_models(key: KeyDep, gateway: GatewayDep) -> ModelList:
    """Each model the key may call, priced at its first route (the one that serves unless it
    fails); `routes` lists every route the key may use, in fallback order."""
    cards = []
    for model in (await gateway.catalog()).available(await gateway.offered_providers()):
        routes = [r for r in model.routes if r.route_type in key.route_types]
        if not routes:
            continue
        first = routes[0]
        cards.append(
            ModelCard(
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
        )
    return ModelList(data=cards)
