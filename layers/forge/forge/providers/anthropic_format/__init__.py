"""Anthropic Messages <-> OpenAI chat, both ways, as pure functions over JSON values.

Outbound (a Claude route, `outbound`): an OpenAI chat body becomes a Messages request; a
Message, or its stream events, become chat.completion(.chunk) shapes.
Inbound (`POST /v1/messages`, `inbound` and `stream_writer`): a Messages request becomes an
OpenAI chat body, and the gateway's OpenAI-shaped answer (or chunks) becomes a Message (or
Messages stream events). Usage and stop reasons translate alike both ways (`terms`).
"""

from forge.providers.anthropic_format.inbound import (
    chat_body_from_messages,
    message_from_completion,
)
from forge.providers.anthropic_format.outbound import (
    MessagesStreamReader,
    completion_from_message,
    to_messages_request,
)
from forge.providers.anthropic_format.stream_writer import MessagesStreamWriter, error_event
from forge.providers.anthropic_format.terms import (
    ANTHROPIC_VERSION,
    anthropic_usage,
    usage_from_anthropic,
)

__all__ = [
    "ANTHROPIC_VERSION",
    "MessagesStreamReader",
    "MessagesStreamWriter",
    "anthropic_usage",
    "chat_body_from_messages",
    "completion_from_message",
    "error_event",
    "message_from_completion",
    "to_messages_request",
    "usage_from_anthropic",
]
