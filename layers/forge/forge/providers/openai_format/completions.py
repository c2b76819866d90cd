"""`POST /v1/completions` (legacy): a completions request becomes one OpenAI chat body (its
prompt as one user message), and the gateway's chat answer, or its chunks, become
`text_completion` objects.

One prompt, one completion: the hold covers one. `prompt` is a string or a list of exactly
one string; several prompts and token-id prompts are refused (400 `unsupported_parameter`,
`param` "prompt"), and so are `echo: true`, `suffix`, `best_of` > 1, `n` > 1, `logprobs`
and any field OpenAI's legacy completions do not document. `max_tokens` defaults to 16, as
OpenAI documents it. `temperature`, `top_p`, `presence_penalty`, `frequency_penalty`,
`seed`, `stop`, `logit_bias` and `user` are chat parameters too and are forwarded as they
are. A stream sends its usage (with the receipt) in a last chunk with no choices only when
`stream_options.include_usage` is true, then `data: [DONE]`.
"""

from __future__ import annotations

from typing import Any

from forge.domain.errors import UnsupportedParameter
from forge.domain.money import Usage
from forge.domain.upstream import openai_usage

LEGACY_DEFAULT_MAX_TOKENS = 16
_FORWARDED = (
    "temperature", "top_p", "presence_penalty", "frequency_penalty", "seed", "stop",
    "logit_bias", "user",
)  # fmt: skip
_KNOWN = {
    *_FORWARDED, "model", "prompt", "max_tokens", "stream", "stream_options", "n", "best_of",
    "echo", "suffix", "logprobs",
}  # fmt: skip
_FINISH = {"stop": "stop", "length": "length", "content_filter": "content_filter"}


def _prompt(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        reason = "several prompts are not supported: each request returns one completion"
    elif isinstance(prompt, list) and prompt:
        reason = "token-id prompts are not supported: send the prompt as a string"
    else:
        reason = "the prompt must be a string or a list of one string"
    raise UnsupportedParameter(reason, param="prompt")


def _check(request: dict[str, Any]) -> None:
    for name in request:
        if name not in _KNOWN:
            raise UnsupportedParameter(
                f"'{name}' is not a parameter of the legacy completions API", param=name
            )
    if request.get("echo"):
        raise UnsupportedParameter("echo is not supported", param="echo")
    if request.get("suffix") is not None:
        raise UnsupportedParameter("suffix (insertion) is not supported", param="suffix")
    for name in ("best_of", "n"):
        if request.get(name) not in (None, 1):
            raise UnsupportedParameter(
                f"only {name}=1 is supported: each request returns one completion", param=name
            )
    if request.get("logprobs") is not None:
        raise UnsupportedParameter("logprobs are not supported", param="logprobs")
    if request.get("stream_options") is not None and not request.get("stream"):
        raise UnsupportedParameter(
            "stream_options is only allowed with stream=true", param="stream_options"
        )


def chat_body_from_completions(request: dict[str, Any]) -> dict[str, Any]:
    """A legacy completions request as an OpenAI chat.completions body (one user message)."""
    _check(request)
    body: dict[str, Any] = {
        "model": request.get("model"),
        "messages": [{"role": "user", "content": _prompt(request.get("prompt"))}],
        "max_tokens": request.get("max_tokens") or LEGACY_DEFAULT_MAX_TOKENS,
        "stream": bool(request.get("stream")),
    }
    if body["stream"]:
        body["stream_options"] = {"include_usage": True}
    for name in _FORWARDED:
        if request.get(name) is not None:
            body[name] = request[name]
    return body


def _finish(reason: Any) -> str | None:
    if reason is None:
        return None
    return _FINISH.get(str(reason), "stop")


def text_completion_from_chat(
    completion: dict[str, Any], usage: Usage, *, completion_id: str, now: int
) -> dict[str, Any]:
    """The gateway's OpenAI-shaped chat answer as a `text_completion`."""
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    answer: dict[str, Any] = {
        "id": completion_id,
        "object": "text_completion",
        "created": completion.get("created") or now,
        "model": completion.get("model"),
        "choices": [
            {
                "text": str(reply.get("content") or ""),
                "index": 0,
                "logprobs": None,
                "finish_reason": _finish(choice.get("finish_reason")) or "stop",
            }
        ],
        "usage": openai_usage(usage),
    }
    if completion.get("system_fingerprint"):
        answer["system_fingerprint"] = completion["system_fingerprint"]
    return answer


class CompletionsStreamWriter:
    """OpenAI chat chunks (from the gateway) -> `text_completion` chunks."""

    def __init__(self, completion_id: str, model: str, created: int, include_usage: bool) -> None:
        self.id = completion_id
        self.model = model
        self.created = created
        self.include_usage = include_usage

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if chunk.get("model"):
            self.model = str(chunk["model"])
        out = []
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content") or ""
            finish = _finish(choice.get("finish_reason"))
            if text or finish:
                out.append(
                    self._chunk(
                        [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]
                    )
                )
        return out

    def finish(self, usage: Usage, extra: dict[str, Any]) -> list[dict[str, Any]]:
        """The usage chunk (no choices), only when the client asked for it."""
        if not self.include_usage:
            return []
        return [{**self._chunk([]), "usage": openai_usage(usage), **extra}]
