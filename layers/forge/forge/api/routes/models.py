"""GET /v1/models: the catalog with prices after the multiplier, route type and bucket."""

from __future__ import annotations

from fastapi import APIRouter

from forge.api.deps import GatewayDep, KeyDep
from forge.api.schemas import ModelCard, ModelList, ModelPrices
from forge.catalog import load_catalog
from forge.money import format_micros

router = APIRouter()


@router.get("/v1/models")
async def list_models(key: KeyDep, gateway: GatewayDep) -> ModelList:
    cards = []
    for model in load_catalog().available(gateway.provider_names):
        route = next((r for r in model.routes if r.route_type in key.route_types), None)
        if route is None:
            continue
        prices = route.effective_prices
        cards.append(
            ModelCard(
                id=model.id,
                description=model.description,
                route_type=route.route_type.value,
                bucket=route.bucket.value,
                prices=ModelPrices(
                    input=format_micros(prices.input),
                    cached_input=format_micros(prices.cached_input),
                    output=format_micros(prices.output),
                    currency=route.bucket.currency,
                ),
            )
        )
    return ModelList(data=cards)
