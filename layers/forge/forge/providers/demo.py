"""The built-in demo provider: an OpenAI-compatible upstream with deterministic answers.

Token counts are a documented function of the request, so tests can predict every charge:
- prompt tokens: per message ceil(utf8 bytes of its text / 4) + 4, plus 3 for the reply primer;
- cached tokens: a system message of at least 1024 bytes counts as cached when more messages
  follow it (like OpenAI's prompt caching);
- completion: 8 + (sha256(last user text) mod 17) words, one token each, cut at max_tokens.
Upstream models named `demo-fail-<status>` always fail with that HTTP status.
Embeddings: 8 numbers from sha256 of each input; prompt tokens ceil(utf8 bytes / 4) each.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse

_VOCABULARY = (
    *("forge", "tokens", "ledger", "balance", "budget", "route", "stream", "receipt", "settle"),
    *("hold", "wallet", "credit", "charge", "model", "answer", "gateway", "exact", "honest"),
)
CACHE_MIN_BYTES = 1024


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _tokens(text: str) -> int:
    return -(-len(text.encode("utf-8")) // 4)


def count_usage(messages: list[dict[str, Any]], completion_tokens: int) -> dict[str, Any]:
    prompt = sum(_tokens(_text(m.get("content"))) + 4 for m in messages) + 3
    cached = 0
    first = messages[0] if messages else {}
    first_text = _text(first.get("content"))
    long_enough = len(first_text.encode("utf-8")) >= CACHE_MIN_BYTES
    if first.get("role") == "system" and len(messages) > 1 and long_enough:
        cached = _tokens(first_text) + 4
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def reply_words(messages: list[dict[str, Any]], max_tokens: int | None) -> tuple[list[str], str]:
    last_user: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    digest = hashlib.sha256(_text(last_user.get("content")).encode("utf-8")).digest()
    length = 8 + digest[0] % 17
    words = [_VOCABULARY[(digest[i % 32] + i) % len(_VOCABULARY)] for i in range(length)]
    if max_tokens is not None and max_tokens < length:
        return words[:max_tokens], "length"
    return words, "stop"


def _error(status: int, message: str, code: str) -> JSONResponse:
    body = {"error": {"message": message, "type": "demo_error", "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


def embed_input(items: list[str]) -> tuple[list[list[float]], int]:
    """The demo embeddings of `items` and their prompt tokens."""
    vectors = []
    for text in items:
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        vectors.append([round(b / 255 - 0.5, 6) for b in digest[:8]])
    return vectors, sum(_tokens(t) for t in items)


def create_demo_app() -> FastAPI:
    app = FastAPI(title="Tokens Forge demo provider", docs_url=None, redoc_url=None)

    @app.post("/v1/embeddings", response_model=None)
    async def embeddings(
        request: Request, authorization: str | None = Header(default=None)
    ) -> JSONResponse:
        if not authorization or not authorization.startswith("Bearer "):
            return _error(401, "Missing bearer key", "invalid_api_key")
        body = await request.json()
        model = str(body.get("model", ""))
        if model.startswith("demo-fail-"):
            status = int(model.removeprefix("demo-fail-") or 500)
            return _error(status, "This demo model always fails", "demo_failure")
        raw = body.get("input")
        items = [raw] if isinstance(raw, str) else [str(i) for i in raw or []]
        vectors, tokens = embed_input(items)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": v}
                    for i, v in enumerate(vectors)
                ],
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        request: Request, authorization: str | None = Header(default=None)
    ) -> JSONResponse | StreamingResponse:
        if not authorization or not authorization.startswith("Bearer "):
            return _error(401, "Missing bearer key", "invalid_api_key")
        body = await request.json()
        model = str(body.get("model", ""))
        if model.startswith("demo-fail-"):
            status = int(model.removeprefix("demo-fail-") or 500)
            return _error(status, "This demo model always fails", "demo_failure")
        messages = list(body.get("messages") or [])
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        words, finish = reply_words(messages, max_tokens)
        usage = count_usage(messages, len(words))
        completion_id = (
            "chatcmpl-demo-"
            + hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:24]
        )
        created = int(time.time())
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": " ".join(words)},
                            "logprobs": None,
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
                **extra,
            }
            return f"data: {json.dumps(payload)}\n\n"

        async def events() -> AsyncIterator[str]:
            yield chunk(
                [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
            )
            for i, word in enumerate(words):
                text = word if i == 0 else " " + word
                yield chunk([{"index": 0, "delta": {"content": text}, "finish_reason": None}])
            yield chunk([{"index": 0, "delta": {}, "finish_reason": finish}])
            if include_usage:
                yield chunk([], usage=usage)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app
