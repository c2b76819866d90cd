"""HTTP plumbing shared by the provider adapters: pooled httpx clients, provider errors turned
into UpstreamError (with Retry-After), and a Server-Sent Events reader."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from forge.domain import strict_json
from forge.domain.provider_errors import Dialect, ProviderError, redact
from forge.domain.upstream import FailureKind, StreamState, UpstreamError

# One connection pool per event loop: Mangum may run each invocation on a new loop.
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)
CONNECT_TIMEOUT = 5.0

KeySource = str | Callable[[], str | None]


def _shared_client(origin: str, timeout: float) -> httpx.AsyncClient:
    pool = _pools.setdefault(asyncio.get_running_loop(), {})
    if origin not in pool:
        pool[origin] = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT))
    return pool[origin]


class UpstreamStream:
    """What every provider's open stream shares: its response, status and running state."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.state = StreamState()

    async def aclose(self) -> None:
        await self._response.aclose()


class HttpProvider:
    """What every provider adapter shares: the HTTP side of one upstream, which reads error
    answers in the provider's `dialect`."""

    dialect: Dialect = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: KeySource,
        *,
        timeout: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = HttpUpstream(
            base_url, api_key, timeout=timeout, transport=transport, dialect=self.dialect
        )


class HttpUpstream:
    """The HTTP side of one provider: its pooled client (or, in tests, a given transport)
    and its API key, resolved per call so a rotated secret is picked up."""

    def __init__(
        self,
        base_url: str,
        api_key: KeySource,
        *,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
        dialect: Dialect = "openai",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.dialect: Dialect = dialect
        self._api_key = api_key
        self._timeout = timeout
        self._transport = transport
        self._own_client: httpx.AsyncClient | None = None

    def key(self) -> str:
        key = self._api_key() if callable(self._api_key) else self._api_key
        if not key:
            raise UpstreamError("provider_key_missing", kind=FailureKind.ROUTE)
        return key

    def client(self) -> httpx.AsyncClient:
        if self._transport is None:
            return _shared_client(self.base_url, self._timeout)
        if self._own_client is None:  # the test seam: a fake upstream without patching
            self._own_client = httpx.AsyncClient(
                transport=self._transport,
                timeout=httpx.Timeout(self._timeout, connect=CONNECT_TIMEOUT),
            )
        return self._own_client

    async def post_json(
        self, url: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        try:
            response = await self.client().post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc
        if response.status_code != 200:
            raise self.error_from(response)
        try:  # strictly: an answer holding NaN or a lone surrogate could not be sent on
            payload = strict_json.loads(response.content)
        except ValueError as exc:
            raise _malformed("malformed_response", response.status_code) from exc
        if not isinstance(payload, dict):
            raise _malformed("malformed_response", response.status_code)
        return response.status_code, payload

    async def open_stream(
        self, url: str, body: dict[str, Any], headers: dict[str, str]
    ) -> httpx.Response:
        """Send the request and wait for the status line: failures before the first byte
        raise here, so the gateway can still retry or fall back."""
        client = self.client()
        request = client.build_request("POST", url, json=body, headers=headers)
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc
        if response.status_code != 200:
            try:
                await response.aread()
            except httpx.HTTPError:
                pass
            finally:
                await response.aclose()
            raise self.error_from(response)
        return response

    def error_from(self, response: httpx.Response) -> UpstreamError:
        """The provider's error answer, read in its dialect, without our key in it."""
        key = self._api_key() if callable(self._api_key) else self._api_key
        return error_from_response(response, self.dialect, secrets=(key,) if key else ())


def _malformed(reason: str, status: int) -> UpstreamError:
    """A 200 whose body is not what the provider documents: a glitch worth one retry."""
    return UpstreamError(reason, status, kind=FailureKind.RETRY)


def token_count(payload: dict[str, Any], field: str, status: int) -> int:
    """A token count endpoint's answer: a whole number of tokens, else a malformed answer."""
    tokens = payload.get(field)
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
        raise _malformed("malformed_response", status)
    return tokens


def transport_error(exc: httpx.HTTPError) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(f"timeout: {type(exc).__name__}")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamError("connect_error")
    return UpstreamError(f"transport_error: {type(exc).__name__}")


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date), or OpenAI's retry-after-ms."""
    millis = response.headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    from datetime import UTC, datetime

    return max((moment - datetime.now(UTC)).total_seconds(), 0.0)


def _text(value: object) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value) or None


def provider_error(
    payload: object, status: int, dialect: Dialect, secrets: tuple[str, ...] = ()
) -> ProviderError:
    """An error body (OpenAI's, Anthropic's or Google's) as a ProviderError. Only the fields
    a client may see are kept: never Google's `details`, never a header."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return ProviderError(dialect, status)
    message = _text(error.get("message"))
    if dialect == "gemini":  # code is the HTTP status as a number; status names it
        code = _text(error.get("status"))
    else:  # a string, as OpenAI documents it (some compatible servers send the status)
        code = error["code"] if isinstance(error.get("code"), str) else None
    return ProviderError(
        dialect,
        status,
        message=redact(message, secrets) if message else None,
        type=_text(error.get("type")),
        code=code,
        param=_text(error.get("param")),
    )


def error_from_response(
    response: httpx.Response, dialect: Dialect = "openai", secrets: tuple[str, ...] = ()
) -> UpstreamError:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    error = provider_error(payload, response.status_code, dialect, secrets)
    return UpstreamError(
        error.code or error.type or f"http_{response.status_code}",
        response.status_code,
        retry_after=retry_after_seconds(response),
        message=error.message,
        error=error,
    )


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str | None, str]]:
    """(event name, data) of each Server-Sent Event; comments and keep-alives skipped. An
    interrupted body raises UpstreamError (the stream was cut)."""
    event: str | None = None
    data: list[str] = []
    try:
        async for line in response.aiter_lines():
            if line == "":
                if data:
                    yield event, "\n".join(data)
                event, data = None, []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
        if data:
            yield event, "\n".join(data)
    except httpx.HTTPError as exc:
        raise UpstreamError(
            f"stream_interrupted: {type(exc).__name__}", response.status_code
        ) from exc


def parse_event(data: str, status: int) -> dict[str, Any]:
    try:
        payload = strict_json.loads(data)
    except ValueError as exc:
        raise _malformed("malformed_stream_chunk", status) from exc
    if not isinstance(payload, dict):
        raise _malformed("malformed_stream_chunk", status)
    return payload
