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
from forge.errors import (
    BudgetExceeded,
    BudgetStoreUnavailable,
    ForgeError,
    InvalidApiKey,
    ScopeDenied,
    UpstreamUnavailable,
)
from forge.ids import hash_api_key
from forge.money import Prices, Usage, charge_for, format_micros, token_cost
from forge.records import ApiKey, Attempt, Hold, KeyStatus, Receipt, utcnow
from forge.upstream import ChatProvider, ChatStream, StreamState, UpstreamError

logger = logging.getLogger(__name__)
T = TypeVar("T")
_KEY_CACHE_SECONDS = 10.0  # a paused or revoked key stops working within this long


def worst_case_input_tokens(request: ChatCompletionRequest) -> int:
    """An upper bound on prompt tokens: byte-level tokenizers never emit more tokens than the
    UTF-8 bytes they read, and the JSON framing covers each message's role overhead."""
    payload = [m.model_dump(exclude_none=True) for m in request.messages]
    extras = {k: v for k, v in (request.model_extra or {}).items() if k in ("tools", "functions")}
    return len(json.dumps([payload, extras], ensure_ascii=False).encode("utf-8"))


def estimated_input_tokens(request: ChatCompletionRequest) -> int:
    """The documented estimate used when an upstream never reported usage: 4 bytes a token."""
    return -(-worst_case_input_tokens(request) // 4)


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
    run_id: str | None = None
    attempts: list[Attempt] = field(default_factory=list)

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

    def plan(
        self, key: ApiKey, request: ChatCompletionRequest, request_id: str, run_id: str | None
    ) -> CallPlan:
        """Choose the route and size the hold at that route's price and bucket."""
        model = self._catalog.resolve(request.model, self.provider_names)
        allowed = [r for r in model.routes if r.route_type in key.route_types]
        if not allowed:
            raise ScopeDenied(
                f"This key may not use {model.routes[0].route_type.value} routes",
                param="model",
            )
        route = allowed[0]
        prices = route.effective_prices
        max_output = request.max_completion_tokens or request.max_tokens
        body = request.model_dump(exclude_none=True)
        body["model"] = route.upstream_model
        body.pop("stream_options", None)
        if max_output is None or max_output > route.max_output_tokens:
            # The upstream must not be able to produce more than the hold pays for.
            max_output = route.max_output_tokens
            body.pop("max_completion_tokens", None)
            body["max_tokens"] = max_output
        worst_case = token_cost(worst_case_input_tokens(request), prices.input) + token_cost(
            max_output, prices.output
        )
        hold = Hold(
            request_id=request_id,
            account_id=key.account_id,
            key_id=key.key_id,
            bucket=route.bucket,
            amount=worst_case,
            expires_at=utcnow() + self._hold_ttl,
        )
        return CallPlan(request_id, key, request, model, route, prices, hold, body, run_id)

    async def reserve(self, plan: CallPlan) -> None:
        try:
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
        "bucket": receipt.bucket.value if receipt.bucket else None,
        "balance_after_micros": receipt.balance_after,
        "ledger_entry_id": receipt.ledger_entry_id,
        "status": receipt.status,
    }
