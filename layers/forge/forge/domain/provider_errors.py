"""A provider's refusal, kept recognisable in whichever dialect the client speaks.

A provider answers an error in its own dialect: OpenAI (and OpenAI-compatible upstreams)
`{"error": {"message", "type", "param", "code"}}`, Anthropic
`{"type": "error", "error": {"type", "message"}}`, Gemini
`{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message"}}`. When the gateway returns
a refusal to the client (the request itself was refused: 400, 413, 422 and other client
statuses, see `forge.domain.upstream.classify`), it answers in the client's dialect: OpenAI's
error object on OpenAI-shaped endpoints, Anthropic's on /v1/messages. An upstream of the same
dialect passes through as it is (message, type, code, param); another dialect is mapped:

| Anthropic error.type  | Gemini error.status | OpenAI type           | OpenAI code               |
|-----------------------|---------------------|-----------------------|---------------------------|
| invalid_request_error | INVALID_ARGUMENT    | invalid_request_error | context_length_exceeded * |
| invalid_request_error | INVALID_ARGUMENT    | invalid_request_error | upstream_rejected_request |
| -                     | FAILED_PRECONDITION | invalid_request_error | upstream_rejected_request |
| -                     | OUT_OF_RANGE        | invalid_request_error | upstream_rejected_request |
| request_too_large     | -                   | invalid_request_error | request_too_large         |
| authentication_error  | UNAUTHENTICATED     | authentication_error  | invalid_api_key           |
| permission_error      | PERMISSION_DENIED   | permission_error      | permission_denied         |
| not_found_error       | NOT_FOUND           | invalid_request_error | not_found                 |
| billing_error         | RESOURCE_EXHAUSTED+ | insufficient_quota    | insufficient_quota        |
| rate_limit_error      | RESOURCE_EXHAUSTED  | rate_limit_error      | rate_limit_exceeded       |
| api_error             | INTERNAL            | server_error          | server_error              |
| overloaded_error      | UNAVAILABLE         | server_error          | overloaded                |
| timeout_error         | DEADLINE_EXCEEDED   | server_error          | timeout                   |

* when the message says the prompt does not fit: Anthropic's "prompt is too long: N tokens >
M maximum" or "input length and `max_tokens` exceed context limit", Gemini's "The input token
count (N) exceeds the maximum number of tokens allowed (M)"; `param` is then `messages`, as
OpenAI sends it. + at HTTP 402 (Gemini's prepaid credit ran out). Another type or status maps
by its HTTP status, as the rows pair them (400, 401, 402, 403, 404, 413, 429, 500, 503/529, 504).

An OpenAI-dialect refusal keeps its own type, code and param; one without a code whose
message says the context is too long ("maximum context length", "context window", as
OpenAI-compatible servers such as vLLM word it) becomes OpenAI's own (invalid_request_error,
`context_length_exceeded`, param `messages`), and one without any code gets
`upstream_rejected_request`, the gateway's own code.

On /v1/messages the Anthropic `error.type` is the provider's own for an Anthropic upstream;
for an OpenAI or Gemini upstream it follows the HTTP status as Anthropic's documentation
pairs them (400 and any other 4xx: invalid_request_error, 401 authentication_error,
402 billing_error, 403 permission_error, 404 not_found_error, 413 request_too_large,
429 rate_limit_error, 529 overloaded_error, other 5xx api_error), so a context overflow
is an invalid_request_error, as Anthropic's own is.

Only the rows of client statuses reach a client: 401, 403 and 404 are the operator's key or
catalog (the gateway falls back), 429 and 5xx are retried and fallen back; they are mapped for
completeness (and the receipts' attempts). The gateway's own code always rides along as
`forge_code: upstream_rejected_request`. Nothing of the provider's answer but these fields and
its message (with anything shaped like an API key removed) ever reaches the client: no
headers, no Google `details` (they can name the operator's project).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Dialect = Literal["openai", "anthropic", "gemini"]
FORGE_CODE = "upstream_rejected_request"
MAX_ERROR_MESSAGE = 2000  # characters of a provider's error message passed on to a client
# Anything shaped like a provider API key (OpenAI's sk-..., masked or not, Anthropic's
# sk-ant-..., Google's AIza...): a provider's message may echo the key it was sent.
_KEY_SHAPED = re.compile(r"\b(?:sk-|AIza)[A-Za-z0-9_\-*.]{6,}")
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"

# How each provider words "the prompt does not fit the model's context window".
_CONTEXT_OVERFLOW = re.compile(
    r"maximum context length|context window|context limit|prompt is too long"
    r"|exceeds the maximum number of tokens",
    re.IGNORECASE,
)

# (OpenAI type, OpenAI code) of Anthropic's error types and Gemini's statuses; a code of None
# means no OpenAI equivalent is known beyond "the request was refused" (the gateway's code).
_OPENAI_OF_ANTHROPIC: dict[str, tuple[str, str | None]] = {
    "invalid_request_error": ("invalid_request_error", None),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "authentication_error": ("authentication_error", "invalid_api_key"),
    "permission_error": ("permission_error", "permission_denied"),
    "not_found_error": ("invalid_request_error", "not_found"),
    "billing_error": ("insufficient_quota", "insufficient_quota"),
    "rate_limit_error": ("rate_limit_error", "rate_limit_exceeded"),
    "api_error": ("server_error", "server_error"),
    "overloaded_error": ("server_error", "overloaded"),
    "timeout_error": ("server_error", "timeout"),
}
_OPENAI_OF_GEMINI: dict[str, tuple[str, str | None]] = {
    "INVALID_ARGUMENT": ("invalid_request_error", None),
    "FAILED_PRECONDITION": ("invalid_request_error", None),
    "OUT_OF_RANGE": ("invalid_request_error", None),
    "UNAUTHENTICATED": ("authentication_error", "invalid_api_key"),
    "PERMISSION_DENIED": ("permission_error", "permission_denied"),
    "NOT_FOUND": ("invalid_request_error", "not_found"),
    "RESOURCE_EXHAUSTED": ("rate_limit_error", "rate_limit_exceeded"),
    "INTERNAL": ("server_error", "server_error"),
    "UNAVAILABLE": ("server_error", "overloaded"),
    "DEADLINE_EXCEEDED": ("server_error", "timeout"),
}
_OPENAI_OF_STATUS: dict[int, tuple[str, str | None]] = {
    401: ("authentication_error", "invalid_api_key"),
    402: ("insufficient_quota", "insufficient_quota"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", "server_error"),
    503: ("server_error", "overloaded"),
    504: ("server_error", "timeout"),
    529: ("server_error", "overloaded"),
}
_ANTHROPIC_OF_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class ProviderError:
    """A provider's error answer as its dialect has it. `code` is OpenAI's `error.code` or
    Gemini's `error.status` (INVALID_ARGUMENT…); `type` is OpenAI's or Anthropic's
    `error.type`; `param` is OpenAI's. Built by the provider adapters, secrets removed."""

    dialect: Dialect
    status: int
    message: str | None = None
    type: str | None = None
    code: str | None = None
    param: str | None = None


@dataclass(frozen=True)
class Refusal:
    """A provider's refusal as the client sees it: OpenAI's type, code and param, and the
    Anthropic error type for /v1/messages."""

    message: str
    type: str
    code: str
    param: str | None
    anthropic_type: str


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` without the given secrets or anything shaped like an API key, and no longer
    than a client needs."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEY_SHAPED.sub("[redacted]", text)[:MAX_ERROR_MESSAGE]


def anthropic_type_for_status(status: int) -> str:
    """The Anthropic error type Anthropic's documentation pairs with an HTTP status."""
    if status in _ANTHROPIC_OF_STATUS:
        return _ANTHROPIC_OF_STATUS[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def context_overflow(message: str | None) -> bool:
    """Does a provider's message say the prompt does not fit the model's context window?"""
    return bool(message) and _CONTEXT_OVERFLOW.search(message or "") is not None


def refusal_of(error: ProviderError | None, status: int) -> Refusal:
    """The client-facing identity of a provider's refusal (see the module's table)."""
    if error is None:
        error = ProviderError("openai", status)
    message = error.message or f"The provider refused the request (HTTP {status})"
    overflow = status != 413 and 400 <= status < 500 and context_overflow(error.message)
    if error.dialect == "openai":
        type_ = error.type or _openai_of_status(status)[0]
        code = error.code if error.code and not error.code.isdigit() else None
        param = error.param
        if code is None and overflow:  # as OpenAI itself words and types it
            type_, code, param = "invalid_request_error", CONTEXT_LENGTH_EXCEEDED, "messages"
        return Refusal(message, type_, code or FORGE_CODE, param, anthropic_type_for_status(status))
    if error.dialect == "anthropic":
        type_, code = _OPENAI_OF_ANTHROPIC.get(error.type or "", _openai_of_status(status))
        anthropic_type = error.type or anthropic_type_for_status(status)
    else:
        type_, code = _OPENAI_OF_GEMINI.get(error.code or "", _openai_of_status(status))
        if status == 402:  # Gemini's prepaid credit ran out (RESOURCE_EXHAUSTED at 402)
            type_, code = _OPENAI_OF_STATUS[402]
        anthropic_type = anthropic_type_for_status(status)
    param = None
    if overflow and type_ == "invalid_request_error":
        code, param = CONTEXT_LENGTH_EXCEEDED, "messages"
    return Refusal(message, type_, code or FORGE_CODE, param, anthropic_type)


def _openai_of_status(status: int) -> tuple[str, str | None]:
    if status in _OPENAI_OF_STATUS:
        return _OPENAI_OF_STATUS[status]
    return ("server_error", "server_error") if status >= 500 else ("invalid_request_error", None)
