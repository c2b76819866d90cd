"""The gateway's OpenAI chunks as a Responses event stream, for `POST /v1/responses`.

response.created and response.in_progress; then, item by item, output_item.added,
content_part.added, output_text.delta (refusal.delta) ... output_text.done, content_part.done,
output_item.done for the message, and output_item.added, function_call_arguments.delta ...
function_call_arguments.done, output_item.done for each tool call; last response.completed
(response.incomplete when the output stopped at its limit) with the charged usage, or
response.failed when the upstream stream was cut after its first byte. Every event carries
its sequence_number, from 0.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from forge.domain.money import Usage
from forge.providers.openai_format.responses import (
    function_call_item,
    message_item,
    output_text,
    response_object,
    response_status,
    responses_usage,
)


@dataclass
class _OpenItem:
    """The output item being streamed: a message (and its open content part) or a call."""

    item: dict[str, Any]
    output_index: int
    call_index: int | None = None  # the chat tool call index of a function_call item
    part: dict[str, Any] | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)


class ResponsesStreamWriter:
    """OpenAI chunks (from the gateway) -> Responses stream events, item by item."""

    def __init__(self, echo: dict[str, Any], response_id: str, model: str, created_at: int) -> None:
        self.echo = echo
        self.id = response_id
        self.model = model
        self.created_at = created_at
        self.finish_reason: str | None = None
        self._suffix = response_id.removeprefix("resp_")
        self._sequence = 0
        self._started = False
        self._output: list[dict[str, Any]] = []
        self._open: _OpenItem | None = None
        self._messages = 0
        self._calls = 0

    # Events -----------------------------------------------------------------------------
    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _response(self, status: str, **values: Any) -> dict[str, Any]:
        return response_object(
            self.echo,
            response_id=self.id,
            created_at=self.created_at,
            model=self.model,
            status=status,
            output=copy.deepcopy(self._output),
            **values,
        )

    def _start(self, model: str | None) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        if model:
            self.model = model
        return [
            self._event("response.created", response=self._response("in_progress")),
            self._event("response.in_progress", response=self._response("in_progress")),
        ]

    def _add(self, item: dict[str, Any], call_index: int | None = None) -> list[dict[str, Any]]:
        events = self._close()
        self._output.append(item)
        self._open = _OpenItem(item, len(self._output) - 1, call_index)
        events.append(
            self._event(
                "response.output_item.added",
                output_index=self._open.output_index,
                item=copy.deepcopy(item),
            )
        )
        return events

    def _where(self, open_item: _OpenItem) -> dict[str, Any]:
        return {"item_id": open_item.item["id"], "output_index": open_item.output_index}

    # Message content --------------------------------------------------------------------
    def _message(self) -> list[dict[str, Any]]:
        if self._open is not None and self._open.item["type"] == "message":
            return []
        self._messages += 1
        number = "" if self._messages == 1 else f"_{self._messages - 1}"
        return self._add(message_item(f"msg_{self._suffix}{number}", [], "in_progress"))

    def _content(self, kind: str, text: str) -> list[dict[str, Any]]:
        events = self._message()
        open_item = self._open
        assert open_item is not None
        if open_item.part is None or open_item.part["type"] != kind:
            events += self._close_part(open_item)
            part = output_text("") if kind == "output_text" else {"type": kind, kind: ""}
            open_item.part = part
            open_item.item["content"].append(part)
            events.append(
                self._event(
                    "response.content_part.added",
                    **self._where(open_item),
                    content_index=len(open_item.item["content"]) - 1,
                    part=copy.deepcopy(part),
                )
            )
        part = open_item.part
        where = {**self._where(open_item), "content_index": len(open_item.item["content"]) - 1}
        if kind == "output_text":
            part["text"] += text
            events.append(
                self._event("response.output_text.delta", **where, delta=text, logprobs=[])
            )
        else:
            part["refusal"] += text
            events.append(self._event("response.refusal.delta", **where, delta=text))
        return events

    def _close_part(self, open_item: _OpenItem) -> list[dict[str, Any]]:
        part = open_item.part
        if part is None:
            return []
        open_item.part = None
        where = {**self._where(open_item), "content_index": len(open_item.item["content"]) - 1}
        if part["type"] == "output_text":
            done = self._event("response.output_text.done", **where, text=part["text"], logprobs=[])
        else:
            done = self._event("response.refusal.done", **where, refusal=part["refusal"])
        return [
            done,
            self._event("response.content_part.done", **where, part=copy.deepcopy(part)),
        ]

    # Tool calls -------------------------------------------------------------------------
    def _call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        index = int(call.get("index", 0))
        function = call.get("function") or {}
        events: list[dict[str, Any]] = []
        if self._open is None or self._open.call_index != index:
            n = self._calls
            self._calls += 1
            item = function_call_item(
                f"fc_{self._suffix}_{n}",
                str(call.get("id") or f"call_{self._suffix}_{n}"),
                str(function.get("name") or ""),
                "",
                "in_progress",
            )
            events += self._add(item, index)
        open_item = self._open
        assert open_item is not None
        if arguments := function.get("arguments"):
            open_item.item["arguments"] += arguments
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    **self._where(open_item),
                    delta=arguments,
                )
            )
        return events

    def _close(self) -> list[dict[str, Any]]:
        """Finish the open item: its part and arguments done, then output_item.done."""
        open_item, self._open = self._open, None
        if open_item is None:
            return []
        item = open_item.item
        if item["type"] == "message":
            events = self._close_part(open_item)
            status = "incomplete" if response_status(self.finish_reason)[1] else "completed"
        else:
            events = [
                self._event(
                    "response.function_call_arguments.done",
                    **self._where(open_item),
                    arguments=item["arguments"],
                )
            ]
            status = "completed"
        item["status"] = status
        events.append(
            self._event(
                "response.output_item.done",
                output_index=open_item.output_index,
                item=copy.deepcopy(item),
            )
        )
        return events

    # The stream -------------------------------------------------------------------------
    def chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._start(chunk.get("model"))
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if text := delta.get("content"):
                events += self._content("output_text", str(text))
            if refusal := delta.get("refusal"):
                events += self._content("refusal", str(refusal))
            for call in delta.get("tool_calls") or []:
                events += self._call(call)
            if finish := choice.get("finish_reason"):
                self.finish_reason = str(finish)
        return events

    def finish(
        self,
        usage: Usage,
        cache_write_tokens: int,
        reasoning_tokens: int,
        now: int,
        extra: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """The end: the open item done, then response.completed (or .incomplete) with the
        charged usage; `extra` rides on that last event (the receipt)."""
        events = self._start(None) + self._close()
        status, incomplete = response_status(self.finish_reason)
        response = self._response(
            status,
            usage=responses_usage(usage, cache_write_tokens, reasoning_tokens),
            incomplete_details=incomplete,
            completed_at=now if status == "completed" else None,
        )
        kind = "response.completed" if status == "completed" else "response.incomplete"
        events.append(self._event(kind, response=response, **extra))
        return events

    def fail(
        self,
        message: str,
        usage: Usage | None,
        cache_write_tokens: int,
        extra: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """A stream cut after its first byte: response.failed with what was delivered (the
        open item left incomplete) and what it was charged; never response.completed."""
        events = self._start(None)
        if self._open is not None:
            self._open.item["status"] = "incomplete"
            self._open = None
        response = self._response(
            "failed",
            usage=responses_usage(usage, cache_write_tokens, 0) if usage else None,
            error={"code": "server_error", "message": message},
        )
        events.append(self._event("response.failed", response=response, **extra))
        return events
