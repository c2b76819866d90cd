"""The model catalog: what a client may ask for, and the ordered routes that can serve it."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field

from forge.errors import ModelNotFound
from forge.money import Bucket, Prices, RouteType, price_to_micros


class CatalogPrices(BaseModel):
    """Prices as the operator writes them: decimal strings per 1M tokens, before the multiplier."""

    input: str
    cached_input: str
    output: str


class RouteSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    provider: str
    upstream_model: str
    route_type: RouteType
    prices: CatalogPrices
    multiplier: str = "1"
    max_output_tokens: int = Field(default=4096, gt=0)

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.upstream_model}"

    @property
    def bucket(self) -> Bucket:
        return self.route_type.bucket

    @property
    def effective_prices(self) -> Prices:
        """Prices in micro-units of the route's bucket per 1M tokens, multiplier applied."""
        p = self.prices
        return Prices(
            input=price_to_micros(p.input, self.multiplier),
            cached_input=price_to_micros(p.cached_input, self.multiplier),
            output=price_to_micros(p.output, self.multiplier),
        )


class CatalogModel(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    description: str = ""
    routes: list[RouteSpec] = Field(min_length=1)


class Catalog(BaseModel):
    models: list[CatalogModel]

    def resolve(self, model_id: str, providers: frozenset[str]) -> CatalogModel:
        """The model with only the routes whose provider is configured in this deployment."""
        for model in self.models:
            if model.id == model_id:
                routes = [r for r in model.routes if r.provider in providers]
                if routes:
                    return model.model_copy(update={"routes": routes})
        raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")

    def available(self, providers: frozenset[str]) -> list[CatalogModel]:
        return [
            model.model_copy(
                update={"routes": [r for r in model.routes if r.provider in providers]}
            )
            for model in self.models
            if any(r.provider in providers for r in model.routes)
        ]


@cache
def load_catalog() -> Catalog:
    """The catalog file shipped with the package."""
    text = resources.files("forge").joinpath("catalog.json").read_text(encoding="utf-8")
    return Catalog.model_validate(json.loads(text))
