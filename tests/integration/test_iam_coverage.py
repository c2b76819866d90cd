"""Each function's IAM policy in template.yaml covers exactly what its code calls.

moto enforces no IAM, so a missing permission would only show up in production. Here every
AWS call the code makes is recorded (a botocore `provide-client-params` hook on every client
built while a function "runs": forge.wiring's S3 client, and the Secrets Manager client
Powertools' parameters utility builds through boto3; and every call of a wire DynamoDB client,
forge.wiring's default), attributed to the function whose code built the client, and mapped
to the IAM actions and resources it needs.
Each function's real code paths are then driven against the emulator: the paid app under
uvicorn (as functions/proxy/run.sh serves it), the account function's Lambda handler
(Mangum) with API Gateway events, and the scheduled and stream handlers with their events.

template.yaml's policy statements are resolved (intrinsics over logical ids, the `!If` branch
that applies when the optional parameters are set) and two things are asserted per function:
every recorded call is allowed, and every granted action is used by some call (or is on the
commented allow-list below: permissions AWS itself uses with the function's role).

Resources are named by logical id in ARNs of region us-east-1 and account 123456789012: a
table is arn:aws:dynamodb:us-east-1:123456789012:table/BudgetTable, an object
arn:aws:s3:::ArchiveBucket/statements/..., the provider secret
arn:aws:secretsmanager:us-east-1:123456789012:secret:ProviderSecret."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from fnmatch import fnmatchcase
from functools import partial
from typing import Any

import botocore.session
import httpx
import pytest
import uvicorn
from aws_lambda_powertools.utilities import parameters

from forge import wiring
from forge.api import create_paid_app
from forge.domain.calendar import Month
from forge.domain.catalog import load_catalog
from forge.domain.money import Bucket
from forge.domain.records import ApiKey, Hold, HoldOutcome, KeyKind, Receipt, utcnow
from forge.ledger.sweeper import sweep
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.money_in.codes import create_code
from forge.money_in.webhooks import PAYMENT_SUCCEEDED, sign_payload
from forge.providers import http as upstream_http
from forge.store.aws import make_dynamodb_client
from forge.store.dynamo.catalog import DynamoCatalogStore
from forge.store.dynamo.store import DynamoStore
from forge.store.dynamo.wire import WireDynamoDB
from forge_tools.emulator import REGION, Emulator, Resources
from forge_tools.lambda_local import LambdaContext, load_handler_module
from forge_tools.template import load_template
from tests.fakes.base import Fault
from tests.fakes.openai_fake import FakeOpenAI
from tests.integration.conftest import EVENTS, TEMPLATE, lambda_stream_event

ACCOUNT = "123456789012"  # moto's account id, and the one the policies are resolved in
# The optional parameters set, so a conditional statement takes the branch that applies then.
PARAMETERS = {
    "WebhookSecretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:WebhookSecretArn",
}
FUNCTION_TYPE = "AWS::Serverless::Function"

# Granted for AWS itself, acting with the function's role, never for the function's code: no
# test of the code can see them used. (function, action, resource pattern) -> why.
_LEDGER_STREAM = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/LedgerTable/stream/*"
_FAILURE_QUEUE = f"arn:aws:sqs:{REGION}:{ACCOUNT}:ArchiveFailureQueue"
_ARCHIVER_LOGS = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:ArchiverLogGroup:*"
_STREAM = "Lambda's event source mapping reads the ledger stream with the function's role"
_ON_FAILURE = "Lambda sends a failed batch's pointer to the on-failure destination (the role)"
_LOGS = "the Lambda runtime writes the function's logs (an explicit role gets no basic policy)"
USED_BY_AWS = {
    ("ArchiverFunction", "dynamodb:DescribeStream", _LEDGER_STREAM): _STREAM,
    ("ArchiverFunction", "dynamodb:GetRecords", _LEDGER_STREAM): _STREAM,
    ("ArchiverFunction", "dynamodb:GetShardIterator", _LEDGER_STREAM): _STREAM,
    ("ArchiverFunction", "dynamodb:ListStreams", _LEDGER_STREAM): _STREAM,
    ("ArchiverFunction", "sqs:SendMessage", _FAILURE_QUEUE): _ON_FAILURE,
    ("ArchiverFunction", "logs:CreateLogStream", _ARCHIVER_LOGS): _LOGS,
    ("ArchiverFunction", "logs:PutLogEvents", _ARCHIVER_LOGS): _LOGS,
}


# Logical ARNs ----------------------------------------------------------------------------------
def table_arn(logical: str) -> str:
    return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{logical}"


def bucket_arn(logical: str) -> str:
    return f"arn:aws:s3:::{logical}"


def secret_arn(logical: str) -> str:
    return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{logical}"


# Recording calls -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    """One IAM action one API call needs, on one resource."""

    action: str  # "dynamodb:PutItem"
    resource: str  # a logical ARN
    api: str  # what the code called: "dynamodb.TransactWriteItems", "s3.GetObject (presigned)"

    def __str__(self) -> str:
        return f"{self.action} on {self.resource} (by {self.api})"


_TRANSACT_WRITE = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


@dataclass
class Names:
    """Physical names of the emulated resources -> logical ARNs."""

    tables: dict[str, str]
    buckets: dict[str, str]
    secrets: dict[str, str] = field(default_factory=dict)

    def table(self, name: str) -> str:
        return table_arn(self.tables.get(name, f"<unknown table {name}>"))

    def bucket(self, name: str) -> str:
        return bucket_arn(self.buckets.get(name, f"<unknown bucket {name}>"))

    def secret(self, secret_id: str) -> str:
        return self.secrets.get(secret_id, f"<unknown secret {secret_id}>")


def iam_calls(names: Names, prefix: str, operation: str, params: Mapping[str, Any]) -> list[Call]:
    """The IAM actions (and resources) one API call needs."""
    api = f"{prefix}.{operation}"
    if prefix == "dynamodb":
        if operation == "TransactWriteItems":
            return [
                Call(f"dynamodb:{_TRANSACT_WRITE[kind]}", names.table(op["TableName"]), api)
                for item in params["TransactItems"]
                for kind, op in item.items()
            ]
        if operation == "TransactGetItems":
            return [
                Call("dynamodb:GetItem", names.table(item["Get"]["TableName"]), api)
                for item in params["TransactItems"]
            ]
        if operation in ("BatchGetItem", "BatchWriteItem"):
            return [
                Call(f"dynamodb:{operation}", names.table(table), api)
                for table in params["RequestItems"]
            ]
        if "TableName" in params:
            resource = names.table(params["TableName"])
            if params.get("IndexName"):
                resource += f"/index/{params['IndexName']}"
            return [Call(f"dynamodb:{operation}", resource, api)]
    if prefix == "s3" and "Bucket" in params:
        bucket = names.bucket(params["Bucket"])
        if operation in ("ListObjectsV2", "ListObjects"):
            return [Call("s3:ListBucket", bucket, api)]
        if "Key" in params:
            obj = f"{bucket}/{params['Key']}"
            versioned = "Version" if params.get("VersionId") else ""
            if operation in ("GetObject", "HeadObject"):  # HEAD is authorised as GetObject
                return [Call(f"s3:GetObject{versioned}", obj, api)]
            if operation == "DeleteObject":
                return [Call(f"s3:DeleteObject{versioned}", obj, api)]
            return [Call(f"s3:{operation}", obj, api)]
        return [Call(f"s3:{operation}", bucket, api)]
    if prefix == "secretsmanager" and "SecretId" in params:
        return [Call(f"secretsmanager:{operation}", names.secret(params["SecretId"]), api)]
    # Not mapped yet: named as the API, on no resource, so no policy allows it by accident.
    return [Call(f"{prefix}:{operation}", f"<unmapped resource of {api}>", api)]


class Recorder:
    """Hooks every botocore client created while a function runs; its calls are that
    function's (a client outlives its phase only in that function's own objects)."""

    def __init__(self, names: Names) -> None:
        self.names = names
        self.calls: dict[str, list[Call]] = defaultdict(list)
        self._function: str | None = None
        self._lock = threading.Lock()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = botocore.session.Session.create_client

        def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
            client = original(session, *args, **kwargs)
            if self._function is not None:
                hook = partial(self._record, self._function)
                client.meta.events.register("provide-client-params", hook)
            return client

        monkeypatch.setattr(botocore.session.Session, "create_client", create_client)

        original_init = WireDynamoDB.__init__

        def wire_init(client: WireDynamoDB, *args: Any, **kwargs: Any) -> None:
            original_init(client, *args, **kwargs)
            if self._function is None:
                return
            function, send = self._function, client.call

            def call(operation: str, params: dict[str, Any]) -> dict[str, Any]:
                with self._lock:
                    self.calls[function] += iam_calls(self.names, "dynamodb", operation, params)
                return send(operation, params)

            client.call = call  # type: ignore[method-assign]

        monkeypatch.setattr(WireDynamoDB, "__init__", wire_init)

    def _record(
        self, function: str, params: Mapping[str, Any], model: Any, context: Any, **_: Any
    ) -> None:
        service = model.service_model
        prefix = service.signing_name or service.endpoint_prefix
        calls = iam_calls(self.names, prefix, model.name, params)
        if isinstance(context, Mapping) and context.get("is_presign_request"):
            calls = [Call(c.action, c.resource, f"{c.api} (presigned URL)") for c in calls]
        with self._lock:
            self.calls[function] += calls

    @contextmanager
    def running(self, function: str) -> Iterator[None]:
        """A fresh container of `function`: new clients, settings and secret caches."""
        assert function in FUNCTIONS, f"{function} is not a function of template.yaml"
        wiring.clear()
        parameters.clear_caches()
        self._function = function
        try:
            yield
        finally:
            self._function = None
            wiring.clear()
            parameters.clear_caches()


# Resolving template.yaml's policies ------------------------------------------------------------
_NO_VALUE = object()
_PSEUDO = {
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "tokens-forge",
    "AWS::NoValue": _NO_VALUE,
}


_INTRINSICS = {
    *("Base64", "Cidr", "FindInMap", "GetAZs", "ImportValue", "Select", "Split", "Transform"),
    *("And", "Equals", "Not", "Or"),
}


@dataclass(frozen=True)
class Grant:
    function: str
    effect: str
    action: str
    resource: str

    def covers(self, call: Call) -> bool:
        return fnmatchcase(call.action.lower(), self.action.lower()) and fnmatchcase(
            call.resource, self.resource
        )

    def __str__(self) -> str:
        return f"{self.action} on {self.resource}"


class Policies:
    """template.yaml's policy statements per function, over logical ids."""

    def __init__(self, template: Mapping[str, Any], parameters: Mapping[str, str]) -> None:
        self._template = template
        self._resources: Mapping[str, Any] = template["Resources"]
        defaults = {k: str(v.get("Default", "")) for k, v in template["Parameters"].items()}
        self._parameters = {**defaults, **parameters}
        shared = template.get("Globals", {}).get("Function", {})
        assert not {"Policies", "Role"} & set(shared), "Globals' Policies/Role are not judged"

    def functions(self) -> list[str]:
        return sorted(k for k, v in self._resources.items() if v["Type"] == FUNCTION_TYPE)

    def grants(self, function: str) -> list[Grant]:
        props = self._resources[function].get("Properties", {})
        grants: list[Grant] = []
        for statement in self._statements(function, props):
            unsupported = set(statement) - {"Effect", "Action", "Resource", "Sid"}
            assert not unsupported, f"{function}: this test cannot judge {sorted(unsupported)}"
            actions = self._list(statement["Action"])
            resources = self._list(statement["Resource"])
            grants += [
                Grant(function, statement["Effect"], a, r) for a in actions for r in resources
            ]
        return grants

    def _statements(self, function: str, props: Mapping[str, Any]) -> list[dict[str, Any]]:
        if "Role" in props:
            role = self._resolve(props["Role"])
            logical = next(
                (
                    k
                    for k, v in self._resources.items()
                    if v["Type"] == "AWS::IAM::Role" and self._arn(k, "Arn") == role
                ),
                None,
            )
            assert logical, f"{function}: its Role {role} is not a role of this template"
            role_props = self._resources[logical]["Properties"]
            assert not role_props.get("ManagedPolicyArns"), (
                f"{function}: managed policies on {logical} cannot be judged here"
            )
            documents = [p["PolicyDocument"] for p in role_props.get("Policies", [])]
        else:
            documents = []
            for policy in props.get("Policies", []):
                assert isinstance(policy, dict) and set(policy) <= {"Version", "Statement"}, (
                    f"{function}: only inline policy documents can be judged here, not {policy}"
                )
                documents.append(policy)
        statements: list[dict[str, Any]] = []
        for document in documents:
            resolved = self._resolve(document["Statement"])
            statements += resolved if isinstance(resolved, list) else [resolved]
        return statements

    @staticmethod
    def _list(value: Any) -> list[str]:
        return [str(v) for v in (value if isinstance(value, list) else [value])]

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self._resolve(v) for v in value]
            return [v for v in items if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((name, arg),) = value.items()
            fn = name.removeprefix("Fn::")
            if fn == "Ref":
                return self._ref(arg)
            if fn == "GetAtt":
                logical, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
                return self._arn(logical, attribute)
            if fn == "Sub":
                return self._sub(arg)
            if fn == "If":
                condition, when_true, when_false = arg
                return self._resolve(when_true if self._condition(condition) else when_false)
            if fn == "Join":
                separator, parts = arg
                return str(separator).join(str(p) for p in self._resolve(parts))
            assert fn not in _INTRINSICS, f"intrinsic {name} is not resolved by this test"
        return {k: self._resolve(v) for k, v in value.items()}

    def _ref(self, name: str) -> Any:
        if name in _PSEUDO:
            return _PSEUDO[name]
        if name in self._parameters:
            return self._parameters[name]
        kind = self._resources[name]["Type"]
        if kind == "AWS::SecretsManager::Secret":
            return secret_arn(name)
        return name  # tables, buckets: their name, here their logical id

    def _arn(self, logical: str, attribute: str) -> str:
        kind, here = self._resources[logical]["Type"], f"{REGION}:{ACCOUNT}"
        arns = {
            ("AWS::DynamoDB::Table", "Arn"): table_arn(logical),
            ("AWS::DynamoDB::Table", "StreamArn"): f"{table_arn(logical)}/stream/*",
            ("AWS::S3::Bucket", "Arn"): bucket_arn(logical),
            ("AWS::SQS::Queue", "Arn"): f"arn:aws:sqs:{here}:{logical}",
            ("AWS::Logs::LogGroup", "Arn"): f"arn:aws:logs:{here}:log-group:{logical}:*",
            ("AWS::IAM::Role", "Arn"): f"arn:aws:iam::{ACCOUNT}:role/{logical}",
        }
        assert (kind, attribute) in arns, f"!GetAtt {logical}.{attribute} ({kind}) is not resolved"
        return arns[(kind, attribute)]

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else arg

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(self._resolve(variables[name]))
            if "." in name and name.split(".", 1)[0] in self._resources:
                return self._arn(*name.split(".", 1))
            return str(self._ref(name))

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def _condition(self, name: str) -> bool:
        return self._truth(self._template["Conditions"][name])

    def _truth(self, expr: Any) -> bool:
        ((name, arg),) = expr.items()
        fn = name.removeprefix("Fn::")
        if fn == "Not":
            return not self._truth(arg[0])
        if fn == "And":
            return all(self._truth(a) for a in arg)
        if fn == "Or":
            return any(self._truth(a) for a in arg)
        if fn == "Equals":
            left, right = (str(self._resolve(a)) for a in arg)
            return left == right
        if fn == "Condition":
            return self._condition(arg)
        raise AssertionError(f"condition function {name} is not resolved by this test")


POLICIES = Policies(load_template(TEMPLATE), PARAMETERS)
FUNCTIONS = POLICIES.functions()


# Driving the functions -------------------------------------------------------------------------
UPSTREAM_MODEL = "demo-official-1"
WEBHOOK_KEY = "whsec_iam"  # the payment provider's signing secret, kept in Secrets Manager
CHAT = {
    "model": "demo-official",
    "messages": [{"role": "user", "content": "Which permissions do you need?"}],
    "max_tokens": 16,
}


@dataclass
class Setup:
    """What the test arranges with its own, unrecorded clients."""

    store: DynamoStore
    account_id: str
    key: str
    api_key: ApiKey
    poor_key: str
    code: str
    owner_key: str  # a management key of the account
    closed: tuple[str, str, str]  # an account active only in a closed month: id, key, month
    run_id: str = "iam-run"
    request_ids: list[str] = field(default_factory=list)


def wait_for_receipt(setup: Setup, request_id: str) -> None:
    deadline = time.monotonic() + 10
    while setup.store.get_receipt(setup.account_id, request_id) is None:
        assert time.monotonic() < deadline, f"no receipt for {request_id}"
        time.sleep(0.02)


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """The app under uvicorn on 127.0.0.1, as functions/proxy/run.sh serves it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(server.serve(),), daemon=True, name="iam-proxy"
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the proxy did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        # The upstream connection pool of this loop (forge.providers.http), closed on it.
        asyncio.run_coroutine_threadsafe(_close_upstream_pool(), loop).result(timeout=10)
        server.should_exit = True
        thread.join(timeout=10)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _close_upstream_pool() -> None:
    for client in upstream_http._pools.pop(asyncio.get_running_loop(), {}).values():
        await client.aclose()


def drive_proxy(setup: Setup, upstream: FakeOpenAI) -> None:
    """Every paid path: JSON and streamed chat (to its end and cut), embeddings, messages, an
    idempotent replay, a refusal, the model list."""
    with serving(create_paid_app()) as url, httpx.Client(base_url=url, timeout=30) as client:
        auth = {"Authorization": f"Bearer {setup.key}"}

        models = client.get("/v1/models", headers=auth)
        assert models.status_code == 200, models.text

        headers = {**auth, "Idempotency-Key": "iam-once", "x-run-id": setup.run_id}
        first = client.post("/v1/chat/completions", json=CHAT, headers=headers)
        again = client.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert first.status_code == again.status_code == 200, (first.text, again.text)
        assert again.headers["x-forge-idempotent-replay"] == "true"
        setup.request_ids.append(first.headers["x-request-id"])

        with client.stream(
            "POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth
        ) as streamed:
            lines = [line for line in streamed.iter_lines() if line]
            assert streamed.status_code == 200 and lines[-1] == "data: [DONE]", lines
            setup.request_ids.append(streamed.headers["x-request-id"])

        upstream.fail(UPSTREAM_MODEL, Fault("endless"))
        with client.stream(
            "POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth
        ) as cut:
            assert cut.status_code == 200
            data = (line for line in cut.iter_lines() if line.startswith("data: {"))
            next(data), next(data)  # two chunks, then the client hangs up
            setup.request_ids.append(cut.headers["x-request-id"])

        # A settle that finds its hold already resolved (the sweeper got there first, or the
        # answer to this very settle was lost) reads the stored receipt.
        # (A slow stream: each later event 0.25 s after the one before, time for the sweep.)
        upstream.fail(UPSTREAM_MODEL, Fault("paced", seconds=0.0, gap=0.25))
        slow = {**CHAT, "stream": True, "max_tokens": 4}
        with client.stream("POST", "/v1/chat/completions", json=slow, headers=auth) as raced:
            lines = (line for line in raced.iter_lines() if line.startswith("data: {"))
            next(lines)
            swept = sweep(setup.store, utcnow() + timedelta(hours=1))
            assert swept.voided == [raced.headers["x-request-id"]], swept
            rest = list(lines)
            assert raced.status_code == 200 and rest, rest
            setup.request_ids.append(raced.headers["x-request-id"])

        embeddings = client.post(
            "/v1/embeddings", json={"model": "demo-embedding", "input": ["a", "b"]}, headers=auth
        )
        assert embeddings.status_code == 200, embeddings.text
        setup.request_ids.append(embeddings.headers["x-request-id"])

        messages = client.post(
            "/v1/messages",
            json={"model": "demo-official", "max_tokens": 16, "messages": CHAT["messages"]},
            headers=auth,
        )
        assert messages.status_code == 200, messages.text
        setup.request_ids.append(messages.headers["x-request-id"])

        refused = client.post(
            "/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {setup.poor_key}", "Idempotency-Key": "iam-poor"},
        )
        assert refused.status_code == 402, refused.text

        for request_id in setup.request_ids:  # a cut stream settles after the client left
            wait_for_receipt(setup, request_id)


def api_event(
    method: str,
    path: str,
    *,
    key: str | None = None,
    query: Mapping[str, str] | None = None,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway (REST, proxy integration) event for the account function, shaped as
    events/account_balance.json."""
    event: dict[str, Any] = json.loads((EVENTS / "account_balance.json").read_text())
    all_headers = {k: v for k, v in event["headers"].items() if k != "Authorization"}
    if key is not None:
        all_headers["Authorization"] = f"Bearer {key}"
    if body is not None:
        all_headers["Content-Type"] = "application/json"
    all_headers.update(headers or {})
    event.update(
        path=path,
        httpMethod=method,
        headers=all_headers,
        multiValueHeaders={k: [v] for k, v in all_headers.items()},
        queryStringParameters=dict(query) if query else None,
        multiValueQueryStringParameters={k: [v] for k, v in query.items()} if query else None,
        pathParameters={"proxy": path.lstrip("/")},
        body=body.decode() if body is not None else None,
        isBase64Encoded=False,
    )
    event["requestContext"] = {
        **event["requestContext"],
        "httpMethod": method,
        "path": f"/dev{path}",
    }
    return event


def invoke_account(event: dict[str, Any]) -> dict[str, Any]:
    try:
        answer = load_handler_module("account").handler(event, LambdaContext())
    finally:
        # Mangum sets an event loop for the main thread, as Lambda's runtime wants; in a test
        # process it must be closed, or a later test finds it unclosed.
        asyncio.get_event_loop_policy().get_event_loop().close()
        asyncio.set_event_loop(None)
    assert answer["statusCode"] in (200, 201), (event["path"], answer)
    return json.loads(answer["body"])


def drive_account_views(setup: Setup) -> None:
    """Balance, a receipt, the ledger, usage, a run, the statement list, a redeem and a
    signed payment webhook."""
    key = setup.key
    ledger_query = json.loads((EVENTS / "account_ledger.json").read_text())
    invoke_account(api_event("GET", "/v1/balance", key=key))
    invoke_account(api_event("GET", f"/v1/requests/{setup.request_ids[0]}", key=key))
    invoke_account(
        api_event("GET", "/v1/ledger", key=key, query=ledger_query["queryStringParameters"])
    )
    invoke_account(api_event("GET", "/v1/usage", key=key))
    invoke_account(api_event("GET", f"/v1/runs/{setup.run_id}", key=key))
    invoke_account(api_event("GET", "/v1/runs", key=key))  # with the page's run budgets
    invoke_account(api_event("GET", "/v1/requests", key=key, query={"status": "succeeded"}))
    listed = invoke_account(api_event("GET", "/v1/statements", key=key))
    assert listed["data"], listed
    redeem = json.dumps({"code": setup.code}).encode()
    invoke_account(api_event("POST", "/v1/redeem", key=key, body=redeem))
    payment = json.dumps(
        {
            "id": "evt_iam",
            "type": PAYMENT_SUCCEEDED,
            "created": int(time.time()),
            "data": {
                "account_id": setup.account_id,
                "bucket": "credit",
                "amount": "2.00",
                "payment_id": "pi_iam",
            },
        }
    ).encode()
    signature = sign_payload(WEBHOOK_KEY, payment, int(time.time()))
    paid = invoke_account(
        api_event(
            "POST", "/v1/webhooks/payments", body=payment, headers={"Forge-Signature": signature}
        )
    )
    assert paid["status"] == "credited", paid


def drive_account_management(setup: Setup) -> None:
    """Keys, projects and the audit trail, as the account's owner manages them: every
    change, a rotate with and without grace, and every listing."""
    key = setup.owner_key

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        raw = json.dumps(body).encode() if body is not None else None
        return invoke_account(api_event(method, path, key=key, body=raw))

    call("POST", "/v1/projects", {"id": "iam", "caps": {"credit": {"daily": "1"}}})
    call("PATCH", "/v1/projects/iam", {"name": "IAM"})
    call("GET", "/v1/projects")
    created = call("POST", "/v1/keys", {"name": "iam", "project_id": "iam"})
    path = f"/v1/keys/{created['id']}"
    call("GET", "/v1/keys")
    call("GET", path)
    call("PATCH", path, {"models": ["demo-official"]})
    call("POST", f"{path}/pause")
    call("POST", f"{path}/resume")
    call("POST", f"{path}/rotate", {"grace_seconds": 60})
    call("POST", f"{path}/rotate", {"grace_seconds": 0})  # deletes both older secrets' items
    revoked = call("POST", f"{path}/revoke")
    assert revoked["status"] == "revoked", revoked
    audit = call("GET", "/v1/audit")
    assert len(audit["data"]) >= 9, audit


def drive_account_statement(setup: Setup) -> None:
    """One statement download: built if needed, then a presigned link."""
    month = str(Month.of(utcnow()))
    link = invoke_account(api_event("GET", f"/v1/statements/{month}", key=setup.key))
    assert link["url"].startswith("http"), link


def expired_holds(setup: Setup) -> None:
    """Two requests that died before settling: one with no outcome (voided), one whose
    outcome was recorded (settled by the sweeper)."""
    past = utcnow() - timedelta(minutes=5)
    for request_id, outcome in (("req_iam_void", False), ("req_iam_settle", True)):
        hold = Hold(
            request_id=request_id,
            account_id=setup.account_id,
            key_id=setup.api_key.key_id,
            requested_model="demo-official",
            bucket=Bucket.CREDIT,
            amount=10_000,
            expires_at=past,
        )
        if outcome:
            receipt = Receipt(
                request_id=request_id,
                account_id=setup.account_id,
                key_id=setup.api_key.key_id,
                project_id=hold.project_id,
                requested_model="demo-official",
                status="succeeded",
                hold=hold.amount,
                charge=1_000,
                bucket=Bucket.CREDIT,
            )
            hold = hold.model_copy(update={"outcome": HoldOutcome(charge=1_000, receipt=receipt)})
        setup.store.reserve(hold)


def handler_of(function: str) -> Callable[[dict[str, Any], Any], Any]:
    handler: Callable[[dict[str, Any], Any], Any] = load_handler_module(function).handler
    return handler


def event(name: str) -> dict[str, Any]:
    return dict(json.loads((EVENTS / name).read_text()))


def ledger_entries_only(stream_event: dict[str, Any]) -> dict[str, Any]:
    """What the archiver's FilterCriteria lets through: inserted ledger entries."""
    records = [
        r
        for r in stream_event["Records"]
        if r["eventName"] == "INSERT"
        and r["dynamodb"]["NewImage"].get("record_type", {}).get("S") == "ledger_entry"
    ]
    return {"Records": records}


def arrange(
    emulator: Emulator, resources: Resources, mp: pytest.MonkeyPatch
) -> tuple[Setup, Recorder, dict[str, str]]:
    """The stack's secrets, an account with money, a key, a poor account's key, a code and the
    stored catalog, written with the test's own clients (created before the recorder is on,
    so never recorded); the recorder; the secrets' ARNs by logical name."""
    sm = emulator.client("secretsmanager")
    prefix = resources.tables["BudgetTable"]
    provider = sm.create_secret(Name=f"{prefix}/providers", SecretString="{}")
    webhook = sm.create_secret(Name=f"{prefix}/webhook", SecretString=WEBHOOK_KEY)
    secret_arns = {"ProviderSecret": provider["ARN"], "WebhookSecretArn": webhook["ARN"]}
    names = Names(
        tables={v: k for k, v in resources.tables.items()},
        buckets={v: k for k, v in resources.buckets.items()},
        secrets={
            secret_arns["ProviderSecret"]: secret_arn("ProviderSecret"),
            secret_arns["WebhookSecretArn"]: PARAMETERS["WebhookSecretArn"],
        },
    )
    client = make_dynamodb_client(resources.endpoint_url)
    budget, ledger = resources.tables["BudgetTable"], resources.tables["LedgerTable"]
    store = DynamoStore(client, budget, ledger)
    DynamoCatalogStore(client, budget).seed(load_catalog())  # as forge-admin publishes it
    account_id = create_account(store, "iam coverage")
    credit_wallet(store, account_id, Bucket.CREDIT, "5.00", source="test", memo="top-up")
    key, api_key = issue_key(store, account_id)
    poor_key, _ = issue_key(store, create_account(store, "iam coverage, no money"))
    code = create_code(store, Bucket.CREDIT, "1.00").code
    owner_key, _ = issue_key(store, account_id, kind=KeyKind.MANAGEMENT)
    # Its month is compacted by the monthly run, and its statement read back from it.
    last_year = Month.of(utcnow()).previous().previous().start + timedelta(days=3)
    closed_id = create_account(store, "iam coverage, last year")
    closed_key, _ = issue_key(store, closed_id)
    then = DynamoStore(client, budget, ledger, clock=lambda: last_year)
    credit_wallet(then, closed_id, Bucket.CREDIT, "2.00", source="test", memo="top-up")
    closed = (closed_id, closed_key, str(Month.of(last_year)))
    recorder = Recorder(names)
    recorder.install(mp)
    setup = Setup(store, account_id, key, api_key, poor_key, code, owner_key, closed)
    return setup, recorder, secret_arns


@pytest.fixture(scope="module")
def calls(emulator: Emulator) -> Iterator[dict[str, list[Call]]]:
    """Every function's code driven once, in the order a month of activity would run it;
    the IAM actions each function's calls needed."""
    resources = emulator.create_resources(TEMPLATE, prefix=f"iam{secrets.token_hex(3)}")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in resources.environment().items():
            mp.setenv(name, value)
        for name in ("FORGE_WEBHOOK_SECRET", "OPENAI_UPSTREAM_API_KEY", "FORGE_COMPAT_API_KEYS"):
            mp.delenv(name, raising=False)
        setup, recorder, secret_arns = arrange(emulator, resources, mp)

        upstream = FakeOpenAI(name="demo")
        upstream.api_key = "demo"
        upstream.start()
        try:
            mp.setenv("FORGE_DEMO_BASE_URL", f"{upstream.base_url}/v1")
            mp.setenv("FORGE_PROVIDER_SECRET_ID", secret_arns["ProviderSecret"])
            with recorder.running("ProxyFunction"):
                drive_proxy(setup, upstream)
        finally:
            upstream.stop()
        mp.delenv("FORGE_DEMO_BASE_URL")
        mp.delenv("FORGE_PROVIDER_SECRET_ID")

        expired_holds(setup)
        with recorder.running("SweeperFunction"):
            swept = handler_of("sweeper")(event("sweeper.json"), LambdaContext())
        assert len(swept["voided"]) == 1 and len(swept["settled"]) == 1, swept

        mp.setenv("FORGE_WEBHOOK_SECRET_ARN", secret_arns["WebhookSecretArn"])
        with recorder.running("AccountFunction"):
            drive_account_views(setup)
            drive_account_management(setup)

        stream = lambda_stream_event(emulator, resources.tables["LedgerTable"])
        stream = ledger_entries_only(stream)
        with recorder.running("ArchiverFunction"):
            archived = handler_of("archiver")(stream, LambdaContext())
        assert stream["Records"] and archived == {"batchItemFailures": []}, archived

        this_month = Month.of(utcnow())
        closed = str(this_month.previous().previous())  # final, and before any activity
        with recorder.running("StatementFunction"):
            statements = handler_of("statements")
            statements(event("statements.json"), LambdaContext())  # the monthly schedule
            for request in (
                {"account_id": setup.account_id, "month": str(this_month)},  # provisional
                {"account_id": setup.account_id, "month": closed},  # final: built, stored
                {"account_id": setup.account_id, "month": closed},  # final: found stored
                {"account_id": setup.account_id, "month": closed, "rebuild": True},  # compared
                {"month": setup.closed[2]},  # a closed month's run: compacted, then built
            ):
                statements(request, LambdaContext())

        with recorder.running("AccountFunction"):  # after the archive caught up
            drive_account_statement(setup)
        # A compacted month whose statement is not stored (its build failed, say): the
        # account function builds it from the compacted month.
        closed_id, closed_key, closed_month = setup.closed
        s3 = emulator.client("s3")
        for ext in ("csv", "html"):
            key = f"statements/{closed_id}/{closed_month}.{ext}"
            s3.delete_object(Bucket=resources.buckets["ArchiveBucket"], Key=key)
        with recorder.running("AccountFunction"):
            statement = api_event("GET", f"/v1/statements/{closed_month}", key=closed_key)
            assert invoke_account(statement)["url"].startswith("http")

        with recorder.running("ReconcileFunction"):
            reconciled = handler_of("reconcile")(event("reconcile.json"), LambdaContext())
        assert reconciled["drifts"] == [], reconciled

    yield dict(recorder.calls)


# The assertions --------------------------------------------------------------------------------
def test_every_function_of_the_template_was_driven(calls: dict[str, list[Call]]) -> None:
    silent = [f for f in FUNCTIONS if not calls.get(f)]
    assert not silent, f"no AWS call recorded for {silent}: drive their code in the `calls` fixture"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_call_is_allowed_by_the_functions_policy(
    calls: dict[str, list[Call]], function: str
) -> None:
    grants = POLICIES.grants(function)
    missing = sorted(
        {
            str(call)
            for call in calls.get(function, [])
            if not any(g.covers(call) for g in grants if g.effect == "Allow")
            or any(g.covers(call) for g in grants if g.effect == "Deny")
        }
    )
    assert not missing, (
        f"{function}'s policy in template.yaml does not allow what its code calls "
        f"(AccessDenied in production):\n  " + "\n  ".join(missing)
    )


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_granted_permission_is_used(calls: dict[str, list[Call]], function: str) -> None:
    used = calls.get(function, [])
    unused = sorted(
        {
            str(grant)
            for grant in POLICIES.grants(function)
            if grant.effect == "Allow"
            and (function, grant.action, grant.resource) not in USED_BY_AWS
            and not any(grant.covers(call) for call in used)
        }
    )
    assert not unused, (
        f"{function} is granted permissions its code never used in this test; drop them from "
        f"template.yaml (or drive the path that needs them):\n  " + "\n  ".join(unused)
    )


def test_the_allow_list_names_granted_permissions_nobody_calls(
    calls: dict[str, list[Call]],
) -> None:
    stale = []
    for function, action, resource in USED_BY_AWS:
        grant = Grant(function, "Allow", action, resource)
        if grant not in POLICIES.grants(function):
            stale.append(f"{function}: {action} on {resource} is no longer granted")
        elif any(grant.covers(call) for call in calls.get(function, [])):
            stale.append(f"{function}: {action} on {resource} is called by the code")
    assert not stale, "USED_BY_AWS is out of date:\n  " + "\n  ".join(stale)
