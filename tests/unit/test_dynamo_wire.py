"""The lean DynamoDB client against botocore: its SigV4 signature equals botocore's SigV4Auth,
and against a tiny local HTTP server answering scripted DynamoDB responses, its retries and
errors are botocore's standard mode's (the same exceptions, the same response dicts)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.session import get_session

from forge import wiring
from forge.store.dynamo.base import cancellation_codes, is_condition_failure
from forge.store.dynamo.wire import _MEMBERS, SigV4, WireDynamoDB, default_credentials

KEY = {"pk": {"S": "ACCOUNT#acc_1"}, "sk": {"S": "KEY"}}
TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ"


# The scripted server ------------------------------------------------------------------------
class Script:
    """Answers, in order: (status, JSON body, extra headers), "drop" (close the connection
    unanswered) or ("slow", seconds). Records each request's headers and body."""

    def __init__(self) -> None:
        self.answers: list[Any] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        script = self.server.script
        script.requests.append((dict(self.headers), body))
        answer = script.answers.pop(0) if script.answers else (200, {}, {})
        if answer == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if answer[0] == "slow":
            time.sleep(answer[1])
            answer = (200, {}, {})
        status, payload, headers = answer
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", f"req-{len(script.requests)}")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    script: Script


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.script = Script()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.script
    httpd.shutdown()
    httpd.server_close()


def _error(code: str, message: str, **members: Any) -> dict[str, Any]:
    return {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message, **members}


_opened: list[Any] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def _wire(url: str, sleeps: list[float], **kwargs: Any) -> WireDynamoDB:
    client = WireDynamoDB(
        url,
        "us-east-1",
        lambda: ("AKIDEXAMPLE", "secret", None),
        sleep=sleeps.append,
        jitter=lambda: 0.5,
        **kwargs,
    )
    _opened.append(client)
    return client


def _botocore(url: str) -> Any:
    client = get_session().create_client(
        "dynamodb",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=Config(retries={"mode": "standard", "max_attempts": 3}),
    )
    _opened.append(client)
    return client


# SigV4 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("endpoint", "host", "token"),
    [
        ("https://dynamodb.eu-west-1.amazonaws.com", "dynamodb.eu-west-1.amazonaws.com", None),
        ("https://dynamodb.eu-west-1.amazonaws.com", "dynamodb.eu-west-1.amazonaws.com", TOKEN),
        ("http://127.0.0.1:8123", "127.0.0.1:8123", TOKEN),
    ],
)
@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("GetItem", {"TableName": "budget", "Key": KEY, "ConsistentRead": True}),
        ("TransactWriteItems", {"TransactItems": [{"Put": {"TableName": "t", "Item": KEY}}]}),
        ("Query", {"TableName": "ledger", "ExpressionAttributeValues": {":p": {"S": "é/ü"}}}),
    ],
)
def test_the_signature_is_botocores(
    endpoint: str, host: str, token: str | None, operation: str, params: dict[str, Any]
) -> None:
    moment = datetime(2026, 12, 2, 4, 30, 15, tzinfo=UTC)
    body = json.dumps(params).encode()
    target = f"DynamoDB_20120810.{operation}"
    ours = SigV4("eu-west-1", host).headers(
        target, body, ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", token), "20261202T043015Z"
    )

    request = AWSRequest(
        method="POST",
        url=endpoint + "/",
        data=body,
        headers={
            "X-Amz-Target": target,
            "Content-Type": "application/x-amz-json-1.0",
            "User-Agent": "forge-wire/1",
        },
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=moment):
        SigV4Auth(
            Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", token), "dynamodb", "eu-west-1"
        ).add_auth(request)

    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours["X-Amz-Date"] == request.headers["X-Amz-Date"]
    assert ours.get("X-Amz-Security-Token") == request.headers.get("X-Amz-Security-Token")
    assert ours["Host"] == host


# Retries -------------------------------------------------------------------------------------
def test_throttling_is_retried_with_botocores_backoff(server: tuple[str, Script]) -> None:
    url, script = server
    item = {**KEY, "balance": {"N": "5"}}
    script.answers = [
        (400, _error("ProvisionedThroughputExceededException", "slow down"), {}),
        (400, _error("ThrottlingException", "slow down"), {}),
        (200, {"Item": item}, {}),
    ]
    sleeps: list[float] = []
    got = _wire(url, sleeps).get_item(TableName="budget", Key=KEY, ConsistentRead=True)

    assert got["Item"] == item
    assert got["ResponseMetadata"]["RetryAttempts"] == 2
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert got["ResponseMetadata"]["RequestId"] == "req-3"
    assert sleeps == [0.5 * 1, 0.5 * 2]  # throttling: rand * 1 s * 2**i
    assert [json.loads(body) for _, body in script.requests] == [
        {"TableName": "budget", "Key": KEY, "ConsistentRead": True}
    ] * 3
    assert {headers["X-Amz-Target"] for headers, _ in script.requests} == {
        "DynamoDB_20120810.GetItem"
    }


def test_server_errors_and_dropped_connections_are_retried_on_the_short_scale(
    server: tuple[str, Script],
) -> None:
    url, script = server
    script.answers = ["drop", (500, _error("InternalServerError", "oops"), {}), (200, {}, {})]
    sleeps: list[float] = []
    got = _wire(url, sleeps).put_item(TableName="budget", Item=KEY)

    assert got["ResponseMetadata"]["RetryAttempts"] == 2
    assert sleeps == [0.5 * 0.025, 0.5 * 0.025 * 2]
    assert len(script.requests) == 3


def test_a_retry_after_header_raises_the_delay(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [(503, {}, {"x-amz-retry-after": "1500"}), (200, {}, {})]
    sleeps: list[float] = []
    _wire(url, sleeps).get_item(TableName="budget", Key=KEY)
    assert sleeps == [1.5]


def test_a_corrupted_answer_is_retried(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [(200, {"Item": KEY}, {"x-amz-crc32": "1"}), (200, {"Item": KEY}, {})]
    sleeps: list[float] = []
    got = _wire(url, sleeps).get_item(TableName="budget", Key=KEY)
    assert got["Item"] == KEY
    assert sleeps == [0.5 * 0.025]


def test_four_attempts_then_botocores_error(server: tuple[str, Script]) -> None:
    url, script = server
    throttled = (400, _error("ThrottlingException", "Rate exceeded"), {})
    script.answers = [throttled] * 5
    sleeps: list[float] = []
    with pytest.raises(ClientError) as caught:
        _wire(url, sleeps).get_item(TableName="budget", Key=KEY)

    assert len(script.requests) == 4
    assert sleeps == [0.5, 1.0, 2.0]
    assert type(caught.value).__name__ == "ThrottlingException"
    assert caught.value.response["ResponseMetadata"]["MaxAttemptsReached"] is True
    assert str(caught.value) == (
        "An error occurred (ThrottlingException) when calling the GetItem operation "
        "(reached max retries: 3): Rate exceeded"
    )


def test_a_connection_that_keeps_dropping_is_a_botocore_error(
    server: tuple[str, Script],
) -> None:
    url, script = server
    script.answers = ["drop"] * 4
    with pytest.raises(ConnectionClosedError):
        _wire(url, []).transact_write_items(
            TransactItems=[{"Put": {"TableName": "t", "Item": KEY}}]
        )
    tokens = {json.loads(body)["ClientRequestToken"] for _, body in script.requests}
    assert len(script.requests) == 4
    assert len(tokens) == 1  # botocore's idempotency token, the same on every retry


def test_a_read_timeout_is_retried_then_raised(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [("slow", 0.3), ("slow", 0.3)]
    sleeps: list[float] = []
    with pytest.raises(ReadTimeoutError):
        _wire(url, sleeps, read_timeout=0.1, max_attempts=2).get_item(TableName="t", Key=KEY)
    assert len(sleeps) == 1


def test_an_unreachable_endpoint_is_botocores_error() -> None:
    sleeps: list[float] = []
    with pytest.raises(EndpointConnectionError) as caught:
        _wire("http://127.0.0.1:9", sleeps).get_item(TableName="t", Key=KEY)
    assert isinstance(caught.value, BotoCoreError)
    assert len(sleeps) == 3


def test_the_retry_quota_runs_out_as_botocores_does(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [(500, {}, {})] * 200
    client = _wire(url, [], max_attempts=2)
    for _ in range(35):  # 35 retries at 14 tokens spend 490 of the 500
        with pytest.raises(ClientError):
            client.get_item(TableName="t", Key=KEY)
    served = len(script.requests)
    with pytest.raises(ClientError):
        client.get_item(TableName="t", Key=KEY)
    assert (served, len(script.requests)) == (70, 71)  # no token left: no retry


# Errors, as botocore builds them -------------------------------------------------------------
def _both(url: str, script: Script, answer: Any, call: str, **params: Any) -> list[ClientError]:
    caught = []
    for client in (_wire(url, []), _botocore(url)):
        script.answers = [answer]
        with pytest.raises(ClientError) as raised:
            getattr(client, call)(**params)
        caught.append(raised.value)
    return caught


def _comparable(exc: ClientError) -> dict[str, Any]:
    response = dict(exc.response)
    metadata = dict(response.pop("ResponseMetadata"))
    for volatile in ("HTTPHeaders", "RequestId"):
        metadata.pop(volatile)
    return {"class": type(exc).__name__, "str": str(exc), "metadata": metadata, **response}


def test_a_failed_condition_carries_the_item_as_botocore_parses_it(
    server: tuple[str, Script],
) -> None:
    url, script = server
    old = {**KEY, "blob": {"B": base64.b64encode(b"\x00\xff").decode()}}
    answer = (
        400,
        _error("ConditionalCheckFailedException", "The conditional request failed", Item=old),
        {},
    )
    wire, boto = _both(url, script, answer, "put_item", TableName="t", Item=KEY)

    assert _comparable(wire) == _comparable(boto)
    assert is_condition_failure(wire)
    assert wire.response["Item"]["blob"] == {"B": b"\x00\xff"}
    assert wire.response["Error"]["Message"] == "The conditional request failed"


def test_a_cancelled_transaction_carries_its_reasons(server: tuple[str, Script]) -> None:
    url, script = server
    reasons = [
        {"Code": "None"},
        {"Code": "ConditionalCheckFailed", "Message": "failed", "Item": KEY},
        {"Code": "TransactionConflict", "Message": "ongoing"},
    ]
    body = {
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": "Transaction cancelled",
        "CancellationReasons": reasons,
    }
    put = [{"Put": {"TableName": "t", "Item": KEY}}]
    wire, boto = _both(url, script, (400, body, {}), "transact_write_items", TransactItems=put)

    assert _comparable(wire) == _comparable(boto)
    assert cancellation_codes(wire) == ["None", "ConditionalCheckFailed", "TransactionConflict"]
    assert wire.response["CancellationReasons"][1]["Item"] == KEY


def test_an_unmodeled_error_is_a_plain_client_error(server: tuple[str, Script]) -> None:
    url, script = server
    answer = (
        400,
        {"__type": "com.amazon.coral.validate#ValidationException", "message": "bad"},
        {},
    )
    wire, boto = _both(url, script, answer, "query", TableName="t")
    assert _comparable(wire) == _comparable(boto)
    assert type(wire) is ClientError


def test_blobs_travel_as_base64_and_come_back_as_bytes(server: tuple[str, Script]) -> None:
    url, script = server
    item = {
        **KEY,
        "b": {"B": b"\x01\x02"},
        "bs": {"BS": [b"x", b"y"]},
        "m": {"M": {"B": {"S": "s"}}},
    }
    encoded = {
        **KEY,
        "b": {"B": "AQI="},
        "bs": {"BS": ["eA==", "eQ=="]},
        "m": {"M": {"B": {"S": "s"}}},
    }
    script.answers = [(200, {"Attributes": encoded}, {})]
    got = _wire(url, []).put_item(TableName="t", Item=item, ReturnValues="ALL_OLD")

    assert json.loads(script.requests[0][1])["Item"] == encoded
    assert got["Attributes"] == item


def test_the_modeled_errors_are_botocores() -> None:
    model = get_session().get_service_model("dynamodb")
    assert {shape.name: tuple(shape.members) for shape in model.error_shapes} == _MEMBERS


# Building it ---------------------------------------------------------------------------------
@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[pytest.MonkeyPatch]:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CREDENTIAL_EXPIRATION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    for name, value in {"BUDGET_TABLE": "b", "LEDGER_TABLE": "l", "ARCHIVE_BUCKET": "a"}.items():
        monkeypatch.setenv(name, value)
    wiring.clear()
    yield monkeypatch
    wiring.clear()


def test_the_stores_use_the_wire_client_unless_told_otherwise(
    aws_env: pytest.MonkeyPatch,
) -> None:
    client = wiring.dynamodb_client()
    assert isinstance(client, WireDynamoDB)
    assert client.endpoint_url == "https://dynamodb.eu-west-1.amazonaws.com"
    assert client.signer.host == "dynamodb.eu-west-1.amazonaws.com"

    aws_env.setenv("FORGE_DYNAMO_CLIENT", "botocore")
    wiring.clear()
    assert type(wiring.dynamodb_client()).__name__ == "DynamoDB"  # botocore's client class


def test_credentials_come_from_the_environment_then_botocores_chain(
    aws_env: pytest.MonkeyPatch,
) -> None:
    aws_env.setenv("AWS_SESSION_TOKEN", "env-token")
    assert default_credentials()() == ("AKIDENV", "env-secret", "env-token")

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        aws_env.delenv(name)
    lookup = default_credentials()  # building a client never fails for want of credentials
    with pytest.raises(NoCredentialsError):  # the first request does
        lookup()


def test_expiring_credentials_are_refreshed_by_botocore(aws_env: pytest.MonkeyPatch) -> None:
    soon = datetime.now(UTC) + timedelta(minutes=5)  # inside botocore's refresh window
    aws_env.setenv("AWS_CREDENTIAL_EXPIRATION", soon.isoformat())
    credentials = default_credentials()
    assert credentials() == ("AKIDENV", "env-secret", None)

    aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIDROTATED")
    aws_env.setenv("AWS_CREDENTIAL_EXPIRATION", (soon + timedelta(hours=1)).isoformat())
    assert credentials() == ("AKIDROTATED", "env-secret", None)
