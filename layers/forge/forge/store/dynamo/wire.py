"""A lean DynamoDB client for the hot path: botocore's low-level client, less its per-call
machinery. Same methods, same DynamoDB JSON in and out, same errors; no parameter
validation, no event hooks, no endpoint resolution per call.

It speaks DynamoDB's JSON protocol (POST /, `X-Amz-Target: DynamoDB_20120810.<Op>`) over a
small pool of keep-alive `http.client` connections (urllib3, botocore's HTTP layer, doubled the
CPU of a call in bench/store_client.py), signed by a small SigV4 signer whose key is derived
once a day. Like urllib3, the pool drops an idle connection the server has closed before
reusing it. What it keeps of botocore, because the adapters rely on it:

- Errors: botocore's own `ClientError` (a subclass named after the code, as
  `client.exceptions.<Code>` is) with the response dict botocore parses: Error.Code/Message,
  the modeled members of the error (Item, CancellationReasons, message...) and
  ResponseMetadata; transport failures as botocore's `BotoCoreError`s (EndpointConnectionError,
  ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError, HTTPClientError).
- Retries: botocore's "standard" mode as forge.store.aws configures it (max_attempts=3 retries,
  so 4 attempts): transient codes, 500/502/503/504, connection errors and timeouts (the retry
  that may meet its own write; see docs/architecture.md), throttling codes, the modeled
  retryable ReplicatedWriteConflictException and a DynamoDB x-amz-crc32 mismatch. Backoff
  rand(0,1) * min(scale * 2**(attempt-1), 20) s with scale 1 s for throttling, 25 ms otherwise,
  raised to x-amz-retry-after (ms) up to 5 s more; the same 500-token retry quota (5 a
  throttling retry, 14 any other, given back on success).
- Idempotency: a TransactWriteItems without a ClientRequestToken gets a fresh one, kept across
  its retries (botocore fills the modeled idempotency token): a retry whose first attempt was
  applied but whose answer was lost then succeeds as that attempt did, within 10 minutes.
- Blobs: bytes go out base64-encoded and B/BS values come back as bytes.

Left out, on purpose: parameter validation (the adapters' calls are fixed and the contract suite
runs them), the `amz-sdk-invocation-id` telemetry header, endpoint discovery and account-id
endpoints (off by default in botocore for DynamoDB), and client-side rate limiting ("adaptive"
mode, unused here).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import random
import select
import socket
import ssl
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ReadTimeoutError,
    SSLError,
)

Credentials = tuple[str, str, str | None]  # access key, secret key, session token

_SERVICE = "dynamodb"
_TARGET = "DynamoDB_20120810."
_CONTENT_TYPE = "application/x-amz-json-1.0"
_USER_AGENT = "forge-wire/1"

# Modeled DynamoDB errors and the members botocore parses into the response besides Error
# (a unit test holds this table to botocore's service model).
_MEMBERS: dict[str, tuple[str, ...]] = {
    "ConditionalCheckFailedException": ("message", "Item"),
    "IdempotentParameterMismatchException": ("Message",),
    "ProvisionedThroughputExceededException": ("message", "ThrottlingReasons"),
    "RequestLimitExceeded": ("message", "ThrottlingReasons"),
    "ThrottlingException": ("message", "throttlingReasons"),
    "TransactionCanceledException": ("Message", "CancellationReasons"),
    "TransactionInProgressException": ("Message",),
    **dict.fromkeys(
        [
            "BackupInUseException",
            "BackupNotFoundException",
            "ContinuousBackupsUnavailableException",
            "DuplicateItemException",
            "ExportConflictException",
            "ExportNotFoundException",
            "GlobalTableAlreadyExistsException",
            "GlobalTableNotFoundException",
            "ImportConflictException",
            "ImportNotFoundException",
            "IndexNotFoundException",
            "InternalServerError",
            "InvalidExportTimeException",
            "InvalidRestoreTimeException",
            "ItemCollectionSizeLimitExceededException",
            "LimitExceededException",
            "PointInTimeRecoveryUnavailableException",
            "PolicyNotFoundException",
            "ReplicaAlreadyExistsException",
            "ReplicaNotFoundException",
            "ReplicatedWriteConflictException",
            "ResourceInUseException",
            "ResourceNotFoundException",
            "TableAlreadyExistsException",
            "TableInUseException",
            "TableNotFoundException",
            "TransactionConflictException",
        ],
        ("message",),
    ),
}

# botocore.retries.standard, for DynamoDB.
_TRANSIENT_CODES = frozenset(
    {"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"}
    | {"ReplicatedWriteConflictException"}  # modeled retryable (not throttling)
)
_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
_TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
MAX_ATTEMPTS = 4  # Config(retries={"max_attempts": 3}) counts retries: 1 + 3
_THROTTLING_SCALE = 1.0
_OTHER_SCALE = 0.025  # DynamoDB's non-throttling base scale
_MAX_BACKOFF = 20.0
_RETRY_AFTER_EXTRA = 5.0
_QUOTA = 500
_THROTTLING_COST = 5
_RETRY_COST = 14

OPERATIONS = (
    "BatchGetItem",
    "BatchWriteItem",
    "DeleteItem",
    "GetItem",
    "PutItem",
    "Query",
    "Scan",
    "TransactGetItems",
    "TransactWriteItems",
    "UpdateItem",
)


class ResponseParserError(BotoCoreError):  # type: ignore[misc]  # botocore is untyped
    """A 2xx answer that is not JSON. botocore raises its parser's ResponseParserError, which
    is no BotoCoreError; here it is one, so the adapters fail closed on it."""

    fmt = "Unable to parse response ({error})"


class _RetryQuota:
    """botocore.retries.quota.RetryQuota: retries spend tokens, successes give them back."""

    def __init__(self) -> None:
        self.available = _QUOTA
        self._lock = threading.Lock()

    def acquire(self, amount: int) -> bool:
        with self._lock:
            if amount > self.available:
                return False
            self.available -= amount
            return True

    def release(self, amount: int) -> None:
        if self.available < _QUOTA:
            with self._lock:
                self.available = min(_QUOTA, self.available + amount)


class SigV4:
    """AWS Signature Version 4 for DynamoDB's JSON protocol: POST / with no query string, the
    same signed headers botocore's SigV4Auth signs for it."""

    def __init__(self, region: str, host: str) -> None:
        self.region = region
        self.host = host
        self._scope_tail = f"/{region}/{_SERVICE}/aws4_request"
        self._keys: dict[tuple[str, str], bytes] = {}

    def _key(self, secret: str, day: str) -> bytes:
        key = self._keys.get((secret, day))
        if key is None:
            key = ("AWS4" + secret).encode()
            for part in (day, self.region, _SERVICE, "aws4_request"):
                key = hmac.digest(key, part.encode(), "sha256")
            self._keys = {(secret, day): key}  # one day, one secret: the old key is dropped
        return key

    def headers(
        self, target: str, body: bytes, credentials: Credentials, amz_date: str
    ) -> dict[str, str]:
        access, secret, token = credentials
        day = amz_date[:8]
        payload = hashlib.sha256(body).hexdigest()
        if token:
            signed = "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
            canonical = (
                f"POST\n/\n\ncontent-type:{_CONTENT_TYPE}\nhost:{self.host}\n"
                f"x-amz-date:{amz_date}\nx-amz-security-token:{token}\n"
                f"x-amz-target:{target}\n\n{signed}\n{payload}"
            )
        else:
            signed = "content-type;host;x-amz-date;x-amz-target"
            canonical = (
                f"POST\n/\n\ncontent-type:{_CONTENT_TYPE}\nhost:{self.host}\n"
                f"x-amz-date:{amz_date}\nx-amz-target:{target}\n\n{signed}\n{payload}"
            )
        scope = day + self._scope_tail
        to_sign = (
            f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n"
            + hashlib.sha256(canonical.encode()).hexdigest()
        )
        signature = hmac.new(self._key(secret, day), to_sign.encode(), "sha256").hexdigest()
        headers = {
            "Host": self.host,
            "Content-Type": _CONTENT_TYPE,
            "X-Amz-Target": target,
            "X-Amz-Date": amz_date,
            "User-Agent": _USER_AGENT,
            "Authorization": (
                f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
                f"SignedHeaders={signed}, Signature={signature}"
            ),
        }
        if token:
            headers["X-Amz-Security-Token"] = token
        return headers


class _Pool:
    """Keep-alive connections to one endpoint, each used by one thread at a time; transport
    failures raised as botocore.httpsession raises them (the mapping of urllib3's errors)."""

    def __init__(
        self,
        url: str,
        host: str,
        port: int,
        *,
        https: bool,
        connect_timeout: float,
        read_timeout: float,
        size: int,
    ) -> None:
        self._url = url
        self._host = host
        self._port = port
        self._context = ssl.create_default_context(cafile=_ca_bundle()) if https else None
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._size = size
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                # An idle connection the server closed reads as ready (EOF): drop it.
                if conn.sock is not None and not select.select([conn.sock], [], [], 0)[0]:
                    return conn
                conn.close()
        if self._context is not None:
            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._connect_timeout, context=self._context
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._connect_timeout)
        try:
            conn.connect()
        except ssl.SSLError as exc:
            raise SSLError(endpoint_url=self._url, error=exc) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(endpoint_url=self._url, error=exc) from exc
        except OSError as exc:  # refused, unreachable, no such host
            raise EndpointConnectionError(endpoint_url=self._url, error=exc) from exc
        conn.sock.settimeout(self._read_timeout)
        # As urllib3 does: http.client sends the headers and the body in two writes, and Nagle's
        # algorithm would hold the body back until the server's delayed ACK (~40 ms).
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """Status, lower-cased headers and body of one POST /."""
        conn = self._connection()
        try:
            conn.request("POST", "/", body, headers)
            response = conn.getresponse()
            data = response.read()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, TimeoutError):
                raise ReadTimeoutError(endpoint_url=self._url, error=exc) from exc
            if isinstance(exc, ssl.SSLError):
                raise SSLError(endpoint_url=self._url, error=exc) from exc
            if isinstance(exc, http.client.HTTPException | ConnectionError):
                raise ConnectionClosedError(
                    error=exc, request=None, endpoint_url=self._url
                ) from exc
            if isinstance(exc, OSError):
                raise HTTPClientError(error=exc) from exc
            raise
        keep = not response.will_close
        if keep:
            with self._lock:
                keep = len(self._idle) < self._size
                if keep:
                    self._idle.append(conn)
        if not keep:
            conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def close(self) -> None:
        with self._lock:
            for conn in self._idle:
                conn.close()
            self._idle.clear()


def _amz_date() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


class WireDynamoDB:
    """DynamoDB's low-level client interface for the operations in OPERATIONS (snake_case
    methods taking the same keyword arguments as botocore's), thread-safe."""

    def __init__(
        self,
        endpoint_url: str,
        region: str,
        credentials: Callable[[], Credentials],
        *,
        connect_timeout: float = 2,
        read_timeout: float = 5,
        max_pool_connections: int = 64,
        max_attempts: int = MAX_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], str] = _amz_date,
    ) -> None:
        parts = urlsplit(endpoint_url)
        default_port = 443 if parts.scheme == "https" else 80
        host = parts.hostname or ""
        if parts.port not in (None, default_port):
            host = f"{host}:{parts.port}"
        self.endpoint_url = endpoint_url
        self.signer = SigV4(region, host)
        self._credentials = credentials
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._jitter = jitter
        self._clock = clock
        self._quota = _RetryQuota()
        self._pool = _Pool(
            endpoint_url,
            parts.hostname or "",
            parts.port or default_port,
            https=parts.scheme == "https",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            size=max_pool_connections,
        )

    def close(self) -> None:
        self._pool.close()

    # The operations: one method each, as botocore names them.
    def batch_get_item(self, **params: Any) -> dict[str, Any]:
        return self.call("BatchGetItem", params)

    def batch_write_item(self, **params: Any) -> dict[str, Any]:
        return self.call("BatchWriteItem", params)

    def delete_item(self, **params: Any) -> dict[str, Any]:
        return self.call("DeleteItem", params)

    def get_item(self, **params: Any) -> dict[str, Any]:
        return self.call("GetItem", params)

    def put_item(self, **params: Any) -> dict[str, Any]:
        return self.call("PutItem", params)

    def query(self, **params: Any) -> dict[str, Any]:
        return self.call("Query", params)

    def scan(self, **params: Any) -> dict[str, Any]:
        return self.call("Scan", params)

    def transact_get_items(self, **params: Any) -> dict[str, Any]:
        return self.call("TransactGetItems", params)

    def transact_write_items(self, **params: Any) -> dict[str, Any]:
        if "ClientRequestToken" not in params:
            params["ClientRequestToken"] = str(uuid.uuid4())
        return self.call("TransactWriteItems", params)

    def update_item(self, **params: Any) -> dict[str, Any]:
        return self.call("UpdateItem", params)

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """One operation with botocore's standard retries (see the module docstring)."""
        target = _TARGET + operation
        body = json.dumps(params, separators=(",", ":"), default=_encode_blob).encode()
        attempt = acquired = 0
        while True:
            attempt += 1
            headers = self.signer.headers(target, body, self._credentials(), self._clock())
            parsed: dict[str, Any] | None = None
            error: Exception | None = None
            retry_after: float | None = None
            throttled = False
            try:
                status, answer_headers, data = self._pool.post(body, headers)
            except (BotoCoreError, ssl.SSLError) as exc:
                error = exc
                retryable = True  # every transport error: ConnectionError or HTTPClientError
            else:
                checksum = answer_headers.get("x-amz-crc32")
                corrupt = checksum is not None and zlib.crc32(data) != int(checksum)
                parsed = self._parse(status, data, answer_headers, attempt - 1)
                code = parsed["Error"]["Code"] if status >= 300 else None
                throttled = code in _THROTTLING_CODES
                retryable = corrupt or throttled or code in _TRANSIENT_CODES
                retryable = retryable or status in _TRANSIENT_STATUS
                retry_after = _retry_after(answer_headers)
            if attempt >= self._max_attempts:
                retryable = False
                if parsed is not None:
                    parsed["ResponseMetadata"]["MaxAttemptsReached"] = True
            cost = _THROTTLING_COST if throttled else _RETRY_COST
            if retryable and self._quota.acquire(cost):
                acquired = cost
                self._sleep(_delay(self._jitter(), attempt, throttled, retry_after))
                continue
            if error is not None:
                raise error
            assert parsed is not None
            if "Error" in parsed and parsed["ResponseMetadata"]["HTTPStatusCode"] >= 300:
                raise _error_class(parsed["Error"]["Code"])(parsed, operation)
            if parsed["ResponseMetadata"]["HTTPStatusCode"] < 300:
                self._quota.release(acquired or 1)
            return parsed

    @staticmethod
    def _parse(status: int, data: bytes, headers: dict[str, str], retries: int) -> dict[str, Any]:
        """The response dict botocore's JSON parser builds, blobs decoded."""
        if status < 300:
            try:
                parsed: dict[str, Any] = json.loads(data) if data else {}
            except ValueError as exc:
                raise ResponseParserError(error=str(exc)) from exc
        elif status >= 500 and (not data.strip() or data.strip().startswith(b"<html>")):
            parsed = {"Error": {"Code": str(status), "Message": http.client.responses[status]}}
        else:
            parsed = _error_body(status, data)
        if b'"B' in data and (b'"B":' in data or b'"BS":' in data):
            parsed = _decode_blobs(parsed)
        metadata = parsed.setdefault("ResponseMetadata", {})
        if "x-amzn-requestid" in headers:
            metadata["RequestId"] = headers["x-amzn-requestid"]
        metadata.update(HTTPStatusCode=status, HTTPHeaders=headers, RetryAttempts=retries)
        return parsed


def _error_body(status: int, data: bytes) -> dict[str, Any]:
    """botocore's BaseJSONParser._do_error_parse plus the modeled error's members."""
    try:
        body = json.loads(data) if data else {}
    except ValueError:
        body = {"message": data.decode("utf-8", "replace")}
    code = str(body.get("__type", status))
    code = code.split(":", 1)[0].rsplit("#", 1)[-1]
    parsed: dict[str, Any] = {
        "Error": {"Message": body.get("message", body.get("Message", "")), "Code": code}
    }
    for member in _MEMBERS.get(code, ()):
        if member in body:
            parsed[member] = body[member]
    return parsed


@cache
def _error_class(code: str) -> Any:
    """What `client.exceptions.from_code(code)` returns: a ClientError subclass per modeled
    error, ClientError itself for any other code."""
    if code not in _MEMBERS:
        return ClientError
    return type(code, (ClientError,), {})


def _retry_after(headers: dict[str, str]) -> float | None:
    value = headers.get("x-amz-retry-after")
    if value is None:
        return None
    try:
        seconds = int(value) / 1000.0
    except (ValueError, OverflowError):
        return None
    return seconds if seconds >= 0 else None


def _delay(jitter: float, attempt: int, throttled: bool, retry_after: float | None) -> float:
    """botocore.retries.standard.ExponentialBackoff for DynamoDB."""
    scale = _THROTTLING_SCALE if throttled else _OTHER_SCALE
    delay = jitter * min(scale * 2.0 ** (attempt - 1), _MAX_BACKOFF)
    if retry_after is not None:
        return max(delay, min(retry_after, _RETRY_AFTER_EXTRA + delay))
    return delay


def _encode_blob(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not a DynamoDB JSON value")


def _decode_blobs(value: Any) -> Any:
    """B and BS attribute values as bytes, at any depth (botocore's blob parsing)."""
    if isinstance(value, dict):
        if len(value) == 1:
            if isinstance(value.get("B"), str):
                return {"B": base64.b64decode(value["B"])}
            if isinstance(value.get("BS"), list):
                return {"BS": [base64.b64decode(v) for v in value["BS"]]}
        return {k: _decode_blobs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_blobs(v) for v in value]
    return value


def _ca_bundle() -> str | None:
    """The CA bundle botocore verifies with: certifi's, else the system's."""
    try:
        import certifi
    except ImportError:
        return None
    return str(certifi.where())


def default_credentials() -> Callable[[], Credentials]:
    """This container's credentials, found on the first request (as botocore does: building a
    client never fails for want of them) and kept: the environment's (what Lambda gives, the
    first step of botocore's chain) as they are, else botocore's credential chain, whose
    refreshable credentials renew themselves before they expire. None found: the request fails
    with NoCredentialsError (a BotoCoreError, so the store fails closed)."""
    resolved: list[Callable[[], Credentials]] = []

    def current() -> Credentials:
        if not resolved:
            resolved.append(_resolve_credentials())
        return resolved[0]()

    return current


def _resolve_credentials() -> Callable[[], Credentials]:
    access = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if access and secret and "AWS_CREDENTIAL_EXPIRATION" not in os.environ:
        fixed = (access, secret, os.environ.get("AWS_SESSION_TOKEN") or None)
        return lambda: fixed
    from botocore.session import get_session

    found = get_session().get_credentials()
    if found is None:
        raise NoCredentialsError()

    def frozen() -> Credentials:
        now = found.get_frozen_credentials()
        return (now.access_key, now.secret_key, now.token or None)

    return frozen


def default_region() -> str:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    from botocore.session import get_session

    region = get_session().get_config_variable("region")
    if not region:
        raise NoRegionError()
    return str(region)


def make_wire_client(endpoint_url: str | None) -> WireDynamoDB:
    """The client forge.store.aws's Config describes (timeouts, pool, retries), on AWS at the
    regional endpoint, or at `endpoint_url` (the local emulator)."""
    region = default_region()
    return WireDynamoDB(
        endpoint_url or f"https://dynamodb.{region}.amazonaws.com",
        region,
        default_credentials(),
    )
