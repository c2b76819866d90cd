"""The gateway: authenticate, plan, reserve, call upstream (retrying, falling back), settle.
Transport-agnostic: the API layer turns its results into HTTP, adapters do the I/O.

Money rules kept here: the hold is sized at the serving route's price in that route's bucket;
before a fallback route is called the hold is moved to its price and bucket (one transaction,
same conditions as a reservation); a charge never exceeds the hold; a stream is stopped when
its running cost reaches the hold; a call no route served charges nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, Generic, Literal, TypeVar, cast

import anyio

from forge.domain.catalog import Catalog, CatalogModel, CatalogSource, RouteSpec
from forge.domain.envelopes import affordable_output_tokens, envelopes_for, request_limit
from forge.domain.errors import (
    BudgetExceeded,
    BudgetStoreUnavailable,
    FallbackNotAllowed,
    ForgeError,
    HoldAlreadyResolved,
    InternalError,
    InvalidApiKey,
    InvalidRequest,
    ScopeDenied,
    UpstreamUnavailable,
)
from forge.domain.ids import hash_api_key
from forge.domain.money import Bucket, Prices, Usage, charge_for, format_micros, token_cost
from forge.domain.records import (
    ApiKey,
    Attempt,
    Hold,
    HoldOutcome,
    KeyStatus,
    ProjectCaps,
    Receipt,
    utcnow,
)
from forge.domain.requests import ChatCompletionRequest, EmbeddingsRequest
from forge.domain.routing import RetryPolicy, RouteHealth, jitter, rejected
from forge.domain.upstream import (
    ChatProvider,
    ChatStream,
    Completion,
    FailureKind,
    StreamState,
    UpstreamError,
    openai_usage,
)
from forge.store.dynamo.store import DynamoStore

logger = logging.getLogger(__name__)
T = TypeVar("T")
V = TypeVar("V")
_KEY_CACHE_SECONDS = 10.0  # a paused or revoked key stops working within this long
MIN_OUTPUT_TOKENS = 16  # below this a budget-sized answer is useless: refuse instead
# Providers add a hidden prompt when tools are offered (Anthropic documents a few hundred
# tokens); the input bound adds this much so the hold still covers the worst case.
TOOL_PROMPT_TOKENS = 1024

CallRequest = ChatCompletionRequest | EmbeddingsRequest


def worst_case_input_tokens(request: CallRequest) -> int:
    """An upper bound on prompt tokens: byte-level tokenizers never emit more tokens than the
    UTF-8 bytes they read, and the JSON framing covers each message's role overhead."""
    if isinstance(request, EmbeddingsRequest):
        return len(json.dumps(request.input, ensure_ascii=False).encode("utf-8"))
    payload = [m.model_dump(exclude_none=True) for m in request.messages]
    extras = {k: v for k, v in (request.model_extra or {}).items() if k in ("tools", "functions")}
    bound = len(json.dumps([payload, extras], ensure_ascii=False).encode("utf-8"))
    return bound + (TOOL_PROMPT_TOKENS if extras else 0)


def estimated_input_tokens(request: CallRequest) -> int:
    """The documented estimate used when an upstream never reported usage: 4 bytes a token."""
    return -(-worst_case_input_tokens(request) // 4)


class TtlCache(Generic[V]):
    """Values remembered per container for `seconds` (key and project lookups)."""

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self._seconds = seconds
        self._clock = clock
        self._entries: dict[str, tuple[float, V]] = {}

    def get(self, key: str) -> V | None:
        entry = self._entries.get(key)
        if entry is None or self._clock() - entry[0] >= self._seconds:
            return None
        return entry[1]

    def put(self, key: str, value: V) -> None:
        self._entries[key] = (self._clock(), value)


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

    def set_max_output(self, tokens: int) -> None:
        """Size the hold for `tokens` of output and make sure the upstream stops there."""
        self.max_output = tokens
        self.hold.amount = self.input_cost + token_cost(tokens, self.prices.output)
        if "messages" in self.body:
            self.body.pop("max_completion_tokens", None)
            self.body["max_tokens"] = tokens


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
        """OpenAI sends the usage chunk when asked; we send it unless explicitly declined."""
        if not isinstance(self.request, ChatCompletionRequest):
            return False
        options = self.request.stream_options
        return options is None or options.include_usage is not False

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
                "note": _join(*self.notes, values.pop("note", None)) or None,
                **values,
            }
        )


@dataclass
class StreamItem:
    """What a relayed stream produces: an OpenAI chunk, the end (the usage chunk with the
    receipt), or an error event after the first byte (with the receipt of what was charged)."""

    kind: Literal["chunk", "end", "error"]
    payload: dict[str, Any]
    receipt: Receipt | None = None


@dataclass
class Completed(Generic[T]):
    """A non-streamed call, served and settled: the answer as rendered before the charge."""

    plan: CallPlan
    answer: T
    receipt: Receipt


@dataclass
class StreamResult:
    plan: CallPlan
    items: AsyncGenerator[StreamItem, None]


class Gateway:
    def __init__(
        self,
        store: DynamoStore,
        providers: Mapping[str, ChatProvider],
        catalog: Catalog | CatalogSource,
        *,
        hold_ttl_seconds: int,
        clock: Callable[[], float] = time.monotonic,
        retry: RetryPolicy | None = None,
        health: RouteHealth | None = None,
        sleep: Callable[[float], Any] = anyio.sleep,
        rand: Callable[[], float] = jitter,
    ) -> None:
        self._store = store
        self._providers = providers
        self._catalog = (
            catalog if isinstance(catalog, CatalogSource) else CatalogSource.fixed(catalog)
        )
        self._hold_ttl = timedelta(seconds=hold_ttl_seconds)
        self._clock = clock
        self._retry = retry or RetryPolicy()
        self.health = health or RouteHealth()
        self._sleep = sleep
        self._rand = rand
        # A paused or revoked key, or a changed project cap, applies within this long.
        self._keys: TtlCache[ApiKey] = TtlCache(_KEY_CACHE_SECONDS, clock)
        self._project_caps_cache: TtlCache[dict[Bucket, ProjectCaps]] = TtlCache(
            _KEY_CACHE_SECONDS, clock
        )

    @property
    def provider_names(self) -> frozenset[str]:
        return frozenset(self._providers)

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call off the event loop."""
        return await anyio.to_thread.run_sync(partial(fn, *args))

    async def catalog(self) -> Catalog:
        """The catalog, re-read from the store at most once per TTL per container."""
        if self._catalog.fresh:
            return self._catalog.current()
        return await self._io(self._catalog.current)

    async def authenticate(self, authorization: str | None) -> ApiKey:
        if not authorization or not authorization.startswith("Bearer "):
            raise InvalidApiKey("Missing API key: send 'Authorization: Bearer <key>'")
        return await self.authenticate_key(authorization.removeprefix("Bearer ").strip())

    async def authenticate_key(self, plaintext: str) -> ApiKey:
        key_hash = hash_api_key(plaintext)
        key = self._keys.get(key_hash)
        if key is None:
            key = await self._io(self._store.get_api_key, key_hash)
            if key is not None:
                self._keys.put(key_hash, key)
        if key is None or key.status is not KeyStatus.ACTIVE:
            raise InvalidApiKey("Incorrect, paused or revoked API key")
        return key

    # One paid call ------------------------------------------------------------------------
    async def serve(
        self,
        key: ApiKey,
        request: CallRequest,
        request_id: str,
        limits: RequestLimits,
        render: Callable[[Completion], T],
    ) -> Completed[T] | StreamResult:
        """Plan, reserve and call, inside one guarded boundary: a refusal leaves a receipt, and
        any exception after the reservation resolves the hold and writes a `failed` receipt
        before it propagates. A non-streamed answer is rendered by `render` before it is
        charged, so an answer that cannot be sent is never paid for."""
        plan: CallPlan | None = None
        try:
            plan = await self.plan(key, request, request_id, limits)
            await self.reserve(plan)
        except ForgeError as exc:
            await self._record_refusal(key, request, request_id, limits, plan, exc)
            raise
        try:
            if plan.stream:
                return await self.open_stream(plan)
            answer, receipt = await self._complete(plan, render)
            return Completed(plan, answer, receipt)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                contained = await self._contain(plan, exc)
            if contained is exc:
                raise
            raise contained from exc

    async def _record_refusal(
        self,
        key: ApiKey,
        request: CallRequest,
        request_id: str,
        limits: RequestLimits,
        plan: CallPlan | None,
        error: ForgeError,
    ) -> None:
        """A receipt for a request refused before it was served (no route, scope, budget, or
        a store that failed during the reservation)."""
        if plan is not None and isinstance(error, BudgetStoreUnavailable):
            # The reservation's answer was lost, not necessarily its write: void what may
            # have been held (a hold that does not exist is 'already resolved').
            with contextlib.suppress(BudgetStoreUnavailable, HoldAlreadyResolved):
                await self._void(plan, error.code, error.message)
        if plan is not None:
            if not plan.closed:
                await self.record_refusal(plan, error)
            return
        receipt = Receipt(
            request_id=request_id,
            account_id=key.account_id,
            key_id=key.key_id,
            project_id=key.project_id,
            run_id=limits.run_id,
            requested_model=request.model,
            stream=isinstance(request, ChatCompletionRequest) and request.stream,
            status="failed",
            error_code=error.code,
            note=error.message,
        )
        await self._put_receipt(receipt)

    async def _contain(self, plan: CallPlan, exc: BaseException) -> BaseException:
        """After the reservation, whatever failed: void the hold (nothing was delivered) with a
        `failed` receipt, unless it was already resolved. Returns the error to answer with."""
        if isinstance(exc, ForgeError):
            code, note = exc.code, exc.message
        else:
            code, note = InternalError.code, f"internal error ({type(exc).__name__})"
            logger.exception("paid_call_failed", extra={"request_id": plan.request_id})
        if not plan.closed:
            try:
                await self._void(plan, code, note)
            except HoldAlreadyResolved:
                plan.closed = True
            except Exception:
                # The store is failing too: the hold expires and the sweeper voids it.
                logger.exception("hold_not_released", extra={"request_id": plan.request_id})
        if isinstance(exc, ForgeError) or not isinstance(exc, Exception):
            return exc  # ours, or a cancellation
        return InternalError(
            "Internal error; the hold was released and nothing was charged",
            request_id=plan.request_id,
        )

    # Planning ------------------------------------------------------------------------------
    async def plan(
        self, key: ApiKey, request: CallRequest, request_id: str, limits: RequestLimits
    ) -> CallPlan:
        """Choose the route and size the hold at that route's price, in that route's bucket,
        against every envelope that applies."""
        model = (await self.catalog()).resolve(request.model, self.provider_names)
        mode = "embeddings" if isinstance(request, EmbeddingsRequest) else "chat"
        if model.mode != mode:
            endpoint = "embeddings" if model.mode == "embeddings" else "chat/completions"
            kind = "an embeddings" if model.mode == "embeddings" else "a chat"
            raise InvalidRequest(
                f"'{model.id}' is {kind} model; call /v1/{endpoint}", param="model"
            )
        allowed = [r for r in model.routes if r.route_type in key.route_types]
        if not allowed:
            raise ScopeDenied(
                f"This key may not use {model.routes[0].route_type.value} routes",
                param="model",
            )
        healthy = [r for r in allowed if self.health.healthy(r.name)]
        skipped = [r for r in allowed if r not in healthy] if healthy else []
        ordered = healthy or allowed
        hold = Hold(
            request_id=request_id,
            account_id=key.account_id,
            key_id=key.key_id,
            project_id=key.project_id,
            requested_model=request.model,
            run_id=limits.run_id,
            bucket=ordered[0].bucket,
            amount=0,
            expires_at=utcnow() + self._hold_ttl,
        )
        binding = await self._bind(key, request, ordered[0], hold, limits)
        plan = CallPlan(
            request_id,
            key,
            request,
            model,
            binding,
            limits,
            fallbacks=ordered[1:],
            refused=[r for r in model.routes if r not in allowed],
        )
        for route in skipped:
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
        if not healthy:
            plan.notes.append("every route was failing; tried them anyway")
        requested = _requested_output(request)
        if requested is not None and binding.max_output < requested:
            plan.notes.append(
                f"max_tokens lowered from {requested} to {binding.max_output} by request"
            )
        return plan

    async def _bind(
        self, key: ApiKey, request: CallRequest, route: RouteSpec, hold: Hold, limits: RequestLimits
    ) -> Binding:
        """`route`'s terms: its prices, a hold in its bucket against that bucket's envelopes
        (same request id and expiry as `hold`), and an output limit the hold pays for."""
        prices = route.effective_prices
        project = (await self._project_caps(key)).get(route.bucket) or ProjectCaps()
        body = request.model_dump(exclude_none=True)
        body["model"] = route.upstream_model
        body.pop("stream_options", None)
        now = utcnow()
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
        binding = Binding(route, prices, moved, body, input_cost)
        if isinstance(request, EmbeddingsRequest):
            binding.set_max_output(0)
            cap = request_limit(key, route.bucket, limits.max_charge)
            if cap is not None and binding.hold.amount > cap:
                raise _refusal("request", cap, cap, binding)
            return binding
        # The upstream must never be able to produce more than the hold pays for.
        requested = _requested_output(request)
        ceiling = min(requested or route.max_output_tokens, route.max_output_tokens)
        request_cap = request_limit(key, route.bucket, limits.max_charge)
        if request_cap is not None:
            ceiling = min(ceiling, _fit(binding, "request", request_cap, request_cap))
        binding.set_max_output(ceiling)
        return binding

    async def _project_caps(self, key: ApiKey) -> dict[Bucket, ProjectCaps]:
        cache_key = f"{key.account_id}#{key.project_id}"
        caps = self._project_caps_cache.get(cache_key)
        if caps is None:
            caps = await self._io(self._store.get_project_caps, key.account_id, key.project_id)
            self._project_caps_cache.put(cache_key, caps)
        return caps

    # Reserving -----------------------------------------------------------------------------
    async def reserve(self, plan: CallPlan) -> None:
        """Reserve the worst case. If an envelope is too small for it, size the output to what
        is left (never below MIN_OUTPUT_TOKENS) and try once more; else refuse with a 402."""
        try:
            try:
                await self._io(self._store.reserve, plan.hold)
                return
            except BudgetExceeded:
                rooms = await self._io(
                    self._store.rooms, plan.key.account_id, plan.hold.bucket, plan.hold.envelopes
                )
                tokens = self._resize(plan.binding, rooms)
                plan.notes.append(
                    f"max_tokens lowered from {plan.max_output} to {tokens} by {_tightest(rooms)}"
                )
                plan.set_max_output(tokens)
                await self._io(self._store.reserve, plan.hold)
        except BudgetExceeded as exc:
            await self.record_refusal(plan, exc)
            raise

    def _resize(self, binding: Binding, rooms: dict[str, tuple[int, int]]) -> int:
        """The output a refused hold can still pay for, or the refusal if it is too little
        (or no less than what was refused)."""
        tightest = _tightest(rooms)
        if binding.max_output == 0:  # embeddings: nothing to resize
            raise _refusal(tightest, *rooms[tightest], binding)
        tokens = _fit(binding, tightest, *rooms[tightest])
        if tokens >= binding.max_output:
            raise _refusal(tightest, *rooms[tightest], binding)
        return tokens

    async def record_refusal(self, plan: CallPlan, error: ForgeError) -> None:
        """A receipt for a request refused before any money was held."""
        receipt = plan.receipt("failed", error_code=error.code, hold=0, note=error.message)
        await self._put_receipt(receipt)
        plan.closed = True

    async def _put_receipt(self, receipt: Receipt) -> None:
        try:
            await self._io(self._store.put_receipt, receipt)
        except BudgetStoreUnavailable:
            logger.warning("receipt_not_written", extra={"request_id": receipt.request_id})

    async def _move_hold(self, plan: CallPlan, route: RouteSpec) -> None:
        """Re-reserve at the fallback route's price and in its bucket before calling it: the
        hold moves in one transaction, resized to what is left if it does not fit."""
        binding = await self._bind(plan.key, plan.request, route, plan.hold, plan.limits)
        note = None
        try:
            await self._io(self._store.rehold, plan.hold, binding.hold)
        except BudgetExceeded:
            # What is left, seen from the fallback's bucket and envelopes.
            rooms = await self._io(
                self._store.rooms, plan.key.account_id, binding.hold.bucket, binding.hold.envelopes
            )
            if binding.hold.bucket is plan.hold.bucket:  # our own hold is not spent: count it
                shared = {e.name for e in plan.hold.envelopes} | {f"bucket:{plan.hold.bucket}"}
                rooms = {
                    name: (limit, left + plan.hold.amount if name in shared else left)
                    for name, (limit, left) in rooms.items()
                }
            tokens = self._resize(binding, rooms)
            note = f"max_tokens lowered from {binding.max_output} to {tokens} by {_tightest(rooms)}"
            binding.set_max_output(tokens)
            await self._io(self._store.rehold, plan.hold, binding.hold)
        plan.binding = binding
        plan.route_calls = 0
        plan.notes.append(f"fell back to {route.name}")
        if note:
            plan.notes.append(note)

    # Calling -------------------------------------------------------------------------------
    def _provider(self, route: RouteSpec) -> ChatProvider:
        return self._providers[route.provider]

    def _record_attempt(
        self,
        plan: CallPlan,
        started: float,
        status: int | None,
        error: UpstreamError | None,
        action: str | None = None,
        wait: float | None = None,
    ) -> None:
        plan.attempts.append(
            Attempt.model_validate(
                {
                    "route": plan.route.name,
                    "upstream_model": plan.route.upstream_model,
                    "status": status,
                    "latency_ms": int((self._clock() - started) * 1000),
                    "outcome": "error" if error else "ok",
                    "reason": error.reason if error else None,
                    "route_type": plan.route.route_type,
                    "bucket": plan.hold.bucket,
                    "action": action,
                    "wait_ms": None if wait is None else int(wait * 1000),
                }
            )
        )

    async def _void(self, plan: CallPlan, error_code: str, note: str) -> Receipt:
        receipt = plan.receipt("failed", error_code=error_code, note=note)
        voided = await self._io(self._store.void, plan.hold, receipt)
        plan.closed = True
        return voided

    async def _after_failure(self, plan: CallPlan, started: float, exc: UpstreamError) -> None:
        """Decide what follows a failed call: retry the route (after a capped, jittered wait
        or the provider's Retry-After), fall back to the next route (re-reserving first), or
        end the request charging nothing. Returns when there is something to call next."""
        route = plan.route
        if exc.kind is FailureKind.CLIENT:
            self._record_attempt(plan, started, exc.status, exc, "return")
            detail = exc.message or exc.reason
            await self._void(plan, "upstream_rejected_request", f"{route.name}: {detail}")
            raise rejected(
                exc.status,
                f"The provider refused the request ({detail}); nothing was charged",
                upstream_status=exc.status,
                route=route.name,
            )
        self.health.failed(route.name)
        plan.route_calls += 1
        ceiling = plan.key.max_upstream_attempts or self._retry.max_attempts
        may_call = plan.calls + 1 < ceiling
        retry = self._retry
        if (
            exc.kind is FailureKind.RETRY
            and may_call
            and plan.route_calls < retry.attempts_per_route
            and retry.waits_for(exc.retry_after)
        ):
            wait = retry.delay(plan.route_calls - 1, exc.retry_after, self._rand)
            self._record_attempt(plan, started, exc.status, exc, "retry", wait)
            await self._sleep(wait)
            return
        if may_call and plan.fallbacks:
            self._record_attempt(plan, started, exc.status, exc, "fallback")
            try:
                await self._move_hold(plan, plan.fallbacks.pop(0))
            except (BudgetExceeded, BudgetStoreUnavailable) as refused:
                # The hold did not move: release it (or, if the store is down, let it expire).
                with contextlib.suppress(BudgetStoreUnavailable, HoldAlreadyResolved):
                    await self._void(plan, refused.code, f"fallback refused: {refused.message}")
                raise
            return
        self._record_attempt(plan, started, exc.status, exc, "give_up")
        position = plan.model.routes.index(plan.route)
        barred = [r for r in plan.model.routes[position + 1 :] if r in plan.refused]
        if may_call and barred:
            raise await self._fallback_not_allowed(plan, exc, barred[0])
        if not may_call:
            plan.notes.append(f"stopped after {plan.calls} upstream calls (the key's ceiling)")
        raise await self._fail(plan, exc)

    async def _fallback_not_allowed(
        self, plan: CallPlan, exc: UpstreamError, refused: RouteSpec
    ) -> ForgeError:
        message = (
            f"The route {plan.route.name} failed ({exc.reason}) and the next route,"
            f" {refused.name}, is a {refused.route_type.value} route paid from the"
            f" {refused.bucket.value} bucket, which this key may not use; nothing was charged"
        )
        await self._void(plan, FallbackNotAllowed.code, message)
        return FallbackNotAllowed(
            message,
            param="model",
            failed_route=plan.route.name,
            refused_route=refused.name,
            refused_route_type=refused.route_type.value,
            refused_bucket=refused.bucket.value,
        )

    async def _fail(self, plan: CallPlan, exc: UpstreamError) -> UpstreamUnavailable:
        """No route served the call: release the whole hold, charge nothing."""
        await self._void(plan, UpstreamUnavailable.code, exc.reason)
        return UpstreamUnavailable(
            f"The upstream for '{plan.request.model}' failed ({exc.reason}); nothing was charged",
            upstream_status=exc.status,
        )

    async def _settle(self, plan: CallPlan, usage: Usage, status: str, note: str | None) -> Receipt:
        """Charge actual usage (never more than the hold) and write ledger entry + receipt."""
        cost = charge_for(usage, plan.prices)
        charge = min(cost, plan.hold.amount)
        if cost > charge:
            note = _join(note, f"usage cost {cost} exceeded the hold; charged the hold")
        receipt = plan.receipt(status, usage=usage, note=note)
        try:
            settled = await self._io(self._store.settle, plan.hold, charge, receipt)
            plan.closed = True
            return settled
        except HoldAlreadyResolved:
            plan.closed = True
            stored = await self._io(self._store.get_receipt, plan.key.account_id, plan.request_id)
            if stored is None:
                raise BudgetStoreUnavailable("The hold was resolved elsewhere") from None
            return stored
        except BudgetStoreUnavailable:
            # The call was served; never charge twice and never for free by choice: leave the
            # hold (which expires) with the known outcome, for the sweeper to settle.
            deferred = receipt.model_copy(update={"charge": charge, "settlement": "deferred"})
            logger.error("settle_deferred", extra={"request_id": plan.request_id})
            plan.closed = True  # recorded or not, the sweeper resolves it; never voided here
            try:
                outcome = HoldOutcome(charge=charge, receipt=deferred)
                await self._io(self._store.record_outcome, plan.hold, outcome)
            except (BudgetStoreUnavailable, HoldAlreadyResolved):
                logger.error("outcome_not_recorded", extra={"request_id": plan.request_id})
            return deferred

    async def complete(self, plan: CallPlan) -> tuple[dict[str, Any], Receipt]:
        """A non-streamed call (chat or embeddings), retried and fallen back as needed."""
        return await self._complete(plan, _body)

    async def _complete(
        self, plan: CallPlan, render: Callable[[Completion], T]
    ) -> tuple[T, Receipt]:
        while True:
            started = self._clock()
            provider: Any = self._provider(plan.route)
            try:
                if isinstance(plan.request, EmbeddingsRequest):
                    if not hasattr(provider, "embed"):
                        raise UpstreamError("embeddings_not_supported", kind=FailureKind.ROUTE)
                    completion: Completion = await provider.embed(plan.upstream_body)
                else:
                    completion = await provider.complete(plan.upstream_body)
            except UpstreamError as exc:
                await self._after_failure(plan, started, exc)
                continue
            self._record_attempt(plan, started, completion.status, None)
            self.health.succeeded(plan.route.name)
            plan.cache_write_tokens = completion.cache_write_tokens
            completion.body["model"] = completion.body.get("model") or plan.route.upstream_model
            answer = render(completion)  # before the charge: an answer we cannot send is free
            receipt = await self._settle(plan, completion.usage, "succeeded", None)
            return answer, receipt

    async def open_stream(self, plan: CallPlan) -> StreamResult:
        """Open the upstream stream and read its first chunk before answering: a stream that
        fails before its first byte retries or falls back like any call."""
        while True:
            started = self._clock()
            try:
                upstream = await self._provider(plan.route).open_stream(plan.upstream_body)
                chunks = cast(AsyncGenerator[dict[str, Any], None], upstream.chunks())
                try:
                    first = await anext(chunks)
                except StopAsyncIteration:
                    await upstream.aclose()
                    raise UpstreamError(
                        "empty_stream", upstream.status, kind=FailureKind.RETRY
                    ) from None
                except BaseException:
                    await chunks.aclose()
                    await upstream.aclose()
                    raise
            except UpstreamError as exc:
                await self._after_failure(plan, started, exc)
                continue
            self._record_attempt(plan, started, upstream.status, None)
            self.health.succeeded(plan.route.name)
            return StreamResult(plan, self._relay(plan, upstream, first, chunks))

    def _stream_usage(self, plan: CallPlan, state: StreamState) -> tuple[Usage, str | None]:
        """What a stream used: the provider's final count, or for a stream that did not
        finish, what it reported so far completed by the documented estimate (input: the byte
        bound / 4; output: one token per content chunk delivered)."""
        plan.cache_write_tokens = state.cache_write_tokens
        known = state.usage
        if state.finished and known is not None:
            return known, None
        input_known = known is not None and known.input_tokens > 0
        estimate = Usage(
            input_tokens=known.input_tokens
            if known is not None and input_known
            else estimated_input_tokens(plan.request),
            cached_input_tokens=known.cached_input_tokens if known is not None else 0,
            output_tokens=max(
                state.content_chunks,
                state.output_tokens,
                known.output_tokens if known is not None else 0,
            ),
        )
        what = "output" if input_known else "input and output"
        return (
            estimate,
            f"upstream reported no final usage; charged the documented estimate ({what})",
        )

    def _running_cost(self, plan: CallPlan, state: StreamState) -> int:
        """A lower bound of what the stream has cost so far, against the hold's own terms."""
        produced = max(state.content_chunks, state.output_tokens)
        return plan.input_cost + token_cost(produced, plan.prices.output)

    async def _relay(
        self,
        plan: CallPlan,
        upstream: ChatStream,
        first: dict[str, Any],
        rest: AsyncIterator[dict[str, Any]],
    ) -> AsyncGenerator[StreamItem, None]:
        usage_chunk: dict[str, Any] | None = None
        state = upstream.state
        at_hold = stopped = False
        cut = "client disconnected"  # why the stream ended early, if the finally must settle
        try:
            try:
                chunk: dict[str, Any] | None = first
                while chunk is not None:
                    if chunk.get("usage") is not None:
                        if not chunk.get("choices"):
                            usage_chunk = chunk  # held back until the charge is known
                            chunk = await anext(rest, None)
                            continue
                        chunk = {k: v for k, v in chunk.items() if k != "usage"}
                    if at_hold and _has_content(chunk):
                        stopped = True  # one more token would cost more than the hold
                        break
                    yield StreamItem("chunk", chunk)
                    at_hold = at_hold or self._running_cost(plan, state) >= plan.hold.amount
                    chunk = await anext(rest, None)
                if not stopped and not state.finished:
                    raise UpstreamError("stream ended before it finished", upstream.status)
            except Exception as exc:
                # After the first byte there is no falling back: settle what was delivered
                # and end the stream with an error event, never a [DONE].
                cut = _failure_reason(exc, plan)
                if isinstance(exc, UpstreamError):
                    self.health.failed(plan.route.name)
                await _close(rest, upstream)
                usage, note = self._stream_usage(plan, state)
                receipt = await self._settle(plan, usage, "partial", _join(cut, note))
                yield StreamItem("error", _interrupted(receipt), receipt)
                return
            note = None
            if stopped:
                await _close(rest, upstream)
                yield StreamItem("chunk", _finish_chunk(first, plan, "length"))
                note = "stream stopped: its running cost reached the hold"
            usage, estimate = self._stream_usage(plan, state)
            if stopped:  # the upstream ignored max_tokens: what went past it was not delivered
                usage = usage.model_copy(
                    update={"output_tokens": min(usage.output_tokens, plan.max_output)}
                )
            receipt = await self._settle(plan, usage, "succeeded", _join(note, estimate) or None)
            final = (
                dict(usage_chunk)
                if usage_chunk and not stopped
                else _usage_chunk(plan, first, usage)
            )
            final["receipt"] = receipt_summary(receipt)
            plan.finished = True
            yield StreamItem("end", final, receipt)
        except Exception as exc:
            cut = _failure_reason(exc, plan)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await _close(rest, upstream)
                if not plan.closed:  # the client went away, or settling failed
                    await self._resolve_cut(plan, state, cut)

    async def _resolve_cut(self, plan: CallPlan, state: StreamState, reason: str) -> None:
        """Settle what a cut stream produced; if even that fails, release the hold rather than
        leave it pending (the gateway absorbs what was delivered)."""
        usage, note = self._stream_usage(plan, state)
        try:
            await self._settle(plan, usage, "partial", _join(reason, note))
            return
        except Exception:
            logger.exception("stream_settle_failed", extra={"request_id": plan.request_id})
        try:
            await self._void(plan, InternalError.code, _join(reason, "settling failed"))
        except HoldAlreadyResolved:
            plan.closed = True
        except Exception:
            logger.exception("hold_not_released", extra={"request_id": plan.request_id})


def _failure_reason(exc: Exception, plan: CallPlan) -> str:
    if isinstance(exc, UpstreamError):
        return exc.reason
    logger.error("stream_failed", exc_info=exc, extra={"request_id": plan.request_id})
    return f"internal error ({type(exc).__name__})"


async def _close(rest: AsyncIterator[dict[str, Any]], upstream: ChatStream) -> None:
    aclose = getattr(rest, "aclose", None)
    try:
        if aclose is not None:
            await aclose()
    except UpstreamError:
        pass
    await upstream.aclose()


def _body(completion: Completion) -> dict[str, Any]:
    return completion.body


def _requested_output(request: CallRequest) -> int | None:
    if isinstance(request, EmbeddingsRequest):
        return None
    return request.max_completion_tokens or request.max_tokens


def _tightest(rooms: dict[str, tuple[int, int]]) -> str:
    return min(rooms, key=lambda name: rooms[name][1])


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


def _has_content(chunk: dict[str, Any]) -> bool:
    return any(
        (c.get("delta") or {}).get("content") or (c.get("delta") or {}).get("tool_calls")
        for c in chunk.get("choices") or []
    )


def _join(*notes: str | None) -> str:
    return "; ".join(n for n in notes if n)


def _interrupted(receipt: Receipt) -> dict[str, Any]:
    return {
        "error": {
            "message": "The upstream stream was interrupted; you were charged"
            f" {format_micros(receipt.charge)} for what was delivered",
            "type": "upstream_error",
            "param": None,
            "code": "upstream_stream_interrupted",
            "receipt": receipt_summary(receipt),
        }
    }


def _finish_chunk(first: dict[str, Any], plan: CallPlan, reason: str) -> dict[str, Any]:
    return {
        "id": first.get("id") or f"chatcmpl-{plan.request_id}",
        "object": "chat.completion.chunk",
        "created": first.get("created") or int(time.time()),
        "model": first.get("model") or plan.route.upstream_model,
        "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}],
    }


def _usage_chunk(plan: CallPlan, first: dict[str, Any], usage: Usage) -> dict[str, Any]:
    return {
        **_finish_chunk(first, plan, "stop"),
        "choices": [],
        "usage": openai_usage(usage, plan.cache_write_tokens),
    }


def receipt_summary(receipt: Receipt) -> dict[str, Any]:
    """The receipt essentials sent in headers and in a stream's final usage chunk."""
    return {
        "request_id": receipt.request_id,
        "route": receipt.final_route,
        "route_type": receipt.route_type.value if receipt.route_type else None,
        "upstream_model": receipt.upstream_model,
        "attempts": sum(1 for a in receipt.attempts if a.outcome != "skipped"),
        "charge": format_micros(receipt.charge),
        "charge_micros": receipt.charge,
        "settlement": receipt.settlement,
        "bucket": receipt.bucket.value if receipt.bucket else None,
        "balance_after_micros": receipt.balance_after,
        "ledger_entry_id": receipt.ledger_entry_id,
        "status": receipt.status,
    }
