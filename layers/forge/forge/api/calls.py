"""What every paid call endpoint shares: budget headers in, receipt headers out, and
Idempotency-Key handling around the call."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import Depends, Header, Request
from fastapi.responses import Response
from starlette.types import Receive

from forge.api.deps import GatewayDep, SettingsDep, StoreDep
from forge.api.idempotent import IdempotentCall, PaidStream
from forge.api.keepalive import KEEPALIVE, Background, with_keepalive
from forge.api.sse import SseFormat
from forge.domain.envelopes import parse_header_amount, parse_run_id
from forge.domain.errors import ForgeError, InternalError
from forge.domain.idempotency import fingerprint, validate_key
from forge.domain.money import format_micros
from forge.domain.records import ApiKey, Receipt
from forge.domain.upstream import Completion
from forge.gateway import CallPlan, Completed, Gateway, RequestLimits, StreamResult, receipt_summary
from forge.gateway.plan import CallRequest
from forge.settings import Settings
from forge.store.dynamo.store import DynamoStore

# What the OpenAPI document promises is what is accepted: a decimal in the bucket's currency
# with at most six places, and a run id of letters, digits and . _ : -.
AMOUNT_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,6})?$"
RUN_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"


@dataclass(frozen=True)
class CallHeaders:
    """The optional headers of every paid call, as sent (validated by `limits()`, inside the
    endpoint, so each endpoint answers a bad value in its own error shape)."""

    run_id: str | None = None
    run_budget: str | None = None
    max_charge: str | None = None
    idempotency_key: str | None = None

    def limits(self) -> RequestLimits:
        return RequestLimits(
            run_id=parse_run_id(self.run_id),
            run_budget=parse_header_amount(self.run_budget, "X-Run-Budget"),
            max_charge=parse_header_amount(self.max_charge, "X-Max-Request-Charge"),
        )

    @property
    def budget(self) -> dict[str, str | None]:
        """The headers that make two requests with one Idempotency-Key different."""
        return {"run_id": self.run_id, "run_budget": self.run_budget, "max_charge": self.max_charge}


async def call_headers(
    run_id: Annotated[str | None, Header(alias="x-run-id", pattern=RUN_ID_PATTERN)] = None,
    run_budget: Annotated[str | None, Header(alias="x-run-budget", pattern=AMOUNT_PATTERN)] = None,
    max_charge: Annotated[
        str | None, Header(alias="x-max-request-charge", pattern=AMOUNT_PATTERN)
    ] = None,
    idempotency_key: Annotated[
        str | None, Header(alias="idempotency-key", min_length=1, max_length=255)
    ] = None,
) -> CallHeaders:
    """The headers as a coroutine dependency (a class dependency runs on a worker thread)."""
    return CallHeaders(run_id, run_budget, max_charge, idempotency_key)


CallHeadersDep = Annotated[CallHeaders, Depends(call_headers)]


def route_headers(plan: CallPlan) -> dict[str, str]:
    """What served the call (after any retry or fallback), known before the body is sent."""
    return {
        "x-request-id": plan.request_id,
        "x-forge-route": plan.route.name,
        "x-forge-route-type": plan.route.route_type.value,
        "x-forge-upstream-model": plan.route.upstream_model,
        "x-forge-attempts": str(plan.calls),
        "x-forge-bucket": plan.hold.bucket.value,
        "x-forge-max-tokens": str(plan.max_output),
    }


def stream_headers(plan: CallPlan) -> dict[str, str]:
    return {
        **route_headers(plan),
        "x-forge-hold": format_micros(plan.hold.amount),
        "cache-control": "no-cache",
    }


def receipt_headers(plan: CallPlan, receipt: Receipt) -> dict[str, str]:
    summary = receipt_summary(receipt)
    headers = {
        **route_headers(plan),
        "x-forge-charge": summary["charge"],
        "x-forge-charge-micros": str(summary["charge_micros"]),
        "x-forge-settlement": summary["settlement"],
    }
    if receipt.settlement == "settled":
        headers["x-forge-ledger-entry"] = str(summary["ledger_entry_id"])
        if receipt.balance_after is not None:  # not known for a split bucket (docs/shards.md)
            headers["x-forge-balance-after-micros"] = str(summary["balance_after_micros"])
    return headers


logger = logging.getLogger(__name__)
Served = Completed[bytes] | StreamResult


def paid_response(result: Served, sse: SseFormat, keepalive: float) -> Response:
    """The HTTP answer of a served call: the rendered body with its receipt headers, or the
    stream framed by `sse`, with a keep-alive comment whenever it is silent for `keepalive` s."""
    if isinstance(result, StreamResult):
        return PaidStream(
            with_keepalive(sse.events(result), keepalive),
            stream_headers(result.plan),
            finished=lambda: result.plan.finished,
            close=result.close,
        )
    return Response(
        result.answer,
        media_type="application/json",
        headers=receipt_headers(result.plan, result.receipt),
    )


async def serve_stream(serving: Background[Served], sse: SseFormat, keepalive: float) -> Response:
    """A stream's answer. A call that has opened its upstream stream within `keepalive` seconds
    answers as usual: its headers name the route, and a refusal or a failure of every route is
    an HTTP error. One still waiting (a slow first token, retries, fallbacks) commits to 200
    and sends keep-alives meanwhile; a failure is then an error event in the stream."""
    try:
        ready = await serving.done_within(keepalive)
    except BaseException:
        await serving.cancel()
        raise
    if ready:
        return paid_response(serving.result(), sse, keepalive)
    opened: list[StreamResult] = []

    async def events() -> AsyncIterator[bytes]:
        while not await serving.done_within(keepalive):
            yield KEEPALIVE
        try:
            result = serving.result()
        except ForgeError as exc:
            yield sse.error(exc)
            return
        except Exception:
            logger.exception("paid_stream_failed")
            yield sse.error(InternalError("Internal error; nothing was charged for it"))
            return
        assert isinstance(result, StreamResult)
        opened.append(result)
        async for chunk in with_keepalive(sse.events(result), keepalive):
            yield chunk

    async def close() -> None:
        await serving.cancel()  # a call still waiting: its guarded boundary releases the hold
        for result in opened or _streams(serving.task):
            await result.close()

    return PaidStream(
        events(),
        {"cache-control": "no-cache"},
        finished=lambda: bool(opened) and opened[0].plan.finished,
        close=close,
    )


CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client gone before its answer: never seen


async def complete_unless_gone(serving: Awaitable[Served], receive: Receive) -> Served | None:
    """A non-stream call, cancelled if its client disconnects first (then None). Once the
    body has been read, the next message on `receive` is `http.disconnect` (uvicorn sends it
    when the connection drops); the cancellation closes the upstream call, and the guarded
    boundary settles it at the documented estimate (Gateway._abandon)."""
    scope = anyio.CancelScope()
    watcher = Background(_cancel_on_disconnect(receive, scope))
    try:
        with scope:
            return await serving
    finally:
        await watcher.cancel()
    return None


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass  # the body was read before the call began: only the disconnect is left to come
    scope.cancel()


def _streams(serving: asyncio.Future[Served]) -> list[StreamResult]:
    """The stream a finished call opened, if its body never got to relay it."""
    if serving.cancelled() or serving.exception() is not None:
        return []
    result = serving.result()
    return [result] if isinstance(result, StreamResult) else []


@dataclass
class PaidCalls:
    """What a paid endpoint needs to serve one call, as one dependency: the gateway, the
    budget headers, and Idempotency-Key handling around `Gateway.serve`."""

    gateway: Gateway
    store: DynamoStore
    settings: Settings
    headers: CallHeaders
    request_id: str
    receive: Receive  # the request's ASGI channel, on which a client's disconnect arrives

    async def serve(
        self,
        key: ApiKey,
        call: CallRequest,
        sent: dict[str, Any],
        render: Callable[[Completion], bytes],
        sse: SseFormat,
    ) -> Response:
        """Serve `call` for `key`, once per Idempotency-Key (`sent` is the body as the client
        sent it, which a retry must repeat)."""
        limits = self.headers.limits()
        keepalive = self.settings.sse_keepalive_seconds

        async def run() -> Response:
            serving = self.gateway.serve(key, call, self.request_id, limits, render)
            if getattr(call, "stream", False):
                return await serve_stream(Background(serving), sse, keepalive)
            if self.headers.idempotency_key is not None:
                # The client's retry with this key waits for this call and replays its
                # answer: finish it, charged once, even if this connection has dropped.
                return paid_response(await serving, sse, keepalive)
            # Without a key a retry is a new call: one whose client has gone is cancelled,
            # and charged only the documented estimate if its upstream call was in flight.
            served = await complete_unless_gone(serving, self.receive)
            if served is None:
                return Response(status_code=CLIENT_CLOSED_REQUEST)
            return paid_response(served, sse, keepalive)

        return await idempotent(
            run,
            store=self.store,
            settings=self.settings,
            account_id=key.account_id,
            request_id=self.request_id,
            headers=self.headers,
            body=sent,
        )


async def paid_calls(
    request: Request,
    gateway: GatewayDep,
    store: StoreDep,
    settings: SettingsDep,
    headers: CallHeadersDep,
) -> PaidCalls:
    return PaidCalls(gateway, store, settings, headers, request.state.request_id, request.receive)


PaidCallsDep = Annotated[PaidCalls, Depends(paid_calls)]


async def idempotent(
    serve: Callable[[], Awaitable[Response]],
    *,
    store: DynamoStore,
    settings: Settings,
    account_id: str,
    request_id: str,
    headers: CallHeaders,
    body: dict[str, Any],
) -> Response:
    """Run `serve` once per Idempotency-Key: a retry replays the first answer, another body
    is a 409. `serve` raises only when nothing was charged (Gateway.serve resolves the hold
    first), so any exception releases the key and a retry runs afresh."""
    if headers.idempotency_key is None:
        return await serve()
    call = IdempotentCall(
        store,
        account_id,
        validate_key(headers.idempotency_key),
        fingerprint(body, headers.budget),
        request_id,
        lease_seconds=settings.hold_ttl_seconds,
        wait_seconds=settings.upstream_timeout_seconds,
    )
    replayed = await call.begin()
    if replayed is not None:
        return replayed
    try:
        response = await serve()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await call.release()
        raise
    return await call.capture(response)
