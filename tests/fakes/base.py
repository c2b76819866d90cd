"""What every fake provider shares: a real HTTP server on 127.0.0.1 (uvicorn in a thread),
scripted faults per upstream model and how they are played (status answers, hangs, cut or
malformed streams), server-sent event framing, deterministic answers, and a log of what it was
asked and what usage it reported, so tests compute every charge independently of the gateway."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive

_VOCABULARY = (
    *("forge", "tokens", "ledger", "balance", "budget", "route", "stream", "receipt", "settle"),
    *("hold", "wallet", "credit", "charge", "model", "answer", "gateway", "exact", "honest"),
)
CACHE_MIN_BYTES = 1024  # like the providers: only long prefixes are cached


def tokens_of(text: str) -> int:
    """The fakes' tokenizer: 4 UTF-8 bytes a token, rounded up."""
    return -(-len(text.encode("utf-8")) // 4)


def reply_words(prompt: str, max_tokens: int | None, *, endless: bool = False) -> list[str]:
    """8-24 deterministic words (one token each), cut at max_tokens unless `endless`."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    length = 200 if endless else 8 + digest[0] % 17
    words = [_VOCABULARY[(digest[i % 32] + i) % len(_VOCABULARY)] for i in range(length)]
    if max_tokens is not None and not endless:
        words = words[:max_tokens]
    return words


def sse_event(
    payload: dict[str, Any] | str, *, event: str | None = None, newline: str = "\n"
) -> str:
    """One server-sent event: an optional `event:` line, then `data:` with the payload as
    JSON (a string goes as it is: `[DONE]`, or a broken body), then a blank line."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    lines = [f"event: {event}"] if event else []
    lines.append(f"data: {data}")
    return newline.join(lines) + newline * 2


def wants_tool(prompt: str, tools: list[Any] | None) -> bool:
    """The fakes call the first tool when the last user text asks about the weather."""
    return bool(tools) and "weather" in prompt.lower()


@dataclass
class Fault:
    """What the fake does instead of answering normally, once per scripted request."""

    kind: Literal["status", "timeout", "malformed", "cut", "endless", "error_event", "paced"]
    status: int = 500
    retry_after: str | None = None
    after: int = 2  # chunks sent before a cut / error event
    seconds: float = 5.0  # how long a timeout hangs; a paced stream's wait for its first event
    gap: float = 0.0  # a paced stream's wait between two events
    body: dict[str, Any] | None = None  # a status fault's whole error body, as scripted
    headers: dict[str, str] | None = None  # and the headers it answers with


@dataclass
class Call:
    path: str
    model: str
    stream: bool
    body: dict[str, Any]
    headers: dict[str, str]
    status: int = 200
    fault: str | None = None
    usage: dict[str, Any] | None = None  # the usage the fake reported, in its own shape
    text: str = ""
    closed_early: bool = False  # the client closed the connection before the answer's end
    # The request's ASGI channel: a hanging (timeout) fault listens on it for the client
    # closing the connection, as a gateway that cancels its upstream call does.
    receive: Receive | None = field(default=None, repr=False, compare=False)


def error_event_at(fault: Fault | None, index: int) -> bool:
    """An error_event fault sends its error in place of the stream's `index`-th piece."""
    return fault is not None and fault.kind == "error_event" and index == fault.after


@dataclass
class FakeProvider:
    """Subclasses add routes to `app`; their handlers `record` each call, `take_fault`, answer
    a `scripted_failure` if there is one, and reply as JSON or as a `stream` of `sse` events."""

    # The provider's dialect: Anthropic names each event after its type, Gemini ends lines
    # with CRLF; what a malformed (unstreamed) answer says.
    sse_names_events: ClassVar[bool] = False
    sse_newline: ClassVar[str] = "\n"
    malformed_body: ClassVar[str] = "{not json"

    name: str
    api_key: str = "test-key"
    app: FastAPI = field(default_factory=lambda: FastAPI(docs_url=None, redoc_url=None))
    calls: list[Call] = field(default_factory=list)
    _faults: dict[str, list[Fault]] = field(default_factory=dict)
    _always: dict[str, Fault] = field(default_factory=dict)
    _seen_prefixes: set[str] = field(default_factory=set)
    # Upstream model -> its context window in tokens: a longer prompt is refused the way the
    # provider refuses it. Configuration like api_key, so reset() keeps it.
    context_windows: dict[str, int] = field(default_factory=dict)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    port: int = 0

    # Scripting ---------------------------------------------------------------------------
    def fail(self, model: str, *faults: Fault) -> None:
        """The next requests for `model` meet these faults, in order."""
        self._faults.setdefault(model, []).extend(faults)

    def always(self, model: str, fault: Fault) -> None:
        self._always[model] = fault

    def fault_for(self, model: str) -> Fault | None:
        queued = self._faults.get(model)
        if queued:
            return queued.pop(0)
        return self._always.get(model)

    def reset(self) -> None:
        self.calls.clear()
        self._faults.clear()
        self._always.clear()
        self._seen_prefixes.clear()

    def over_context(self, model: str, prompt_tokens: int) -> int | None:
        """The model's context window when `prompt_tokens` do not fit in it, else None."""
        window = self.context_windows.get(model)
        return window if window is not None and prompt_tokens > window else None

    def calls_for(self, model: str) -> list[Call]:
        return [c for c in self.calls if c.model == model]

    def cache_lookup(self, prefix: str) -> bool:
        """True if this prompt prefix was cached by an earlier request (then it is now)."""
        key = hashlib.sha256(prefix.encode()).hexdigest()
        seen = key in self._seen_prefixes
        self._seen_prefixes.add(key)
        return seen

    # Answering ---------------------------------------------------------------------------
    def record(self, request: Request, model: str, stream: bool, body: Any) -> Call:
        """Log a request as it arrived; the handler fills in what it answered."""
        call = Call(request.url.path, model, stream, body, dict(request.headers))
        call.receive = request.receive
        self.calls.append(call)
        return call

    async def take_fault(self, call: Call) -> Fault | None:
        """The call's scripted fault, noted on it; a timeout fault hangs here first (until
        `seconds` have passed, or the client has closed the connection: `closed_early`)."""
        fault = self.fault_for(call.model)
        call.fault = fault.kind if fault else None
        if fault is not None and fault.kind == "timeout":
            await _hang(call, fault.seconds)
        return fault

    def fault_error(self, fault: Fault) -> Response:
        """The provider's error answer to a status fault."""
        raise NotImplementedError

    def scripted_failure(self, call: Call, fault: Fault | None) -> Response | None:
        """What a status fault (or, unstreamed, a malformed one) answers instead of a reply;
        other faults play out in the stream."""
        if fault is None:
            return None
        if fault.kind == "status":
            call.status = fault.status
            if fault.body is not None:
                return JSONResponse(fault.body, status_code=fault.status, headers=fault.headers)
            return self.fault_error(fault)
        if fault.kind == "malformed" and not call.stream:
            return Response(self.malformed_body, media_type="application/json")
        return None

    def sse(self, payload: dict[str, Any] | str, *, event: str | None = None) -> str:
        """One event framed in this provider's dialect."""
        if event is None and self.sse_names_events and isinstance(payload, dict):
            event = str(payload["type"])
        return sse_event(payload, event=event, newline=self.sse_newline)

    def stream(
        self, call: Call, events: AsyncIterator[str], fault: Fault | None, *, broken: str
    ) -> StreamingResponse:
        """An event stream that plays `fault` out: `broken` first when malformed, a dropped
        connection when cut, a slow model when endless, a model thinking `seconds` before its
        first event and `gap` between two when paced."""
        return StreamingResponse(
            _guarded(call, events, fault, broken), media_type="text/event-stream"
        )

    # Serving -----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeProvider:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="critical", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._server.run, daemon=True, name=self.name)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fake {self.name} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


async def _hang(call: Call, seconds: float) -> None:
    """A model that takes `seconds` to answer; one whose client hangs up stops (the body was
    read, so the next message on the channel is the disconnect)."""
    if call.receive is None:
        await asyncio.sleep(seconds)
        return
    try:
        async with asyncio.timeout(seconds):
            while (await call.receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return
    call.closed_early = True


async def _guarded(
    call: Call, events: AsyncIterator[str], fault: Fault | None, broken: str
) -> AsyncIterator[str]:
    """Send `events`; with a cut fault, drop the connection after `fault.after` events (the
    server raises, so the response ends without its final chunk); notes an early close."""
    sent = 0
    finished = False
    paced = fault is not None and fault.kind == "paced"
    try:
        async for event in events:
            if paced and fault is not None:
                await asyncio.sleep(fault.seconds if sent == 0 else fault.gap)
            if fault is not None and fault.kind == "cut" and sent >= fault.after:
                raise ConnectionAbortedError("the fake cuts this stream")
            if fault is not None and fault.kind == "malformed" and sent == 0:
                yield broken
                return
            yield event
            sent += 1
            if fault is not None and fault.kind == "endless":
                await asyncio.sleep(0.005)  # a slow model: a client can leave mid-way
        finished = True
    finally:
        if not finished:
            call.closed_early = True


def schema_instance(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """A deterministic value that satisfies a (structured outputs) JSON schema."""
    if "$ref" in schema:
        return schema_instance(defs[str(schema["$ref"]).rsplit("/", 1)[-1]], defs)
    if schema.get("enum"):
        return schema["enum"][0]
    if schema.get("anyOf"):
        return schema_instance(schema["anyOf"][0], defs)
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: schema_instance(value, defs) for name, value in properties.items()}
    if kind == "array":
        return [schema_instance(schema.get("items") or {}, defs)]
    return {"string": "Paris", "integer": 21, "number": 21.5, "boolean": True}.get(str(kind))
