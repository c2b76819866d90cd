"""The gateway's OpenAI chunks as a Messages event stream, for `POST /v1/messages`."""

from __future__ import annotations

from typing import Any

from forge.domain.money import Usage
from forge.providers.anthropic_format.terms import FINISH_TO_STOP, anthropic_usage


def error_event(error_type: str, message: str, **details: Any) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message, **details}}


class MessagesStreamWriter:
    """OpenAI chunks (from the gateway) -> Messages stream events, block by block."""

    def __init__(self, model: str, request_id: str) -> None:
        self.model = model
        self.id = f"msg_{request_id}"
        self._started = False
        self._open: tuple[str, int] | None = None  # (kind, tool index) of the open block
        self._blocks = 0
        self.stop_reason: str | None = None

    def _start(self, model: str | None) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        if model:
            self.model = model
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Input is known only at the end (OpenAI-shaped upstreams report it last); the
            # final message_delta carries the cumulative totals.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [{"type": "message_start", "message": message}]

    def _close(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        self._open = None
        self._blocks += 1
        return [{"type": "content_block_stop", "index": self._blocks - 1}]

    def chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._start(chunk.get("model"))
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if text := delta.get("content"):
                if self._open is None or self._open[0] != "text":
                    events += self._close()
                    self._open = ("text", 0)
                    events.append(
                        {
                            "type": "content_block_start",
                            "index": self._blocks,
                            "content_block": {"type": "text", "text": ""},
                        }
                    )
                events.append(
                    {
                        "type": "content_block_delta",
                        "index": self._blocks,
                        "delta": {"type": "text_delta", "text": text},
                    }
                )
            for call in delta.get("tool_calls") or []:
                index = int(call.get("index", 0))
                function = call.get("function") or {}
                if self._open != ("tool", index):
                    events += self._close()
                    self._open = ("tool", index)
                    block: dict[str, Any] = {
                        "type": "tool_use",
                        "id": call.get("id"),
                        "name": function.get("name"),
                        "input": {},
                    }
                    events.append(
                        {
                            "type": "content_block_start",
                            "index": self._blocks,
                            "content_block": block,
                        }
                    )
                if arguments := function.get("arguments"):
                    events.append(
                        {
                            "type": "content_block_delta",
                            "index": self._blocks,
                            "delta": {"type": "input_json_delta", "partial_json": arguments},
                        }
                    )
            if finish := choice.get("finish_reason"):
                self.stop_reason = FINISH_TO_STOP.get(str(finish), "end_turn")
        return events

    def finish(
        self, usage: Usage, cache_write_tokens: int, extra: dict[str, Any]
    ) -> list[dict[str, Any]]:
        events = self._start(None) + self._close()
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason or "end_turn", "stop_sequence": None},
                "usage": anthropic_usage(usage, cache_write_tokens),
                **extra,
            }
        )
        events.append({"type": "message_stop"})
        return events

    def fail(self, error: dict[str, Any]) -> list[dict[str, Any]]:
        return [*self._start(None), error]
