"""Planning a paid call without I/O: the input bound, the routes, each route's terms and hold."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from forge.domain.catalog import CatalogModel, RouteSpec, TokenLimitParam
from forge.domain.envelopes import affordable_output_tokens, envelopes_for, request_limit
from forge.domain.errors import (
    BudgetExceeded,
    InvalidParameterCombination,
    InvalidRequest,
    ModelNotAllowed,
    ScopeDenied,
)
from forge.domain.money import Prices, format_micros, token_cost
from forge.domain.records import ApiKey, Attempt, Hold, ProjectCaps, Receipt
from forge.domain.requests import ChatCompletionRequest, EmbeddingsRequest

MIN_OUTPUT_TOKENS = 16  # below this a budget-sized answer is useless: refuse instead
# Providers add a hidden prompt when tools are offered (Anthropic documents a few hundred
# tokens); the input bound adds this much so the hold still covers the worst case.
TOOL_PROMPT_TOKENS = 1024

CallRequest = ChatCompletionRequest | EmbeddingsRequest
Rooms = dict[str, tuple[int, int]]  # envelope name -> (limit, what is left)


def worst_case_input_tokens(request: CallRequest) -> int:
    """An upper bound on prompt tokens: byte-level tokenizers never emit more tokens than the
    UTF-8 bytes they read, and the JSON framing covers each message's role overhead."""
    if isinstance(request, EmbeddingsRequest):
        return len(json.dumps(request.input, ensure_ascii=False).encode("utf-8"))
    body = request.model_dump(exclude_none=True)
    payload = body["messages"]
    # Tool definitions and a structured output's schema are prompt tokens too.
    extras = {k: body[k] for k in _PROMPT_FIELDS if k in body}
    bound = len(json.dumps([payload, extras], ensure_ascii=False).encode("utf-8"))
    tools = "tools" in extras or "functions" in extras
    return bound + (TOOL_PROMPT_TOKENS if tools else 0)


_PROMPT_FIELDS = ("tools", "functions", "tool_choice", "response_format")


def estimated_input_tokens(request: CallRequest) -> int:
    """The documented estimate used when an upstream never reported usage: 4 bytes a token."""
    return -(-worst_case_input_tokens(request) // 4)


@dataclass(frozen=True)
class RequestLimits:
    """What the client asked of its own budget, from headers (may only lower the key's)."""

    run_id: str | None = None
    run_budget: int | None = None
    max_charge: int | None = None


@dataclass
class Binding:
    """One route's terms for a call: its price, the hold in its bucket, the upstream body."""

    route: RouteSpec
    prices: Prices
    hold: Hold
    body: dict[str, Any]
    input_cost: int
    max_output: int = 0
    limit_param: TokenLimitParam = "max_tokens"  # the field the upstream takes the limit in

    def set_max_output(self, tokens: int) -> None:
        """Size the hold for `tokens` of output and make sure the upstream stops there: the
        limit goes upstream in the one field the route takes (never both: OpenAI refuses
        that, and its reasoning models refuse max_tokens)."""
        self.max_output = tokens
        self.hold.amount = self.input_cost + token_cost(tokens, self.prices.output)
        if "messages" in self.body:
            self.body.pop("max_tokens", None)
            self.body.pop("max_completion_tokens", None)
            self.body[self.limit_param] = tokens


@dataclass
class CallPlan:
    request_id: str
    key: ApiKey
    request: CallRequest
    model: CatalogModel
    binding: Binding
    limits: RequestLimits
    fallbacks: list[RouteSpec] = field(default_factory=list)  # allowed routes not tried yet
    refused: list[RouteSpec] = field(default_factory=list)  # routes the key may not use
    attempts: list[Attempt] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    route_calls: int = 0  # calls made to the current route
    cache_write_tokens: int = 0
    closed: bool = False  # the hold is resolved (or its outcome recorded) and the receipt kept
    finished: bool = False  # a stream ran to its end (not cut, not disconnected)

    @property
    def route(self) -> RouteSpec:
        return self.binding.route

    @property
    def prices(self) -> Prices:
        return self.binding.prices

    @property
    def hold(self) -> Hold:
        return self.binding.hold

    @property
    def upstream_body(self) -> dict[str, Any]:
        return self.binding.body

    @property
    def input_cost(self) -> int:
        return self.binding.input_cost

    @property
    def max_output(self) -> int:
        return self.binding.max_output

    def set_max_output(self, tokens: int) -> None:
        self.binding.set_max_output(tokens)

    @property
    def route_providers(self) -> dict[str, str]:
        """Each route's provider, by route name (what a receipt's attempts name)."""
        return {route.name: route.provider for route in self.model.routes}

    @property
    def run_id(self) -> str | None:
        return self.limits.run_id

    @property
    def stream(self) -> bool:
        return isinstance(self.request, ChatCompletionRequest) and self.request.stream

    @property
    def calls(self) -> int:
        """Upstream calls made so far (routes skipped as unhealthy are not calls)."""
        return sum(1 for a in self.attempts if a.outcome != "skipped")

    @property
    def include_usage(self) -> bool:
        """Whether the client asked for the usage chunk (`stream_options.include_usage`).
        OpenAI sends it only then: its `choices` is empty, which breaks the common loop over
        `chunk.choices[0]` of a client that did not ask."""
        if not isinstance(self.request, ChatCompletionRequest):
            return False
        options = self.request.stream_options
        return options is not None and options.include_usage is True

    def receipt(self, status: str, **values: Any) -> Receipt:
        return Receipt.model_validate(
            {
                "request_id": self.request_id,
                "account_id": self.key.account_id,
                "key_id": self.key.key_id,
                "project_id": self.key.project_id,
                "run_id": self.run_id,
                "requested_model": self.request.model,
                "stream": self.stream,
                "status": status,
                "attempts": self.attempts,
                "final_route": self.route.name,
                "route_type": self.route.route_type,
                "upstream_model": self.route.upstream_model,
                "prices": self.prices,
                "hold": self.hold.amount,
                "bucket": self.hold.bucket,
                "cache_write_input_tokens": self.cache_write_tokens,
                "note": join_notes(*self.notes, values.pop("note", None)) or None,
                **values,
            }
        )


@dataclass(frozen=True)
class Routes:
    """The model's routes for this key: in the order to try them, and those left out."""

    ordered: list[RouteSpec]  # the healthy ones, or all the key may use if none is healthy
    skipped: list[RouteSpec]  # allowed but failing repeatedly
    refused: list[RouteSpec]  # the key may not use them
    all_failing: bool


def choose_routes(
    model: CatalogModel, request: CallRequest, key: ApiKey, healthy: Callable[[str], bool]
) -> Routes:
    """The routes the key may use for this request, healthy ones first in the catalog's order."""
    mode = "embeddings" if isinstance(request, EmbeddingsRequest) else "chat"
    if model.mode != mode:
        endpoint = "embeddings" if model.mode == "embeddings" else "chat/completions"
        kind = "an embeddings" if model.mode == "embeddings" else "a chat"
        raise InvalidRequest(f"'{model.id}' is {kind} model; call /v1/{endpoint}", param="model")
    if not key.allows_model(model.id):
        raise ModelNotAllowed(f"This key may not use the model '{model.id}'", param="model")
    allowed = [r for r in model.routes if r.route_type in key.route_types]
    if not allowed:
        raise ScopeDenied(
            f"This key may not use {model.routes[0].route_type.value} routes",
            param="model",
        )
    healthy_routes = [r for r in allowed if healthy(r.name)]
    skipped = [r for r in allowed if r not in healthy_routes] if healthy_routes else []
    return Routes(
        ordered=healthy_routes or allowed,
        skipped=skipped,
        refused=[r for r in model.routes if r not in allowed],
        all_failing=not healthy_routes,
    )


def open_hold(
    key: ApiKey,
    request: CallRequest,
    request_id: str,
    limits: RequestLimits,
    route: RouteSpec,
    expires_at: datetime,
) -> Hold:
    """The call's hold before it is sized: in the first route's bucket, nothing held yet."""
    return Hold(
        request_id=request_id,
        account_id=key.account_id,
        key_id=key.key_id,
        project_id=key.project_id,
        requested_model=request.model,
        run_id=limits.run_id,
        bucket=route.bucket,
        amount=0,
        expires_at=expires_at,
    )


def bind(
    key: ApiKey,
    request: CallRequest,
    route: RouteSpec,
    hold: Hold,
    limits: RequestLimits,
    project: ProjectCaps,
    now: datetime,
) -> Binding:
    """`route`'s terms: its prices, a hold in its bucket against that bucket's envelopes
    (same request id and expiry as `hold`), and an output limit the hold pays for."""
    prices = route.effective_prices
    body = request.model_dump(exclude_none=True)
    body["model"] = route.upstream_model
    body.pop("stream_options", None)
    moved = hold.model_copy(
        update={
            "bucket": route.bucket,
            "amount": 0,
            "envelopes": envelopes_for(
                key, project, route.bucket, now, limits.run_id, limits.run_budget
            ),
        }
    )
    input_cost = token_cost(worst_case_input_tokens(request), prices.input)
    binding = Binding(
        route, prices, moved, body, input_cost, limit_param=limit_param(route, request)
    )
    if isinstance(request, EmbeddingsRequest):
        binding.set_max_output(0)
        cap = request_limit(key, route.bucket, limits.max_charge)
        if cap is not None and binding.hold.amount > cap:
            raise _refusal("request", cap, cap, binding)
        return binding
    # The upstream must never be able to produce more than the hold pays for.
    requested = requested_output(request)
    ceiling = min(requested or route.max_output_tokens, route.max_output_tokens)
    request_cap = request_limit(key, route.bucket, limits.max_charge)
    if request_cap is not None:
        ceiling = min(ceiling, _fit(binding, "request", request_cap, request_cap))
    binding.set_max_output(ceiling)
    return binding


def new_plan(
    request_id: str,
    key: ApiKey,
    request: CallRequest,
    model: CatalogModel,
    binding: Binding,
    limits: RequestLimits,
    routes: Routes,
) -> CallPlan:
    """The plan for a call bound to its first route, with the routes it skipped on record."""
    plan = CallPlan(
        request_id,
        key,
        request,
        model,
        binding,
        limits,
        fallbacks=routes.ordered[1:],
        refused=routes.refused,
    )
    for route in routes.skipped:
        plan.attempts.append(
            Attempt(
                route=route.name,
                upstream_model=route.upstream_model,
                status=None,
                latency_ms=0,
                outcome="skipped",
                reason="failing repeatedly; skipped for a while",
                route_type=route.route_type,
                bucket=route.bucket,
            )
        )
    if routes.all_failing:
        plan.notes.append("every route was failing; tried them anyway")
    requested = requested_output(request)
    if requested is not None and binding.max_output < requested:
        plan.notes.append(f"max_tokens lowered from {requested} to {binding.max_output} by request")
    return plan


def resize(binding: Binding, rooms: Rooms) -> int:
    """The output a refused hold can still pay for, or the refusal if it is too little
    (or no less than what was refused)."""
    tightest = tightest_envelope(rooms)
    if binding.max_output == 0:  # embeddings: nothing to resize
        raise _refusal(tightest, *rooms[tightest], binding)
    tokens = _fit(binding, tightest, *rooms[tightest])
    if tokens >= binding.max_output:
        raise _refusal(tightest, *rooms[tightest], binding)
    return tokens


def rooms_beside(current: Hold, moved: Hold, rooms: Rooms) -> Rooms:
    """What is left for `moved`, counting `current` as not spent where they share a bucket."""
    if moved.bucket is not current.bucket:
        return rooms
    shared = {e.name for e in current.envelopes} | {f"bucket:{current.bucket}"}
    return {
        name: (limit, left + current.amount if name in shared else left)
        for name, (limit, left) in rooms.items()
    }


def tightest_envelope(rooms: Rooms) -> str:
    return min(rooms, key=lambda name: rooms[name][1])


def requested_output(request: CallRequest) -> int | None:
    """The output limit the client asked for, in either field. Both with different values
    is refused as OpenAI refuses it (400, param max_tokens): guessing which one was meant
    could hold, and let the model write, more than the client allowed. Both equal is one
    limit (clients that fill both fields from one setting are not refused for it)."""
    if isinstance(request, EmbeddingsRequest):
        return None
    legacy, limit = request.max_tokens, request.max_completion_tokens
    if legacy is not None and limit is not None and legacy != limit:
        raise InvalidParameterCombination(
            f"max_tokens ({legacy}) and max_completion_tokens ({limit}) differ: send one of"
            " them (max_completion_tokens, for every model)",
            param="max_tokens",
        )
    return limit or legacy


def limit_param(route: RouteSpec, request: CallRequest) -> TokenLimitParam:
    """The field the route's upstream takes the output limit in: the route's own when its
    catalog entry names one, else the one the client used (max_tokens if it sent none)."""
    if route.token_limit_param is not None:
        return route.token_limit_param
    if isinstance(request, ChatCompletionRequest) and request.max_completion_tokens is not None:
        return "max_completion_tokens"
    return "max_tokens"


def join_notes(*notes: str | None) -> str:
    return "; ".join(n for n in notes if n)


def _fit(binding: Binding, envelope: str, limit: int, room: int) -> int:
    """The output tokens `room` can pay for, or a refusal naming the envelope."""
    tokens = affordable_output_tokens(room, binding.input_cost, binding.prices.output)
    if tokens < MIN_OUTPUT_TOKENS:
        raise _refusal(envelope, limit, room, binding)
    return tokens


def _smallest_hold(binding: Binding) -> int:
    """The least this call can run with: its input bound and MIN_OUTPUT_TOKENS of output
    (embeddings have no output to shrink)."""
    if "messages" not in binding.body:
        return binding.hold.amount
    return binding.input_cost + token_cost(MIN_OUTPUT_TOKENS, binding.prices.output)


def _refusal(envelope: str, limit: int, room: int, binding: Binding) -> BudgetExceeded:
    bucket = binding.hold.bucket
    requested = _smallest_hold(binding)
    return BudgetExceeded(
        f"The {envelope} budget leaves {format_micros(room)} {bucket.currency}: not enough"
        f" for this call's smallest hold ({format_micros(requested)}: this prompt and"
        f" {MIN_OUTPUT_TOKENS} output tokens on {binding.route.name})",
        envelope=envelope,
        limit=format_micros(limit),
        remaining=format_micros(room),
        requested=format_micros(requested),
    )
