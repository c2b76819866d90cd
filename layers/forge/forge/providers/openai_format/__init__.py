"""OpenAI's other client APIs <-> OpenAI chat, as pure functions over JSON values.

Inbound only, like `anthropic_format.inbound`: every route speaks chat inside the gateway, so
`POST /v1/responses` (`responses`, `responses_stream`) and the legacy `POST /v1/completions`
(`completions`) become one chat body each, and the gateway's chat answer (or chunks) becomes
their own shapes. What cannot be carried faithfully is refused with a 400 naming the param.
"""

from forge.providers.openai_format.completions import (
    CompletionsStreamWriter,
    chat_body_from_completions,
    text_completion_from_chat,
)
from forge.providers.openai_format.responses import (
    chat_body_from_responses,
    reasoning_tokens,
    response_echo,
    response_from_completion,
)
from forge.providers.openai_format.responses_stream import ResponsesStreamWriter

__all__ = [
    "CompletionsStreamWriter",
    "ResponsesStreamWriter",
    "chat_body_from_completions",
    "chat_body_from_responses",
    "reasoning_tokens",
    "response_echo",
    "response_from_completion",
    "text_completion_from_chat",
]
