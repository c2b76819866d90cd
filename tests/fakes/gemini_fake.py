"""A fake Gemini API: POST /v1beta/models/{model}:generateContent,
:streamGenerateContent?alt=sse and :countTokens (of a generateContentRequest, counted as
generateContent bills it) with x-goog-api-key, in the shapes Google documents
(contents of user/model turns made of parts, systemInstruction, generationConfig,
tools.functionDeclarations, candidates with finishReason, usageMetadata). It refuses what
the real API refuses (an unknown role, a part with no data, a functionResponse that answers
no functionCall, generationConfig fields it does not know).

Usage: promptTokenCount counts every turn (cached content included); a system instruction of
at least 1024 bytes seen before is an implicit cache hit (cachedContentTokenCount); models
with "pro" in their name think (thoughtsTokenCount, billed as output)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from tests.fakes.base import (
    CACHE_MIN_BYTES,
    Call,
    FakeProvider,
    Fault,
    error_event_at,
    reply_words,
    schema_instance,
    tokens_of,
    wants_tool,
)

_PART_KEYS = {"text", "inlineData", "fileData", "functionCall", "functionResponse"}
_CONFIG_KEYS = {
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "stopSequences",
    "candidateCount",
    "responseMimeType",
    "responseJsonSchema",
    "seed",
    "thinkingConfig",
}
_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def _error(code: int, message: str, retry_after: str | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "status": _STATUS.get(code, "UNKNOWN")}}
    return JSONResponse(
        body, status_code=code, headers={"retry-after": retry_after} if retry_after else {}
    )


def _system_text(body: dict[str, Any]) -> str:
    parts = (body.get("systemInstruction") or {}).get("parts") or []
    return "".join(p.get("text", "") for p in parts)


def _part_text(part: dict[str, Any]) -> str:
    if "text" in part:
        return str(part["text"])
    if "functionCall" in part:
        return json.dumps(part["functionCall"])
    if "functionResponse" in part:
        return json.dumps(part["functionResponse"])
    return ""


def validate(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "Invalid JSON payload"
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    calls: set[str] = set()
    for i, content in enumerate(contents):
        if content.get("role") not in ("user", "model"):
            return f"contents[{i}].role: Please use a valid role: user, model."
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return f"contents[{i}].parts: must not be empty"
        for part in parts:
            keys = set(part) & _PART_KEYS
            if len(keys) != 1:
                return f"contents[{i}].parts: a part holds exactly one kind of data"
            if "functionCall" in part:
                if content["role"] != "model":
                    return f"contents[{i}]: functionCall parts come from the model"
                calls.add(part["functionCall"].get("name"))
            if "functionResponse" in part:
                response = part["functionResponse"]
                if response.get("name") not in calls or not isinstance(
                    response.get("response"), dict
                ):
                    return (
                        f"contents[{i}]: functionResponse must answer a functionCall with an object"
                    )
    system = body.get("systemInstruction")
    if system is not None and not all("text" in p for p in system.get("parts") or [{}]):
        return "systemInstruction: parts must be text"
    unknown = set(body.get("generationConfig") or {}) - _CONFIG_KEYS
    if unknown:
        name = sorted(unknown)[0]
        return f"Invalid JSON payload received. Unknown name {name!r} at 'generation_config'"
    for tool in body.get("tools") or []:
        for declaration in tool.get("functionDeclarations") or []:
            if not declaration.get("name"):
                return "tools: functionDeclarations need a name"
    return None


class FakeGemini(FakeProvider):
    sse_newline = "\r\n"

    def __init__(self) -> None:
        super().__init__(name="gemini")
        self.app.post("/v1beta/models/{target}", response_model=None)(self.generate)

    def fault_error(self, fault: Fault) -> Response:
        return _error(fault.status, "scripted failure", fault.retry_after)

    async def count_tokens(self, call: Call, model: str, body: Any) -> Response:
        inner = body.get("generateContentRequest") if isinstance(body, dict) else None
        problem = None if isinstance(inner, dict) else "generateContentRequest is required"
        if inner is not None and inner.get("model") != f"models/{model}":
            problem = "generateContentRequest.model must name the model of the URL"
        inner = {k: v for k, v in (inner or {}).items() if k != "model"}
        if problem := problem or validate(inner):
            call.status = 400
            return _error(400, problem)
        if (failed := self.scripted_failure(call, await self.take_fault(call))) is not None:
            return failed
        return JSONResponse({"totalTokens": self.prompt_tokens(inner)})

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        """Every token of the prompt: system instruction and turns (3 each), cache included."""
        return tokens_of(_system_text(body)) + sum(
            tokens_of("".join(_part_text(p) for p in c["parts"])) + 3 for c in body["contents"]
        )

    def usage(self, body: dict[str, Any], model: str, output: int) -> dict[str, Any]:
        system = _system_text(body)
        prompt = self.prompt_tokens(body)
        usage: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": output}
        if len(system.encode()) >= CACHE_MIN_BYTES and self.cache_lookup(system):
            usage["cachedContentTokenCount"] = tokens_of(system)
        thoughts = 4 if "pro" in model else 0
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        usage["totalTokenCount"] = prompt + output + thoughts
        return usage

    async def generate(self, target: str, request: Request) -> Response:
        model, _, method = target.partition(":")
        body = await request.json()
        stream = method == "streamGenerateContent"
        call = self.record(request, model, stream, body)
        if request.headers.get("x-goog-api-key") != self.api_key:
            call.status = 403
            return _error(403, "Method doesn't allow unregistered callers")
        if method == "countTokens":
            return await self.count_tokens(call, model, body)
        if method not in ("generateContent", "streamGenerateContent"):
            call.status = 404
            return _error(404, f"unknown method {method}")
        if stream and request.query_params.get("alt") != "sse":
            call.status = 400
            return _error(400, "the fake only streams with alt=sse")
        if problem := validate(body):
            call.status = 400
            return _error(400, problem)
        fault = await self.take_fault(call)
        if (failed := self.scripted_failure(call, fault)) is not None:
            return failed
        last = body["contents"][-1]
        prompt = "".join(p.get("text", "") for p in last["parts"])
        declarations = [
            d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []
        ]
        tool = wants_tool(prompt, declarations)
        limit = (body.get("generationConfig") or {}).get("maxOutputTokens")
        endless = fault is not None and fault.kind == "endless"
        words = [] if tool else reply_words(prompt, limit, endless=endless)
        schema = (body.get("generationConfig") or {}).get("responseJsonSchema")
        if schema is not None and not tool:  # structured output: one instance of the schema
            words = json.dumps(schema_instance(schema, schema.get("$defs") or {})).split(" ")
        output = 7 if tool else len(words)
        usage = self.usage(body, model, output)
        call.usage = usage
        call.text = " ".join(words)
        finish = "STOP" if tool or endless or limit is None or len(words) < limit else "MAX_TOKENS"
        response_id = f"resp-fake{len(self.calls)}"
        version = f"{model}-001"
        call_part = {
            "functionCall": {
                "name": declarations[0]["name"] if tool else "",
                "args": {"city": "Paris"},
            }
        }

        def response(
            parts: list[dict[str, Any]], usage_metadata: dict[str, Any], reason: str | None
        ) -> dict[str, Any]:
            candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
            if reason:
                candidate["finishReason"] = reason
            return {
                "candidates": [candidate],
                "usageMetadata": usage_metadata,
                "modelVersion": version,
                "responseId": response_id,
            }

        if not stream:
            parts = [call_part] if tool else [{"text": call.text}]
            return JSONResponse(response(parts, usage, finish))

        async def events() -> AsyncIterator[str]:
            running = {
                "promptTokenCount": usage["promptTokenCount"],
                "totalTokenCount": usage["promptTokenCount"],
            }
            if tool:
                yield self.sse(response([call_part], usage, finish))
                return
            for i, word in enumerate(words):
                if error_event_at(fault, i):
                    error = {"code": 500, "message": "Internal error", "status": "INTERNAL"}
                    yield self.sse({"error": error})
                    return
                text = word if i == 0 else " " + word
                final = i == len(words) - 1
                payload = response(
                    [{"text": text}], usage if final else running, finish if final else None
                )
                yield self.sse(payload)

        return self.stream(call, events(), fault, broken=self.sse("{broken"))
