"""Relaying an opened stream: stop it at the hold, settle what it delivered, however it ends."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import anyio

from forge.domain.errors import HoldAlreadyResolved, InternalError
from forge.domain.metrics import upstream_error_metrics
from forge.domain.money import Usage, format_micros, token_cost
from forge.domain.records import Receipt
from forge.domain.routing import RouteHealth
from forge.domain.upstream import ChatStream, StreamState, UpstreamError, openai_usage
from forge.gateway.holds import Holds
from forge.gateway.plan import CallPlan, estimated_input_tokens, join_notes

logger = logging.getLogger(__name__)


@dataclass
class StreamItem:
    """What a relayed stream produces: an OpenAI chunk, the end (the usage chunk with the
    receipt), or an error event after the first byte (with the receipt of what was charged)."""

    kind: Literal["chunk", "end", "error"]
    payload: dict[str, Any]
    receipt: Receipt | None = None


async def _nothing_to_abandon() -> None:
    return None


@dataclass
class StreamResult:
    plan: CallPlan
    items: AsyncGenerator[StreamItem, None]
    # Resolves the hold of a stream whose relay never started (see `close`).
    abandon: Callable[[], Awaitable[None]] = _nothing_to_abandon

    async def close(self) -> None:
        """However the response ended: a relay that ran settled in its own `finally`; one that
        never started (the client left before its first chunk was read) runs no `finally`, so
        its upstream is closed and its hold resolved here."""
        with anyio.CancelScope(shield=True):
            await self.items.aclose()
            if not self.plan.closed:
                await self.abandon()


async def abandon(
    plan: CallPlan, upstream: ChatStream, rest: AsyncIterator[dict[str, Any]], holds: Holds
) -> None:
    """A stream opened but never relayed: nothing was delivered."""
    await _close(rest, upstream)
    if not plan.closed:
        reason = "client disconnected before the first chunk"
        await _resolve_cut(plan, upstream.state, reason, holds)


async def relay(
    plan: CallPlan,
    upstream: ChatStream,
    first: dict[str, Any],
    rest: AsyncIterator[dict[str, Any]],
    holds: Holds,
    health: RouteHealth,
) -> AsyncGenerator[StreamItem, None]:
    """The stream's chunks, its first already read; settles it whether it ends, fails, reaches
    the hold or is dropped by the client."""
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
                at_hold = at_hold or running_cost(plan, state) >= plan.hold.amount
                chunk = await anext(rest, None)
            if not stopped and not state.finished:
                raise UpstreamError("stream ended before it finished", upstream.status)
        except Exception as exc:
            # After the first byte there is no falling back: settle what was delivered
            # and end the stream with an error event, never a [DONE].
            cut = _failure_reason(exc, plan)
            if isinstance(exc, UpstreamError):
                health.failed(plan.route.name)
                # Not an attempt on the receipt (the route served), but a failed upstream call.
                provider = plan.route.provider
                holds.measure(lambda: upstream_error_metrics({provider: 1}))
            await _close(rest, upstream)
            usage, note = stream_usage(plan, state)
            receipt = await holds.settle(plan, usage, "partial", join_notes(cut, note))
            yield StreamItem("error", _interrupted(receipt), receipt)
            return
        note = None
        if stopped:
            await _close(rest, upstream)
            yield StreamItem("chunk", _finish_chunk(first, plan, "length"))
            note = "stream stopped: its running cost reached the hold"
        usage, estimate = stream_usage(plan, state)
        if stopped:  # the upstream ignored max_tokens: what went past it was not delivered
            output = min(usage.output_tokens, plan.max_output)
            usage = usage.model_copy(
                update={
                    "output_tokens": output,
                    "reasoning_tokens": min(usage.reasoning_tokens, output),
                }
            )
        receipt = await holds.settle(plan, usage, "succeeded", join_notes(note, estimate) or None)
        final = (
            dict(usage_chunk) if usage_chunk and not stopped else _usage_chunk(plan, first, usage)
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
                await _resolve_cut(plan, state, cut, holds)


def stream_usage(plan: CallPlan, state: StreamState) -> tuple[Usage, str | None]:
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
        reasoning_tokens=known.reasoning_tokens if known is not None else 0,
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


def running_cost(plan: CallPlan, state: StreamState) -> int:
    """A lower bound of what the stream has cost so far, against the hold's own terms."""
    produced = max(state.content_chunks, state.output_tokens)
    return plan.input_cost + token_cost(produced, plan.prices.output)


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


async def _resolve_cut(plan: CallPlan, state: StreamState, reason: str, holds: Holds) -> None:
    """Settle what a cut stream produced; if even that fails, release the hold rather than
    leave it pending (the gateway absorbs what was delivered)."""
    usage, note = stream_usage(plan, state)
    try:
        await holds.settle(plan, usage, "partial", join_notes(reason, note))
        return
    except Exception:
        logger.exception("stream_settle_failed", extra={"request_id": plan.request_id})
    try:
        await holds.void(plan, InternalError.code, join_notes(reason, "settling failed"))
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


def _has_content(chunk: dict[str, Any]) -> bool:
    return any(
        (c.get("delta") or {}).get("content") or (c.get("delta") or {}).get("tool_calls")
        for c in chunk.get("choices") or []
    )


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
