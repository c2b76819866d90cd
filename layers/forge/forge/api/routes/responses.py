"""POST /v1/responses: OpenAI's Responses API (non-stream and SSE), for clients that moved to
it, through the same catalog, budgets, holds, fallback, ledger and receipts as chat
completions: the request is translated to one chat body for every route
(forge.providers.openai_format.responses says what is translated and what is refused), and
the answer back to a Response whose id is `resp_<request id>` (its receipt:
GET /v1/requests/<request id>). Responses are not passed through to OpenAI untranslated:
one accounting path serves every provider."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import Response

from forge.api.calls import PaidCallsDep
from forge.api.deps import InferenceKeyDep
from forge.api.schemas import PAID_SUCCESS
from forge.api.sse import SseFormat, responses_error, responses_sse
from forge.api.strict import StrictJsonRoute
from forge.domain import strict_json
from forge.domain.requests import ResponsesRequest, chat_request_from
from forge.domain.upstream import Completion
from forge.gateway import StreamResult
from forge.providers.openai_format import (
    ResponsesStreamWriter,
    chat_body_from_responses,
    response_echo,
    response_from_completion,
)

router = APIRouter(route_class=StrictJsonRoute)


@router.post("/v1/responses", response_model=None, responses=PAID_SUCCESS)
async def create_response(
    body: ResponsesRequest, key: InferenceKeyDep, calls: PaidCallsDep
) -> Response:
    sent = body.model_dump(exclude_none=True)
    chat = chat_request_from(chat_body_from_responses(sent), "input")
    echo = response_echo(sent)
    response_id = f"resp_{calls.request_id}"
    created_at = int(time.time())

    def render(completion: Completion) -> bytes:
        response = response_from_completion(
            completion.body,
            completion.usage,
            completion.cache_write_tokens,
            echo,
            response_id=response_id,
            now=int(time.time()),
        )
        return strict_json.dumps(response)

    def events(result: StreamResult) -> AsyncIterator[bytes]:
        writer = ResponsesStreamWriter(
            echo, response_id, result.plan.route.upstream_model, created_at
        )
        return responses_sse(result.items, writer)

    return await calls.serve(key, chat, sent, render, SseFormat(events, responses_error))
