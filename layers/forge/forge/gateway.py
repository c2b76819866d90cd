"""The chat gateway: authenticate, plan, reserve, call upstream, settle. Transport-agnostic:
the API layer turns its results into HTTP, adapters do the I/O."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

import anyio

from forge.adapters.dynamo import DynamoStore, HoldAlreadyResolved
from forge.api.schemas import ChatCompletionRequest
from forge.catalog import Catalog, CatalogModel, RouteSpec
from forge.envelopes import affordable_output_tokens, envelopes_for, request_limit
from forge.errors import (
    BudgetExceeded,
    BudgetStoreUnavailable,
    ForgeError,
    InvalidApiKey,
    ScopeDenied,
    UpstreamUnavailable,
)
from forge.ids import hash_api_key
from forge.money import Bucket, Prices, Usage, charge_for, format_micros, token_cost
from forge.records import (
    ApiKey,
    Attempt,
    Hold,
    HoldOutcome,
    KeyStatus,
    ProjectCaps,
    Receipt,
    utcnow,
)
from forge.upstream import ChatProvider, ChatStream, StreamState, UpstreamError

logger = logging.getLogger(__name__)
T = TypeVar("T")
_KEY_CACHE_SECONDS = 10.0  # a paused or revoked key stops working within this long
MIN_OUTPUT_TOKENS = 16  # below this a budget-sized answer is useless: refuse instead


def worst_case_input_tokens(request: ChatCompletionRequest) -> int:
    """An upper bound on prompt tokens: byte-level tokenizers never emit more tokens than the
    UTF-8 bytes they read, and the JSON framing covers each message's role overhead."""
    payload = [m.model_dump(exclude_none=True) for m in request.messages]
    extras = {k: v for k, v in (request.model_extra or {}).items() if k in ("tools", "functions")}
    return len(json.dumps([payload, extras], ensure_ascii=False).encode("utf-8"))


def estimated_input_tokens(request: ChatCompletionRequest) -> int:
    """The documented estimate used when an upstream never reported usage: 4 bytes a token."""
    return -(-worst_case_input_tokens(request) // 4)


@dataclass(frozen=True)
class RequestLimits:
    """What the client asked of its own budget, from headers (may only lower the key's)."""

    run_id: str | None = None
    run_budget: int | None = None
    max_charge: int | None = None


@dataclass
class CallPlan:
    request_id: str
    key: ApiKey
    request: ChatCompletionRequest
    model: CatalogModel
    route: RouteSpec
    prices: Prices
    hold: Hold
    upstream_body: dict[str, Any]
    limits: RequestLimits
    input_cost: int
    max_output: int
    attempts: list[Attempt] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str | None:
        return self.limits.run_id

    def set_max_output(self, tokens: int) -> None:
        """Size the hold for `tokens` of output and make sure the upstream stops there."""
        self.max_output = tokens
        self.hold.amount = self.input_cost + token_cost(tokens, self.prices.output)
        self.upstream_body.pop("max_completion_tokens", None)
        self.upstream_body["max_tokens"] = tokens

    @property
    def include_usage(self) -> bool:
        """OpenAI sends the usage chunk when asked; we send it unless explicitly declined."""
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
                "stream": self.request.stream,
                "status": status,
                "attempts": self.attempts,
                "final_route": self.route.name,
                "route_type": self.route.route_type,
                "upstream_model": self.route.upstream_model,
                "prices": self.prices,
                "hold": self.hold.amount,
                "bucket": self.hold.bucket,
                "note": _join(*self.notes, values.pop("note", None)) or None,
                **values,
            }
        )


@dataclass
class StreamResult:
    plan: CallPlan
    events: AsyncIterator[bytes]


class Gateway:
    def __init__(
        self,
        store: DynamoStore,
        providers: Mapping[str, ChatProvider],
        catalog: Catalog,
        *,
        hold_ttl_seconds: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._providers = providers
        self._catalog = catalog
        self._hold_ttl = timedelta(seconds=hold_ttl_seconds)
        self._clock = clock
        self._key_cache: dict[str, tuple[float, ApiKey]] = {}
        self._project_cache: dict[str, tuple[float, dict[Bucket, ProjectCaps]]] = {}

    @property
    def provider_names(self) -> frozenset[str]:
        return frozenset(self._providers)

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call off the event loop."""
        return await anyio.to_thread.run_sync(partial(fn, *args))

    async def authenticate(self, authorization: str | None) -> ApiKey:
        if not authorization or not authorization.startswith("Bearer "):
            raise InvalidApiKey("Missing API key: send 'Authorization: Bearer <key>'")
        key_hash = hash_api_key(authorization.removeprefix("Bearer ").strip())
        cached = self._key_cache.get(key_hash)
        if cached and self._clock() - cached[0] < _KEY_CACHE_SECONDS:
            key: ApiKey | None = cached[1]
        else:
            key = await self._io(self._store.get_api_key, key_hash)
            if key is not None:
                self._key_cache[key_hash] = (self._clock(), key)
        if key is None or key.status is not KeyStatus.ACTIVE:
            raise InvalidApiKey("Incorrect, paused or revoked API key")
        return key

    async def plan(
        self, key: ApiKey, request: ChatCompletionRequest, request_id: str, limits: RequestLimits
    ) -> CallPlan:
        """Choose the route and size the hold at that route's price, in that route's bucket,
        against every envelope that applies."""
        model = self._catalog.resolve(request.model, self.provider_names)
        allowed = [r for r in model.routes if r.route_type in key.route_types]
        if not allowed:
            raise ScopeDenied(
                f"This key may not use {model.routes[0].route_type.value} routes",
                param="model",
            )
        route = allowed[0]
        prices = route.effective_prices
        project = (await self._project_caps(key)).get(route.bucket) or ProjectCaps()
        body = request.model_dump(exclude_none=True)
        body["model"] = route.upstream_model
        body.pop("stream_options", None)
        hold = Hold(
            request_id=request_id,
            account_id=key.account_id,
            key_id=key.key_id,
            project_id=key.project_id,
            requested_model=request.model,
            bucket=route.bucket,
            amount=0,
            expires_at=utcnow() + self._hold_ttl,
            envelopes=envelopes_for(
                key, project, route.bucket, utcnow(), limits.run_id, limits.run_budget
            ),
        )
        input_cost = token_cost(worst_case_input_tokens(request), prices.input)
        requested = request.max_completion_tokens or request.max_tokens
        plan = CallPlan(
            request_id, key, request, model, route, prices, hold, body, limits, input_cost, 0
        )
        # The upstream must never be able to produce more than the hold pays for.
        ceiling = min(requested or route.max_output_tokens, route.max_output_tokens)
        request_cap = request_limit(key, route.bucket, limits.max_charge)
        if request_cap is not None:
            ceiling = min(ceiling, self._fit(plan, "request", request_cap, request_cap))
        plan.set_max_output(ceiling)
        if requested is not None and ceiling < requested:
            plan.notes.append(f"max_tokens lowered from {requested} to {ceiling} by request")
        return plan

    def _fit(self, plan: CallPlan, envelope: str, limit: int, room: int) -> int:
        """The output tokens `room` can pay for, or a refusal naming the envelope."""
        tokens = affordable_output_tokens(room, plan.input_cost, plan.prices.output)
        if tokens < MIN_OUTPUT_TOKENS:
            raise BudgetExceeded(
                f"The {envelope} budget leaves {format_micros(room)}"
                f" {plan.hold.bucket.currency}: not enough for this prompt and"
                f" {MIN_OUTPUT_TOKENS} output tokens",
                envelope=envelope,
                limit=format_micros(limit),
                remaining=format_micros(room),
            )
        return tokens

    async def _project_caps(self, key: ApiKey) -> dict[Bucket, ProjectCaps]:
        cache_key = f"{key.account_id}#{key.project_id}"
        cached = self._project_cache.get(cache_key)
        if cached and self._clock() - cached[0] < _KEY_CACHE_SECONDS:
            return cached[1]
        caps = await self._io(self._store.get_project_caps, key.account_id, key.project_id)
        self._project_cache[cache_key] = (self._clock(), caps)
        return caps

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
                tightest = min(rooms, key=lambda name: rooms[name][1])
                tokens = self._fit(plan, tightest, *rooms[tightest])
                if tokens >= plan.max_output:
                    raise
                plan.notes.append(
                    f"max_tokens lowered from {plan.max_output} to {tokens} by {tightest}"
                )
                plan.set_max_output(tokens)
                await self._io(self._store.reserve, plan.hold)
        except BudgetExceeded as exc:
            await self.record_refusal(plan, exc)
            raise

    async def record_refusal(self, plan: CallPlan, error: ForgeError) -> None:
        """A receipt for a request refused before any money was held."""
        receipt = plan.receipt("failed", error_code=error.code, hold=0, note=error.message)
        try:
            await self._io(self._store.put_receipt, receipt)
        except BudgetStoreUnavailable:
            logger.warning("receipt_not_written", extra={"request_id": plan.request_id})

    def _provider(self, route: RouteSpec) -> ChatProvider:
        return self._providers[route.provider]

    def _record_attempt(
        self, plan: CallPlan, started: float, status: int | None, error: str | None
    ) -> None:
        plan.attempts.append(
            Attempt(
                route=plan.route.name,
                upstream_model=plan.route.upstream_model,
                status=status,
                latency_ms=int((self._clock() - started) * 1000),
                outcome="error" if error else "ok",
                reason=error,
            )
        )

    async def _fail(self, plan: CallPlan, exc: UpstreamError) -> UpstreamUnavailable:
        """No route served the call: release the whole hold, charge nothing."""
        receipt = plan.receipt("failed", error_code=UpstreamUnavailable.code, note=exc.reason)
        await self._io(self._store.void, plan.hold, receipt)
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
            return await self._io(self._store.settle, plan.hold, charge, receipt)
        except HoldAlreadyResolved:
            stored = await self._io(self._store.get_receipt, plan.key.account_id, plan.request_id)
            if stored is None:
                raise BudgetStoreUnavailable("The hold was resolved elsewhere") from None
            return stored
        except BudgetStoreUnavailable:
            # The call was served; never charge twice and never for free by choice: leave the
            # hold (which expires) with the known outcome, for the sweeper to settle.
            deferred = receipt.model_copy(update={"charge": charge, "settlement": "deferred"})
            logger.error("settle_deferred", extra={"request_id": plan.request_id})
            try:
                outcome = HoldOutcome(charge=charge, receipt=deferred)
                await self._io(self._store.record_outcome, plan.hold, outcome)
            except (BudgetStoreUnavailable, HoldAlreadyResolved):
                logger.error("outcome_not_recorded", extra={"request_id": plan.request_id})
            return deferred

    async def complete(self, plan: CallPlan) -> tuple[dict[str, Any], Receipt]:
        started = self._clock()
        try:
            completion = await self._provider(plan.route).complete(plan.upstream_body)
        except UpstreamError as exc:
            self._record_attempt(plan, started, exc.status, exc.reason)
            raise await self._fail(plan, exc) from exc
        self._record_attempt(plan, started, completion.status, None)
        receipt = await self._settle(plan, completion.usage, "succeeded", None)
        return completion.body, receipt

    async def open_stream(self, plan: CallPlan) -> StreamResult:
        """Open the upstream stream before answering, so early failures are plain errors."""
        started = self._clock()
        try:
            upstream = await self._provider(plan.route).open_stream(plan.upstream_body)
        except UpstreamError as exc:
            self._record_attempt(plan, started, exc.status, exc.reason)
            raise await self._fail(plan, exc) from exc
        self._record_attempt(plan, started, upstream.status, None)
        return StreamResult(plan, self._relay(plan, upstream))

    def _stream_usage(self, plan: CallPlan, state: StreamState) -> tuple[Usage, str | None]:
        if state.usage is not None:
            return state.usage, None
        estimate = Usage(
            input_tokens=estimated_input_tokens(plan.request),
            output_tokens=state.content_chunks,
        )
        return estimate, "upstream reported no usage; charged the documented estimate"

    async def _relay(self, plan: CallPlan, upstream: ChatStream) -> AsyncIterator[bytes]:
        settled = False
        usage_chunk: dict[str, Any] | None = None
        try:
            try:
                async for chunk in upstream.chunks():
                    if chunk.get("usage") and not chunk.get("choices"):
                        usage_chunk = chunk  # held back until the charge is known
                        continue
                    yield _sse(chunk)
                if not upstream.state.finished:
                    raise UpstreamError("stream ended without [DONE]", upstream.status)
            except UpstreamError as exc:
                # After the first byte there is no falling back: settle what was delivered
                # and end the stream with an error event, never a [DONE].
                usage, note = self._stream_usage(plan, upstream.state)
                settled = True
                receipt = await self._settle(plan, usage, "partial", _join(exc.reason, note))
                yield _sse(_interrupted(receipt))
                return
            usage, note = self._stream_usage(plan, upstream.state)
            settled = True
            receipt = await self._settle(plan, usage, "succeeded", note)
            if plan.include_usage:
                final = usage_chunk or _usage_chunk(plan, usage)
                final["receipt"] = receipt_summary(receipt)
                yield _sse(final)
            yield b"data: [DONE]\n\n"
        finally:
            with anyio.CancelScope(shield=True):
                if not settled:  # the client went away: settle what the upstream produced
                    usage, note = self._stream_usage(plan, upstream.state)
                    await self._settle(plan, usage, "partial", _join("client disconnected", note))
                await upstream.aclose()


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


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _usage_chunk(plan: CallPlan, usage: Usage) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{plan.request_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": plan.route.upstream_model,
        "choices": [],
        "usage": {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        },
    }


def receipt_summary(receipt: Receipt) -> dict[str, Any]:
    """The receipt essentials sent in headers and in a stream's final usage chunk."""
    return {
        "request_id": receipt.request_id,
        "route": receipt.final_route,
        "upstream_model": receipt.upstream_model,
        "attempts": len(receipt.attempts),
        "charge": format_micros(receipt.charge),
        "charge_micros": receipt.charge,
        "settlement": receipt.settlement,
        "bucket": receipt.bucket.value if receipt.bucket else None,
        "balance_after_micros": receipt.balance_after,
        "ledger_entry_id": receipt.ledger_entry_id,
        "status": receipt.status,
    }
