"""The model catalog: what a client may ask for, and the ordered routes that can serve it.

Operators keep the catalog in the budget table (`forge-admin catalog ...`), seeded from the
file shipped with the package; each container reads it at most once per TTL.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from forge.domain.errors import BudgetStoreUnavailable, ModelNotFound
from forge.domain.money import Bucket, Prices, RouteType, decimal_to_micros, price_to_micros

logger = logging.getLogger(__name__)
TokenLimitParam = Literal["max_tokens", "max_completion_tokens"]


class CatalogPrices(BaseModel):
    """Prices as the operator writes them: decimal strings per 1M tokens, before the multiplier."""

    model_config = ConfigDict(frozen=True)

    input: str
    cached_input: str
    output: str

    @field_validator("input", "cached_input", "output")
    @classmethod
    def _decimal(cls, value: str) -> str:
        if decimal_to_micros(value) < 0:
            raise ValueError("prices cannot be negative")
        return value


class RouteSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    provider: str = Field(min_length=1)
    upstream_model: str = Field(min_length=1)
    route_type: RouteType
    prices: CatalogPrices
    multiplier: str = "1"
    max_output_tokens: int = Field(default=4096, gt=0)
    # The field an OpenAI(-compatible) upstream takes its output limit in. None (the
    # default): the one the client used, max_tokens if it sent none. OpenAI's reasoning
    # models (o1, o3, o4, gpt-5...) refuse max_tokens: their routes say max_completion_tokens.
    # Anthropic and Gemini routes always get their own field (max_tokens, maxOutputTokens).
    token_limit_param: TokenLimitParam | None = None

    @field_validator("multiplier")
    @classmethod
    def _positive(cls, value: str) -> str:
        if decimal_to_micros(value) <= 0:
            raise ValueError("the multiplier must be positive")
        return value

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

    id: str = Field(min_length=1, max_length=200)
    description: str = ""
    mode: Literal["chat", "embeddings"] = "chat"
    routes: list[RouteSpec] = Field(min_length=1)


class Catalog(BaseModel):
    models: list[CatalogModel]

    def find(self, model_id: str) -> CatalogModel | None:
        return next((m for m in self.models if m.id == model_id), None)

    def resolve(self, model_id: str, providers: frozenset[str]) -> CatalogModel:
        """The model with only the routes whose provider is configured in this deployment."""
        model = self.find(model_id)
        if model is None:
            raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")
        routes = [r for r in model.routes if r.provider in providers]
        if not routes:
            # Still 404 model_not_found (clients handle it), but saying why: an operator who
            # has not set the provider's key yet should not be told the model does not exist.
            needed = ", ".join(sorted({r.provider for r in model.routes}))
            raise ModelNotFound(
                f"The model '{model_id}' is not available: no provider of its routes"
                f" ({needed}) is configured in this deployment",
                param="model",
            )
        return model.model_copy(update={"routes": routes})

    def available(self, providers: frozenset[str]) -> list[CatalogModel]:
        return [
            model.model_copy(
                update={"routes": [r for r in model.routes if r.provider in providers]}
            )
            for model in self.models
            if any(r.provider in providers for r in model.routes)
        ]


def parse_catalog(text: str) -> Catalog:
    return Catalog.model_validate(json.loads(text))


@cache
def load_catalog() -> Catalog:
    """The catalog file shipped with the package (the seed, and the catalog until seeded)."""
    text = resources.files("forge.domain").joinpath("catalog.json").read_text(encoding="utf-8")
    return parse_catalog(text)


def read_catalog_file(path: Path | None) -> Catalog:
    return parse_catalog(path.read_text(encoding="utf-8")) if path else load_catalog()


class CatalogReader(Protocol):
    def read_catalog(self) -> Catalog | None:
        """The stored catalog, or None when none was ever seeded."""


class CatalogSource:
    """The catalog as this container sees it: re-read at most every `ttl` seconds (no extra
    round trip per request), the shipped file until an operator seeds the table, and the last
    good copy when a refresh fails (a catalog outage never changes prices by itself)."""

    def __init__(
        self,
        reader: CatalogReader | None,
        *,
        ttl_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._ttl = ttl_seconds
        self._clock = clock
        self._cached: tuple[float, Catalog] | None = None

    @classmethod
    def fixed(cls, catalog: Catalog) -> CatalogSource:
        source = cls(None, ttl_seconds=float("inf"))
        source._cached = (0.0, catalog)
        return source

    @property
    def fresh(self) -> bool:
        return self._cached is not None and self._clock() - self._cached[0] < self._ttl

    def current(self) -> Catalog:
        """Blocking (the store read): call it off the event loop when it is not fresh."""
        if self._cached is not None and (self._reader is None or self.fresh):
            return self._cached[1]
        assert self._reader is not None
        try:
            stored = self._reader.read_catalog()
        except BudgetStoreUnavailable:
            if self._cached is None:
                raise
            logger.warning("catalog_refresh_failed")
            return self._cached[1]
        catalog = stored if stored is not None else load_catalog()
        self._cached = (self._clock(), catalog)
        return catalog
