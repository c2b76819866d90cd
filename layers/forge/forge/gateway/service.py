"""The gateway's one paid call: plan, reserve, call upstream (retrying, falling back), settle."""

# Transport-agnostic: the API layer turns results into HTTP, adapters do the I/O.
# Money rules kept in this package: the hold is sized at the serving route's price in that
# route's bucket; before a fallback route is called the hold is moved to its price and bucket
# (one transaction, same conditions as a reservation); a charge never exceeds the hold; a stream
# is stopped when its running cost reaches the hold; a call no route served charges nothing.

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Generic, Literal, TypeVar, cast

import anyio

from forge.domain.catalog import Catalog, CatalogSource, RouteSpec
from forge.domain.errors import (
    BudgetExceeded,
    BudgetStoreUnavailable,
    ClientDisconnected,
    ForgeError,
    HoldAlreadyResolved,
    InternalError,
)
from forge.domain.metrics import refusal_metrics
from forge.domain.money import Usage
from forge.domain.offer import ProviderOffer
from forge.domain.records import ApiKey, Receipt, Refusal, utcnow
from forge.domain.requests import ChatCompletionRequest, EmbeddingsRequest
from forge.domain.routing import RetryPolicy, RouteHealth, jitter
from forge.domain.upstream import (
    ChatProvider,
    Completion,
    FailureKind,
    TokenCounter,
    UpstreamError,
)
from forge.gateway.attempts import Attempts
from forge.gateway.auth import Keys
from forge.gateway.holds import Blocking, Holds
from forge.gateway.plan import (
    CallPlan,
    CallRequest,
    RequestLimits,
    bind,
    choose_routes,
    estimated_input_tokens,
    new_plan,
    open_hold,
    resize,
    tightest_envelope,
)
from forge.gateway.relay import StreamResult, abandon, relay
from forge.ports import NO_METER, GatewayStore, Meter

logger = logging.getLogger(__name__)
T = TypeVar("T")
CLIENT_GONE = ClientDisconnected.code  # on a receipt: the call was abandoned, not failed


@dataclass(frozen=True)
class TokenCount:
    """A prompt's input tokens on the route a call would take now: the provider's own count
    where it has a count endpoint, else the documented estimate (estimated_input_tokens)."""

    input_tokens: int
    source: Literal["provider", "estimate"]
    route: RouteSpec


@dataclass
class Completed(Generic[T]):
    """A non-streamed call, served and settled: the answer as rendered before the charge."""

    plan: CallPlan
    answer: T
    receipt: Receipt


class Gateway:
    def __init__(
        self,
        store: GatewayStore,
        providers: Mapping[str, ChatProvider],
        catalog: Catalog | CatalogSource,
        *,
        hold_ttl_seconds: int,
        clock: Callable[[], float] = time.monotonic,
        retry: RetryPolicy | None = None,
        health: RouteHealth | None = None,
        sleep: Callable[[float], Any] = anyio.sleep,
        rand: Callable[[], float] = jitter,
        blocking: Blocking = anyio.to_thread.run_sync,
        now: Callable[[], datetime] = utcnow,
        keys: Keys | None = None,
        meter: Meter = NO_METER,
    ) -> None:
        # `blocking` runs each store call off the event loop (a worker thread); `now` dates
        # holds and envelope windows. A deterministic simulation replaces both: it runs store
        # calls inline, one at a time, and owns the clock (tests/sim). `meter` receives the
        # money path's metrics (forge.domain.metrics); the default drops them.
        self._now = now
        self._providers = providers
        self._catalog = (
            catalog if isinstance(catalog, CatalogSource) else CatalogSource.fixed(catalog)
        )
        self._hold_ttl = timedelta(seconds=hold_ttl_seconds)
        self._clock = clock
        self.health = health or RouteHealth()
        # `keys` shares one key cache with the process's other routes (forge.wiring.get_keys).
        self._keys = keys or Keys(store, clock, blocking, meter)
        self._holds = Holds(store, blocking, meter)
        self._attempts = Attempts(
            self._holds,
            self._keys,
            self.health,
            retry or RetryPolicy(),
            clock=clock,
            sleep=sleep,
            rand=rand,
            now=now,
        )

    @property
    def _store(self) -> GatewayStore:
        return self._holds.store

    @_store.setter
    def _store(self, store: GatewayStore) -> None:
        # Keys and holds read one store; a test swaps it under a built gateway.
        self._keys.store = self._holds.store = store

    @property
    def provider_names(self) -> frozenset[str]:
        """The providers offered as last checked (no I/O; see `offered_providers`)."""
        return frozenset(self._providers)

    async def offered_providers(self) -> frozenset[str]:
        """The providers offered now: a live offer whose provider secret is due a re-read
        reads it off the event loop first (at most once per its interval per container)."""
        if isinstance(self._providers, ProviderOffer) and not self._providers.fresh:
            await self._holds.off_loop(self._providers.refresh)
        return frozenset(self._providers)

    async def catalog(self) -> Catalog:
        """The catalog, re-read from the store at most once per TTL per container."""
        if self._catalog.fresh:
            return self._catalog.current()
        return await self._holds.off_loop(self._catalog.current)

    async def authenticate(self, authorization: str | None) -> ApiKey:
        return await self._keys.authenticate(authorization)

    async def authenticate_key(self, plaintext: str) -> ApiKey:
        return await self._keys.authenticate_key(plaintext)

    def record_use(self, key: ApiKey) -> None:
        """Stamp the key's last use, off the request (see Keys.record_use)."""
        self._keys.record_use(key)

    async def count_tokens(self, key: ApiKey, request: ChatCompletionRequest) -> TokenCount:
        """The prompt's input tokens on the route a call would take now, for `key`. Free: no
        hold, no charge, no receipt. A provider count that fails falls back to the estimate."""
        model = (await self.catalog()).resolve(request.model, await self.offered_providers())
        route = choose_routes(model, request, key, self.health.healthy).ordered[0]
        provider: Any = self._provider(route)
        if hasattr(provider, "count_tokens"):
            counter: TokenCounter = provider
            body = {**request.model_dump(exclude_none=True), "model": route.upstream_model}
            try:
                return TokenCount(await counter.count_tokens(body), "provider", route)
            except UpstreamError as exc:
                logger.warning(
                    "token_count_estimated", extra={"route": route.name, "reason": exc.reason}
                )
        return TokenCount(estimated_input_tokens(request), "estimate", route)

    # One paid call ------------------------------------------------------------------------
    async def serve(
        self,
        key: ApiKey,
        request: CallRequest,
        request_id: str,
        limits: RequestLimits,
        render: Callable[[Completion], T],
    ) -> Completed[T] | StreamResult:
        """Plan, reserve and call, inside one guarded boundary: a refusal leaves a receipt (and
        is counted), and any exception after the reservation resolves the hold and writes a
        `failed` receipt before it propagates. A non-streamed answer is rendered by `render`
        before it is charged, so an answer that cannot be sent is never paid for."""
        plan: CallPlan | None = None
        try:
            plan = await self.plan(key, request, request_id, limits)
            await self.reserve(plan)
        except ForgeError as exc:
            self._holds.measure(partial(refusal_metrics, exc))
            await self._record_refusal(key, request, request_id, limits, plan, exc)
            raise
        except anyio.get_cancelled_exc_class():
            # The client left before the call began: nothing was sent upstream.
            gone = ClientDisconnected("the client disconnected before the call began")
            with anyio.CancelScope(shield=True):
                await self._record_refusal(key, request, request_id, limits, plan, gone)
            raise
        try:
            if plan.stream:
                return await self.open_stream(plan)
            answer, receipt = await self._complete(plan, render)
            return Completed(plan, answer, receipt)
        except BaseException as exc:
            if isinstance(exc, BudgetExceeded | BudgetStoreUnavailable):
                # Refused after all: the fallback's hold did not fit, or the store failed.
                self._holds.measure(partial(refusal_metrics, exc))
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
        if plan is not None and isinstance(error, BudgetStoreUnavailable | ClientDisconnected):
            # The reservation's answer was lost (or no longer awaited), not necessarily its
            # write: void what may have been held (a hold that does not exist is 'already
            # resolved').
            with contextlib.suppress(BudgetStoreUnavailable, HoldAlreadyResolved):
                await self._holds.void(plan, error.code, error.message)
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
            refusal=Refusal.of(error.code, error.details),
        )
        await self._holds.put_receipt(receipt)

    async def _contain(self, plan: CallPlan, exc: BaseException) -> BaseException:
        """After the reservation, whatever failed: void the hold (nothing was delivered) with a
        `failed` receipt, unless it was already resolved. Returns the error to answer with."""
        if isinstance(exc, ForgeError):
            code, note = exc.code, exc.message
        elif isinstance(exc, anyio.get_cancelled_exc_class()):
            # The caller stopped waiting: a client gone while its stream waited for a token,
            # or a non-stream call's client gone with no upstream call in flight (one in
            # flight was settled at the estimate by `_abandon`, so the plan is closed).
            code, note = CLIENT_GONE, "the client disconnected before anything was delivered"
        else:
            code, note = InternalError.code, f"internal error ({type(exc).__name__})"
            logger.exception("paid_call_failed", extra={"request_id": plan.request_id})
        if not plan.closed:
            try:
                await self._holds.void(plan, code, note)
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
        model = (await self.catalog()).resolve(request.model, await self.offered_providers())
        routes = choose_routes(model, request, key, self.health.healthy)
        first = routes.ordered[0]
        hold = open_hold(key, request, request_id, limits, first, self._now() + self._hold_ttl)
        project = await self._keys.project_caps(key, first.bucket)
        binding = bind(key, request, first, hold, limits, project, self._now())
        return new_plan(request_id, key, request, model, binding, limits, routes)

    # Reserving -----------------------------------------------------------------------------
    async def reserve(self, plan: CallPlan) -> None:
        """Reserve the worst case. If an envelope is too small for it, size the output to what
        is left (never below MIN_OUTPUT_TOKENS) and try once more; else refuse with a 402."""
        try:
            try:
                await self._holds.reserve(plan.binding)
                return
            except BudgetExceeded:
                rooms = await self._holds.rooms(
                    plan.key.account_id, plan.hold.bucket, plan.hold.envelopes
                )
                tokens = resize(plan.binding, rooms)
                plan.notes.append(
                    f"max_tokens lowered from {plan.max_output} to {tokens}"
                    f" by {tightest_envelope(rooms)}"
                )
                plan.set_max_output(tokens)
                await self._holds.reserve(plan.binding)
        except BudgetExceeded as exc:
            await self.record_refusal(plan, exc)
            raise

    async def record_refusal(self, plan: CallPlan, error: ForgeError) -> None:
        """A receipt for a request refused before any money was held."""
        await self._holds.record_refusal(plan, error)

    # Calling -------------------------------------------------------------------------------
    def _provider(self, route: RouteSpec) -> ChatProvider:
        return self._providers[route.provider]

    async def complete(self, plan: CallPlan) -> tuple[dict[str, Any], Receipt]:
        """A non-streamed call (chat or embeddings), retried and fallen back as needed."""
        return await self._complete(plan, _body)

    async def _complete(
        self, plan: CallPlan, render: Callable[[Completion], T]
    ) -> tuple[T, Receipt]:
        while True:
            # A client already gone is cancelled here, before the upstream call is sent.
            await anyio.lowlevel.checkpoint()
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
                await self._attempts.after_failure(plan, started, exc)
                continue
            except anyio.get_cancelled_exc_class():
                # The client left while the provider was answering (forge.api.calls cancels
                # a non-stream call on a disconnect). The provider has the prompt and bills
                # it: settle the documented estimate, then let the cancellation go on.
                with anyio.CancelScope(shield=True):
                    await self._abandon(plan, started)
                raise
            with anyio.CancelScope(shield=True):
                # Answered: the provider bills it whatever the client does now, so a
                # disconnect from here on is charged what the provider reported.
                self._attempts.record(plan, started, completion.status, None)
                self.health.succeeded(plan.route.name)
                plan.cache_write_tokens = completion.cache_write_tokens
                body = completion.body
                body["model"] = body.get("model") or plan.route.upstream_model
                answer = render(completion)  # before the charge: one we cannot send is free
                receipt = await self._holds.settle(plan, completion.usage, "succeeded", None)
            return answer, receipt

    async def _abandon(self, plan: CallPlan, started: float) -> None:
        """Settle a non-stream call whose client left while its upstream call was in flight:
        the provider reported nothing, so the charge is the documented estimate, the input
        the provider has been sent (`estimated_input_tokens`) and no output. If settling
        fails, the hold stays open for `_contain`, which voids it."""
        self._attempts.abandoned(plan, started, CLIENT_GONE)
        usage = Usage(input_tokens=estimated_input_tokens(plan.request))
        note = (
            f"client disconnected while {plan.route.name} was answering; the upstream call"
            f" was cancelled and charged the documented estimate: {usage.input_tokens} input"
            " tokens (the request's UTF-8 bytes / 4), no output"
        )
        try:
            await self._holds.settle(plan, usage, "partial", note, error_code=CLIENT_GONE)
        except Exception:
            logger.exception("abandoned_settle_failed", extra={"request_id": plan.request_id})

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
                await self._attempts.after_failure(plan, started, exc)
                continue
            self._attempts.record(plan, started, upstream.status, None)
            self.health.succeeded(plan.route.name)
            return StreamResult(
                plan,
                relay(plan, upstream, first, chunks, self._holds, self.health),
                partial(abandon, plan, upstream, chunks, self._holds),
            )


def _body(completion: Completion) -> dict[str, Any]:
    return completion.body
