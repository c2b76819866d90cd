"""`POST /v1/responses`: a Responses request becomes one OpenAI chat body, and the gateway's
chat answer becomes a Response object (its stream: responses_stream).

Every route speaks chat inside the gateway, so a Responses call gets the same plan, hold,
fallback, settle, receipt and ledger entry as a chat completion, on OpenAI, Anthropic, Gemini
and OpenAI-compatible routes alike. The gateway stores nothing, so what needs stored state
is refused, and so is anything a chat body cannot carry to every route: a refusal is a 400
`unsupported_parameter` naming the param, before anything is held. Nothing is dropped
silently, except the hints listed below.

Translated:
- `input`: a string (one user message), or items: messages (roles user, system, developer,
  assistant; content a string or `input_text` / `output_text` / `refusal` parts, and
  `input_image` parts with an `image_url`, user messages only), `function_call` items (the
  assistant's tool calls; consecutive ones become one assistant turn) and
  `function_call_output` items (tool results, text only);
- `instructions` -> a leading system message; `max_output_tokens` -> `max_tokens`;
  `temperature`, `top_p`, `parallel_tool_calls`, `user`, `safety_identifier`,
  `prompt_cache_key`; `reasoning.effort` -> `reasoning_effort`; `text.verbosity`;
- `tools` of type `function` -> chat function tools (`strict` only when sent);
  `tool_choice` `none` / `auto` / `required` / `{"type": "function", "name": ...}`;
- `text.format` `text` / `json_object` / `json_schema` -> `response_format`;
- `stream` (with usage always asked of the upstream).

Accepted and echoed, with nothing to do: `metadata`, `store` (nothing is stored either way),
`max_tool_calls` (it bounds built-in tools, which are refused), `stream_options`
(`include_obfuscation`: no obfuscation is added), `background: false`, `include: []`,
`truncation: "disabled"`, `top_logprobs: 0`, `service_tier` `auto` / `default`. Hints that
do not reach every route: `prompt_cache_breakpoint` marks on parts are not forwarded.

Refused (400, `param` names the field): `previous_response_id` and `conversation` (no stored
conversations), `prompt` (no stored prompt templates), `background: true`, a non-empty
`include`, `truncation: "auto"`, `top_logprobs` > 0, other `service_tier`s (priced apart),
`reasoning.summary`, built-in and other non-function tools (web_search, file_search,
computer_use, code_interpreter, image_generation, mcp, shell, custom...) and tool choices
naming them or `allowed_tools`, `input_image` by `file_id`, `input_file` and `input_audio`
parts, `item_reference`, `reasoning` and every other non-message input item, other
`text.format` types, and any field this list does not name.
"""

from __future__ import annotations

from typing import Any

from forge.domain.errors import InvalidRequest, UnsupportedParameter
from forge.domain.money import Usage

# Fields handled below, by name; any other field of a request is refused.
_KNOWN = {
    "model", "input", "instructions", "stream", "stream_options", "max_output_tokens",
    "temperature", "top_p", "tools", "tool_choice", "parallel_tool_calls", "text",
    "reasoning", "metadata", "user", "safety_identifier", "prompt_cache_key", "store",
    "max_tool_calls", "background", "include", "truncation", "top_logprobs", "service_tier",
    "previous_response_id", "conversation", "prompt",
}  # fmt: skip
_STATELESS = (
    "previous_response_id",
    "conversation",
)
_FUNCTION_TOOL_FIELDS = {"type", "name", "description", "parameters", "strict"}
_FORWARDED = ("temperature", "top_p", "parallel_tool_calls", "user", "safety_identifier")
# A chat finish_reason -> the Response's status and incomplete_details.reason.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _refuse(param: str, message: str) -> UnsupportedParameter:
    return UnsupportedParameter(message, param=param)


def _check_request(request: dict[str, Any]) -> None:
    """Refuse every field the chat translation cannot honour, naming it."""
    for name in request:
        if name not in _KNOWN:
            raise _refuse(name, f"'{name}' is not supported by this gateway's Responses API")
    for name in _STATELESS:
        if request.get(name) is not None:
            raise _refuse(
                name,
                f"'{name}' is not supported: the gateway stores no responses or"
                " conversations; send the whole conversation in `input`",
            )
    if request.get("prompt") is not None:
        raise _refuse("prompt", "stored prompt templates are not supported; send `input`")
    if request.get("background"):
        raise _refuse("background", "background responses are not supported; use `stream`")
    if request.get("include"):
        raise _refuse("include", "`include` is not supported: no extra output is available")
    if request.get("truncation") == "auto":
        raise _refuse("truncation", "truncation 'auto' is not supported; trim `input` yourself")
    if request.get("top_logprobs"):
        raise _refuse("top_logprobs", "log probabilities are not available through this API")
    if request.get("service_tier") not in (None, "auto", "default"):
        raise _refuse("service_tier", "only the 'auto' and 'default' service tiers are served")
    reasoning = request.get("reasoning") or {}
    for name in reasoning:
        if name != "effort" and reasoning[name] is not None:
            raise _refuse(f"reasoning.{name}", "reasoning summaries are not available")


# Input ---------------------------------------------------------------------------------------
def _text_part(text: Any, where: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise InvalidRequest(f"{where}.text: must be a string", param=f"{where}.text")
    return {"type": "text", "text": text}


def _image_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    if part.get("file_id") is not None:
        raise _refuse(f"{where}.file_id", "images by file_id are not supported; send image_url")
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{where}.image_url: an image URL is required", param=where)
    image: dict[str, Any] = {"url": url}
    if part.get("detail") is not None:
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _content(content: Any, role: str, where: str) -> str | list[dict[str, Any]]:
    """A message's content as chat content: a string, or text (and user image) parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content: a string or a list of parts", param=where)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part, dict):
            raise InvalidRequest(f"{at}: a content part is an object", param=at)
        if kind in ("input_text", "output_text"):
            parts.append(_text_part(part.get("text"), at))
        elif kind == "refusal" and role == "assistant":
            parts.append(_text_part(part.get("refusal"), at))
        elif kind == "input_image" and role == "user":
            parts.append(_image_part(part, at))
        else:
            raise _refuse(
                f"{at}.type",
                f"content parts of type '{kind}' in {role} messages are not supported",
            )
    if role == "assistant":  # chat's assistant content is text
        return "".join(p["text"] for p in parts)
    return parts


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "system", "developer", "assistant"):
        raise InvalidRequest(
            f"{where}.role: one of user, system, developer, assistant", param=f"{where}.role"
        )
    return {"role": role, "content": _content(item.get("content"), str(role), where)}


def _string(item: dict[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{where}.{name}: a non-empty string", param=f"{where}.{name}")
    return value


def _add_call(messages: list[dict[str, Any]], item: dict[str, Any], where: str) -> None:
    """A function_call item: a tool call of the assistant turn it follows (or a new one)."""
    arguments = item.get("arguments")
    if not isinstance(arguments, str):
        raise InvalidRequest(f"{where}.arguments: a string", param=f"{where}.arguments")
    call = {
        "id": _string(item, "call_id", where),
        "type": "function",
        "function": {"name": _string(item, "name", where), "arguments": arguments},
    }
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
        last["content"] = last["content"] or None
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _tool_result(item: dict[str, Any], where: str) -> dict[str, Any]:
    output = item.get("output")
    if isinstance(output, list):
        texts = []
        for j, part in enumerate(output):
            at = f"{where}.output[{j}]"
            if not isinstance(part, dict) or part.get("type") != "input_text":
                kind = part.get("type") if isinstance(part, dict) else None
                raise _refuse(f"{at}.type", f"function outputs of type '{kind}' are not supported")
            texts.append(_text_part(part.get("text"), at)["text"])
        output = "".join(texts)
    if not isinstance(output, str):
        raise InvalidRequest(f"{where}.output: a string", param=f"{where}.output")
    return {"role": "tool", "tool_call_id": _string(item, "call_id", where), "content": output}


def _messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if request.get("instructions"):
        messages.append({"role": "system", "content": request["instructions"]})
    items = request.get("input")
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}]
    for i, item in enumerate(items or []):
        where = f"input[{i}]"
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            _add_call(messages, item, where)
        elif kind == "function_call_output":
            messages.append(_tool_result(item, where))
        elif kind == "item_reference":
            raise _refuse(f"{where}.type", "item references need stored items; send the item")
        else:
            raise _refuse(f"{where}.type", f"input items of type '{kind}' are not supported")
    if not messages:
        raise InvalidRequest("input: at least one message is required", param="input")
    return messages


# Tools and formats ---------------------------------------------------------------------------
def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for j, tool in enumerate(tools):
        where = f"tools[{j}]"
        if tool.get("type") != "function":
            raise _refuse(
                f"{where}.type",
                f"tools of type '{tool.get('type')}' are not supported: only function tools"
                " are translated to every route",
            )
        for name, value in tool.items():
            if name not in _FUNCTION_TOOL_FIELDS and value not in (None, False):
                raise _refuse(f"{where}.{name}", f"function tool field '{name}' is not supported")
        function: dict[str, Any] = {"name": _string(tool, "name", where)}
        for name in ("description", "parameters", "strict"):
            if tool.get(name) is not None:
                function[name] = tool[name]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = _string(choice, "name", "tool_choice")
        return {"type": "function", "function": {"name": name}}
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise _refuse("tool_choice", f"tool_choice '{kind}' is not supported")


def _response_format(text: dict[str, Any]) -> dict[str, Any] | None:
    for name in text:
        if name not in ("format", "verbosity"):
            raise _refuse(f"text.{name}", f"'text.{name}' is not supported")
    fmt = text.get("format") or {"type": "text"}
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema: dict[str, Any] = {
            "name": _string(fmt, "name", "text.format"),
            "schema": fmt.get("schema") or {},
        }
        for name in ("description", "strict"):
            if fmt.get(name) is not None:
                schema[name] = fmt[name]
        return {"type": "json_schema", "json_schema": schema}
    raise _refuse("text.format.type", f"text format '{kind}' is not supported")


def chat_body_from_responses(request: dict[str, Any]) -> dict[str, Any]:
    """A Responses request (as the openai SDK sends it) as an OpenAI chat.completions body;
    raises UnsupportedParameter for what it cannot carry faithfully."""
    _check_request(request)
    body: dict[str, Any] = {
        "model": request.get("model"),
        "messages": _messages(request),
        "stream": bool(request.get("stream")),
    }
    if body["stream"]:
        body["stream_options"] = {"include_usage": True}
    if request.get("max_output_tokens") is not None:
        body["max_tokens"] = request["max_output_tokens"]
    for name in _FORWARDED:
        if request.get(name) is not None:
            body[name] = request[name]
    if request.get("prompt_cache_key") is not None:
        body["prompt_cache_key"] = request["prompt_cache_key"]
    if (effort := (request.get("reasoning") or {}).get("effort")) is not None:
        body["reasoning_effort"] = effort
    if tools := request.get("tools"):
        body["tools"] = _tools(tools)
    if (choice := request.get("tool_choice")) is not None:
        body["tool_choice"] = _tool_choice(choice)
    text = request.get("text") or {}
    if (response_format := _response_format(text)) is not None:
        body["response_format"] = response_format
    if text.get("verbosity") is not None:
        body["verbosity"] = text["verbosity"]
    return body


# Output --------------------------------------------------------------------------------------
def response_echo(request: dict[str, Any]) -> dict[str, Any]:
    """What a Response repeats of its request (the same in every event of a stream)."""
    tools = [
        {
            "type": "function",
            "name": t.get("name"),
            "description": t.get("description"),
            "parameters": t.get("parameters"),
            "strict": t.get("strict"),
        }
        for t in request.get("tools") or []
    ]
    text = request.get("text") or {}
    return {
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "metadata": request.get("metadata") or {},
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": (request.get("reasoning") or {}).get("effort"), "summary": None},
        "temperature": request.get("temperature"),
        "text": {"format": text.get("format") or {"type": "text"}, **_verbosity(text)},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": tools,
        "top_p": request.get("top_p"),
        "truncation": "disabled",
        "user": request.get("user"),
        "background": False,
    }


def _verbosity(text: dict[str, Any]) -> dict[str, Any]:
    return {"verbosity": text["verbosity"]} if text.get("verbosity") is not None else {}


def response_status(finish_reason: str | None) -> tuple[str, dict[str, str] | None]:
    """A chat finish_reason as a Response's status and incomplete_details."""
    reason = _INCOMPLETE.get(str(finish_reason))
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def responses_usage(usage: Usage, cache_write_tokens: int, reasoning_tokens: int) -> dict[str, Any]:
    """Usage in the Responses shape; cached tokens are a subset of input tokens, reasoning
    tokens a subset of output tokens."""
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_input_tokens,
            "cache_write_tokens": cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": min(reasoning_tokens, usage.output_tokens)},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def reasoning_tokens(chat_usage: Any) -> int:
    """Reasoning tokens as an OpenAI-shaped chat usage reports them (0 when it does not)."""
    if not isinstance(chat_usage, dict):
        return 0
    details = chat_usage.get("completion_tokens_details") or {}
    value = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return value if isinstance(value, int) and value > 0 else 0


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def message_item(item_id: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def response_object(
    echo: dict[str, Any],
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    incomplete_details: dict[str, str] | None = None,
    error: dict[str, Any] | None = None,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """A Response object as OpenAI returns one."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": completed_at,
        "error": error,
        "incomplete_details": incomplete_details,
        "model": model,
        "output": output,
        "usage": usage,
        **echo,
    }


def response_from_completion(
    completion: dict[str, Any],
    usage: Usage,
    cache_write_tokens: int,
    echo: dict[str, Any],
    *,
    response_id: str,
    now: int,
) -> dict[str, Any]:
    """The gateway's OpenAI-shaped chat answer as a Response: one message item (its text, or
    refusal), then one function_call item per tool call."""
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    status, incomplete = response_status(choice.get("finish_reason"))
    item_status = "incomplete" if incomplete else "completed"
    suffix = response_id.removeprefix("resp_")
    output: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    if reply.get("content"):
        content.append(output_text(str(reply["content"])))
    if reply.get("refusal"):
        content.append({"type": "refusal", "refusal": str(reply["refusal"])})
    if content:
        output.append(message_item(f"msg_{suffix}", content, item_status))
    for n, call in enumerate(reply.get("tool_calls") or []):
        function = call.get("function") or {}
        output.append(
            function_call_item(
                f"fc_{suffix}_{n}",
                str(call.get("id") or f"call_{suffix}_{n}"),
                str(function.get("name") or ""),
                str(function.get("arguments") or ""),
                "completed",
            )
        )
    return response_object(
        echo,
        response_id=response_id,
        created_at=now,
        model=str(completion.get("model") or ""),
        status=status,
        output=output,
        usage=responses_usage(usage, cache_write_tokens, reasoning_tokens(completion.get("usage"))),
        incomplete_details=incomplete,
        completed_at=now if status == "completed" else None,
    )
