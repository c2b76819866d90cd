"""POST /v1/chat/completions and POST /v1/embeddings: OpenAI's shapes, with receipt headers."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from forge.api.calls import PaidCallsDep
from forge.api.deps import InferenceKeyDep
from forge.api.schemas import PAID_SUCCESS
from forge.api.sse import OPENAI_SSE
from forge.api.strict import StrictJsonRoute
from forge.domain import strict_json
from forge.domain.errors import InvalidRequest
from forge.domain.requests import ChatCompletionRequest, EmbeddingsRequest
from forge.domain.upstream import Completion

router = APIRouter(route_class=StrictJsonRoute)


@router.post("/v1/chat/completions", response_model=None, responses=PAID_SUCCESS)
async def chat_completions(
    body: ChatCompletionRequest, key: InferenceKeyDep, calls: PaidCallsDep
) -> Response:
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest(
            "stream_options is only allowed with stream=true", param="stream_options"
        )
    return await calls.serve(key, body, body.model_dump(exclude_none=True), _json, OPENAI_SSE)


@router.post("/v1/embeddings", response_model=None)
async def embeddings(
    body: EmbeddingsRequest, key: InferenceKeyDep, calls: PaidCallsDep
) -> Response:
    return await calls.serve(key, body, body.model_dump(exclude_none=True), _json, OPENAI_SSE)


def _json(completion: Completion) -> bytes:
    return strict_json.dumps(completion.body)
