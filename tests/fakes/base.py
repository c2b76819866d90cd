"""What every fake provider shares: a real HTTP server on 127.0.0.1 (uvicorn in a thread),
scripted faults per upstream model, deterministic answers, and a log of what it was asked and
what usage it reported, so tests compute every charge independently of the gateway."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI

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


def wants_tool(prompt: str, tools: list[Any] | None) -> bool:
    """The fakes call the first tool when the last user text asks about the weather."""
    return bool(tools) and "weather" in prompt.lower()


@dataclass
class Fault:
    """What the fake does instead of answering normally, once per scripted request."""

    kind: Literal["status", "timeout", "malformed", "cut", "endless", "error_event"]
    status: int = 500
    retry_after: str | None = None
    after: int = 2  # chunks sent before a cut / error event
    seconds: float = 5.0  # how long a timeout hangs


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
    closed_early: bool = False  # the client closed the stream before the end


@dataclass
class FakeProvider:
    """Subclasses add routes to `app` and call `begin`/`fault_for` in them."""

    name: str
    api_key: str = "test-key"
    app: FastAPI = field(default_factory=lambda: FastAPI(docs_url=None, redoc_url=None))
    calls: list[Call] = field(default_factory=list)
    _faults: dict[str, list[Fault]] = field(default_factory=dict)
    _always: dict[str, Fault] = field(default_factory=dict)
    _seen_prefixes: set[str] = field(default_factory=set)
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

    def calls_for(self, model: str) -> list[Call]:
        return [c for c in self.calls if c.model == model]

    def cache_lookup(self, prefix: str) -> bool:
        """True if this prompt prefix was cached by an earlier request (then it is now)."""
        key = hashlib.sha256(prefix.encode()).hexdigest()
        seen = key in self._seen_prefixes
        self._seen_prefixes.add(key)
        return seen

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


async def hang(fault: Fault) -> None:
    await asyncio.sleep(fault.seconds)


async def guarded(
    call: Call, events: AsyncIterator[str], fault: Fault | None, broken: Callable[[], str]
) -> AsyncIterator[str]:
    """Send `events`; with a cut fault, drop the connection after `fault.after` events (the
    server raises, so the response ends without its final chunk); notes an early close."""
    sent = 0
    finished = False
    try:
        async for event in events:
            if fault is not None and fault.kind == "cut" and sent >= fault.after:
                raise ConnectionAbortedError("the fake cuts this stream")
            if fault is not None and fault.kind == "malformed" and sent == 0:
                yield broken()
                return
            yield event
            sent += 1
            if fault is not None and fault.kind == "endless":
                await asyncio.sleep(0.005)  # a slow model: a client can leave mid-way
        finished = True
    finally:
        if not finished:
            call.closed_early = True
