"""Google Gemini generateContent <-> OpenAI chat, as pure functions over JSON values.

A chat body becomes a GenerateContentRequest (`contents` of `user`/`model` turns made of
`parts`, `systemInstruction`, `generationConfig`, `tools.functionDeclarations`); a
GenerateContentResponse (whole, or each `streamGenerateContent?alt=sse` event) becomes
chat.completion(.chunk) shapes. Gemini's stream has no [DONE]: a chunk with a finishReason
ends it, and `usageMetadata` is cumulative, so the last one counts.

Usage: promptTokenCount includes the cached content (cachedContentTokenCount); tool-use
prompt tokens are input too; thinking tokens (thoughtsTokenCount) are billed as output.
"""

from __future__ import annotations

import json
from typing import Any

from forge.domain.money import Usage
from forge.domain.provider_errors import ProviderError, redact
from forge.domain.upstream import FailureKind, UpstreamError, openai_usage

_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return ""


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            parts.append({"text": str(part.get("text", ""))})
        elif part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            if url.startswith("data:") and ";base64," in url:
                mime, _, data = url.removeprefix("data:").partition(";base64,")
                parts.append({"inlineData": {"mimeType": mime, "data": data}})
            else:
                parts.append({"fileData": {"mimeType": "image/jpeg", "fileUri": url}})
    return parts


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _response_object(text: str) -> dict[str, Any]:
    """functionResponse.response must be a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {"content": text}
    return value if isinstance(value, dict) else {"content": value}


def to_generate_content_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat.completions body as a GenerateContentRequest (the model is in the URL)."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for message in body.get("messages") or []:
        role, content = message.get("role"), message.get("content")
        if role in ("system", "developer"):
            system += [p for p in _parts(content) if "text" in p]
        elif role == "user":
            _append(contents, "user", _parts(content))
        elif role == "assistant":
            parts = [p for p in _parts(content or "") if "text" in p]
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                call_names[str(call.get("id"))] = str(function.get("name"))
                arguments = _response_object(str(function.get("arguments") or "{}"))
                parts.append({"functionCall": {"name": function.get("name"), "args": arguments}})
            _append(contents, "model", parts)
        elif role in ("tool", "function"):
            name = call_names.get(str(message.get("tool_call_id")), message.get("name") or "")
            response = {"name": name, "response": _response_object(_text_of(content))}
            _append(contents, "user", [{"functionResponse": response}])
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    config: dict[str, Any] = {}
    if (limit := body.get("max_tokens") or body.get("max_completion_tokens")) is not None:
        config["maxOutputTokens"] = limit
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed")):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    if (stop := body.get("stop")) is not None:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    response_format = body.get("response_format") or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    if response_format.get("type") == "json_schema":  # Gemini enforces a JSON Schema itself
        schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
        config["responseJsonSchema"] = schema
    if config:
        request["generationConfig"] = config
    if tools := body.get("tools"):
        declarations = []
        for tool in tools:
            function = tool.get("function") or {}
            if tool.get("type") != "function" or not function.get("name"):
                continue
            declaration = {"name": function["name"], "description": function.get("description", "")}
            if function.get("parameters"):
                declaration["parameters"] = function["parameters"]
            declarations.append(declaration)
        request["tools"] = [{"functionDeclarations": declarations}]
        if mode := _calling_config(body.get("tool_choice")):
            request["toolConfig"] = {"functionCallingConfig": mode}
    return request


def _calling_config(choice: Any) -> dict[str, Any] | None:
    if choice in ("auto", "none"):
        return {"mode": str(choice).upper()}
    if choice == "required":
        return {"mode": "ANY"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        return {"mode": "ANY", "allowedFunctionNames": [name]}
    return None


def usage_from_gemini(raw: dict[str, Any] | None) -> Usage | None:
    """usageMetadata -> Usage. thoughtsTokenCount is not part of candidatesTokenCount (the
    total is prompt + tool-use prompt + candidates + thoughts) but is billed as output: it is
    added to the output tokens, and shown as their reasoning tokens."""
    if not raw:
        return None
    thoughts = int(raw.get("thoughtsTokenCount") or 0)
    return Usage(
        input_tokens=int(raw.get("promptTokenCount") or 0)
        + int(raw.get("toolUsePromptTokenCount") or 0),
        cached_input_tokens=int(raw.get("cachedContentTokenCount") or 0),
        output_tokens=int(raw.get("candidatesTokenCount") or 0) + thoughts,
        reasoning_tokens=thoughts,
    )


def _raise_if_error(payload: dict[str, Any], status: int) -> None:
    error = payload.get("error")
    if isinstance(error, dict):  # an error sent inside a 200 stream
        code = error.get("code")
        failed = code if isinstance(code, int) and code >= 400 else None
        name = error.get("status")
        message = redact(str(error["message"])) if error.get("message") else None
        raise UpstreamError(
            str(name or "stream_error"),
            failed,
            message=message,
            error=ProviderError(
                "gemini",
                failed or status,
                message=message,
                code=str(name) if isinstance(name, str) else None,
            ),
        )


class CandidateReader:
    """Turns candidates' parts into OpenAI deltas; numbers function calls across chunks."""

    def __init__(self) -> None:
        self.calls = 0

    def read(self, payload: dict[str, Any]) -> tuple[str, list[dict[str, Any]], str | None]:
        """(text, tool calls, finish reason) of the first candidate."""
        candidates = payload.get("candidates") or []
        if not candidates:
            blocked = (payload.get("promptFeedback") or {}).get("blockReason")
            return "", [], "content_filter" if blocked else None
        candidate = candidates[0]
        text, calls = "", []
        for part in (candidate.get("content") or {}).get("parts") or []:
            if part.get("thought"):
                continue  # thought summaries are not part of the answer
            if "text" in part:
                text += str(part["text"])
            elif "functionCall" in part:
                call = part["functionCall"]
                calls.append(
                    {
                        "index": self.calls,
                        "id": call.get("id") or f"call_{self.calls}",
                        "type": "function",
                        "function": {
                            "name": call.get("name"),
                            "arguments": json.dumps(call.get("args") or {}),
                        },
                    }
                )
                self.calls += 1
        reason = candidate.get("finishReason")
        finish = None
        if reason:
            finish = _FINISH.get(str(reason), "stop")
            if finish == "stop" and self.calls:
                finish = "tool_calls"
        return text, calls, finish


def completion_from_response(
    payload: dict[str, Any], model: str, status: int = 200
) -> tuple[dict[str, Any], Usage]:
    _raise_if_error(payload, status)
    usage = usage_from_gemini(payload.get("usageMetadata"))
    if usage is None:
        raise UpstreamError("missing_usage", status, kind=FailureKind.ROUTE)
    text, calls, finish = CandidateReader().read(payload)
    if finish is None and not payload.get("candidates"):
        raise UpstreamError("malformed_response", status, kind=FailureKind.RETRY)
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
    body = {
        "id": payload.get("responseId") or "gemini",
        "object": "chat.completion",
        "created": 0,
        "model": payload.get("modelVersion") or model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish or "stop"}
        ],
        "usage": openai_usage(usage),
    }
    return body, usage


class GenerateStreamReader:
    """streamGenerateContent events -> OpenAI chunks, keeping the cumulative usage."""

    def __init__(self, model: str, created: int) -> None:
        self.model = model
        self.created = created
        self.id = ""
        self.usage: Usage | None = None
        self.finished = False
        self._started = False
        self._candidates = CandidateReader()

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def feed(self, payload: dict[str, Any], status: int) -> list[dict[str, Any]]:
        _raise_if_error(payload, status)
        self.id = str(payload.get("responseId") or self.id or "gemini")
        self.model = str(payload.get("modelVersion") or self.model)
        if usage := usage_from_gemini(payload.get("usageMetadata")):
            self.usage = usage
        text, calls, finish = self._candidates.read(payload)
        chunks: list[dict[str, Any]] = []
        delta: dict[str, Any] = {}
        if not self._started:
            self._started = True
            delta["role"] = "assistant"
        if text:
            delta["content"] = text
        if calls:
            delta["tool_calls"] = calls
        if delta:
            chunks.append(self._chunk(delta))
        if finish:
            self.finished = True
            chunks.append(self._chunk({}, finish))
        return chunks

    def usage_chunk(self) -> dict[str, Any] | None:
        if self.usage is None:
            return None
        return {**self._chunk({}), "choices": [], "usage": openai_usage(self.usage)}
