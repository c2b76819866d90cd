"""POST /v1/completions: OpenAI's legacy completions (non-stream and SSE of `text_completion`
chunks), translated to one chat call (forge.providers.openai_format.completions) and served
through the same catalog, budgets, holds, fallback, ledger and receipts as chat completions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import Response

from forge.api.calls import PaidCallsDep
from forge.api.deps import InferenceKeyDep
from forge.api.schemas import PAID_SUCCESS
from forge.api.sse import SseFormat, completions_sse, openai_error
from forge.api.strict import StrictJsonRoute
from forge.domain import strict_json
from forge.domain.requests import CompletionsRequest, chat_request_from
from forge.domain.upstream import Completion
from forge.gateway import StreamResult
from forge.providers.openai_format import (
    CompletionsStreamWriter,
    chat_body_from_completions,
    text_completion_from_chat,
)

router = APIRouter(route_class=StrictJsonRoute)


@router.post("/v1/completions", response_model=None, responses=PAID_SUCCESS)
async def create_completion(
    body: CompletionsRequest, key: InferenceKeyDep, calls: PaidCallsDep
) -> Response:
    sent = body.model_dump(exclude_none=True)
    chat = chat_request_from(chat_body_from_completions(sent), "prompt")
    completion_id = f"cmpl-{calls.request_id}"
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def render(completion: Completion) -> bytes:
        answer = text_completion_from_chat(
            completion.body, completion.usage, completion_id=completion_id, now=int(time.time())
        )
        return strict_json.dumps(answer)

    def events(result: StreamResult) -> AsyncIterator[bytes]:
        writer = CompletionsStreamWriter(
            completion_id, result.plan.route.upstream_model, int(time.time()), include_usage
        )
        return completions_sse(result.items, writer)

    return await calls.serve(key, chat, sent, render, SseFormat(events, openai_error))
