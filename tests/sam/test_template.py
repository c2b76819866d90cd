"""The deployed shape, read from template.yaml as CloudFormation receives it: transformed by the
SAM translator (tests/sam/transform.py, run with .venv-sam's samtranslator)."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from forge.domain.archive import (
    CLOSING_PREFIX,
    LEDGER_PREFIX,
    MONTHLY_PREFIX,
    STATEMENT_PREFIX,
    archive_key,
    closing_key,
    monthly_key,
)
from forge.domain.calendar import Month
from forge.domain.money import Bucket
from forge.domain.records import LedgerEntry, LedgerKind
from tests.sam.built import ROOT, SAM, TEMPLATE

pytestmark = pytest.mark.sam

PROXY_ROUTES = {
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",  # the proxy holds the provider keys its counts need
    "/v1/embeddings",
    "/v1/models",
    "/v1/models/{id}",
}
CONSOLE_ROUTES = {"/console", "/console/{proxy+}"}
BACKGROUND = {
    "ArchiverFunction": 5,
    "SweeperFunction": 1,
    "StatementFunction": 2,
    "ReconcileFunction": 1,
}
# What must page someone: each alarm's metric, and the resource it watches.
WATCHED = {
    ("AWS/Lambda", "Errors", "ReconcileFunction"),
    ("AWS/Lambda", "Errors", "ProxyFunction"),
    ("AWS/Lambda", "Throttles", "ProxyFunction"),
    ("AWS/Lambda", "Duration", "ProxyFunction"),
    ("AWS/Lambda", "Errors", "AccountFunction"),
    ("AWS/Lambda", "IteratorAge", "ArchiverFunction"),
    ("AWS/Lambda", "Errors", "SweeperFunction"),
    ("AWS/Lambda", "Errors", "StatementFunction"),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "ArchiveFailureQueue"),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "SchedulerDeadLetterQueue"),
    ("AWS/ApiGateway", "5XXError", "ProxyApi"),
    ("TokensForge", "DeferredSettles", None),
    ("TokensForge", "Refusals", None),
    ("AWS/DynamoDB", "ReadThrottleEvents", "BudgetTable"),
    ("AWS/DynamoDB", "WriteThrottleEvents", "BudgetTable"),
    ("AWS/DynamoDB", "ReadThrottleEvents", "LedgerTable"),
    ("AWS/DynamoDB", "WriteThrottleEvents", "LedgerTable"),
}


@pytest.fixture(scope="module")
def transformed() -> dict[str, Any]:
    installed = subprocess.run(
        ["bash", str(SAM), "--install"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert installed.returncode == 0, installed.stderr
    proc = subprocess.run(
        [str(ROOT / ".venv-sam" / "bin" / "python"), "-m", "tests.sam.transform", str(TEMPLATE)],
        cwd=ROOT,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    template: dict[str, Any] = json.loads(proc.stdout)
    return template


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _integrations(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (api,) = _resources(template, "AWS::ApiGateway::RestApi").values()
    return {
        path: operation["x-amazon-apigateway-integration"]
        for path, operations in api["Properties"]["Body"]["paths"].items()
        for operation in operations.values()
    }


def _function_of(integration: dict[str, Any]) -> str:
    uri = str(integration["uri"]["Fn::Sub"])
    return uri.split("/functions/${")[1].split(".Arn}")[0]


def test_paid_routes_stream_from_the_proxy_and_only_they_do(transformed: dict[str, Any]) -> None:
    integrations = _integrations(transformed)
    # the console's files are the account function's, like every other non-paid path
    assert set(integrations) == PROXY_ROUTES | CONSOLE_ROUTES | {"/{proxy+}"}, integrations
    for path, integration in integrations.items():
        uri = integration["uri"]["Fn::Sub"]
        if path in PROXY_ROUTES:
            assert _function_of(integration) == "ProxyFunction", path
            assert integration["responseTransferMode"] == "STREAM", path
            assert uri.endswith("/response-streaming-invocations"), uri
            assert "/2021-11-15/functions/" in uri, uri  # the InvokeWithResponseStream API
            assert integration["timeoutInMillis"] == 900_000, path
        else:
            assert _function_of(integration) == "AccountFunction", path
            assert "responseTransferMode" not in integration, path
            assert uri.endswith("/invocations") and "2015-03-31" in uri, uri


def test_the_proxy_runs_uvicorn_behind_the_web_adapter_for_15_minutes(
    transformed: dict[str, Any],
) -> None:
    proxy = transformed["Resources"]["ProxyFunction"]["Properties"]
    assert proxy["Handler"] == "run.sh"
    assert proxy["Timeout"] == 900
    env = proxy["Environment"]["Variables"]
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert env["AWS_LWA_INVOKE_MODE"] == "response_stream"
    # keep-alives well inside the idle timeout (5 min Regional; 30 s edge-optimised)
    assert float(env["FORGE_SSE_KEEPALIVE_SECONDS"]) < 30
    # a hold outlives the longest call that made it, so the sweeper never voids a live one
    assert int(env["FORGE_HOLD_TTL_SECONDS"]) > proxy["Timeout"]
    adapter = json.dumps(proxy["Layers"])
    assert "LambdaAdapterLayerArm64:26" in adapter and "LambdaAdapterLayerArn" in adapter
    account = transformed["Resources"]["AccountFunction"]["Properties"]
    assert account["Handler"] == "app.handler" and account["Timeout"] <= 29


def test_one_stage_and_access_logs(transformed: dict[str, Any]) -> None:
    (stage,) = _resources(transformed, "AWS::ApiGateway::Stage").values()
    assert stage["Properties"]["StageName"] == {"Ref": "Stage"}
    log = stage["Properties"]["AccessLogSetting"]
    assert log["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    assert "$context.requestId" in log["Format"]
    assert "Authorization" not in log["Format"] and "$input" not in log["Format"]


def test_every_alarm_pages_the_topic_and_every_risk_has_one(transformed: dict[str, Any]) -> None:
    alarms = _resources(transformed, "AWS::CloudWatch::Alarm")
    watched = set()
    for name, alarm in alarms.items():
        props = alarm["Properties"]
        assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        metrics = [m["MetricStat"]["Metric"] for m in props.get("Metrics", []) if "MetricStat" in m]
        for metric in metrics or [props]:
            for dimension in metric["Dimensions"]:
                ref = json.dumps(dimension["Value"])
                target = next((r for r in transformed["Resources"] if f'"{r}' in ref), None)
                if target is None and "-api" in ref:
                    target = "ProxyApi"
                watched.add((metric["Namespace"], metric["MetricName"], target))
    assert watched >= WATCHED, WATCHED - watched
    subscription = transformed["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"


def test_background_functions_keep_their_concurrency(transformed: dict[str, Any]) -> None:
    resources = transformed["Resources"]
    for name, reserved in BACKGROUND.items():
        assert resources[name]["Properties"]["ReservedConcurrentExecutions"] == reserved, name
    proxy_cap = resources["ProxyFunction"]["Properties"]["ReservedConcurrentExecutions"]
    assert proxy_cap["Fn::If"][1] == {"Ref": "ProxyConcurrencyLimit"}


def test_every_function_logs_to_a_group_with_retention(transformed: dict[str, Any]) -> None:
    resources = transformed["Resources"]
    for name, function in _resources(transformed, "AWS::Lambda::Function").items():
        group = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        retention = resources[group]["Properties"]["RetentionInDays"]
        assert retention == {"Ref": "LogRetentionDays"}, name


def test_schedules_are_unnamed_retried_and_dead_lettered(transformed: dict[str, Any]) -> None:
    schedules = _resources(transformed, "AWS::Scheduler::Schedule")
    assert len(schedules) == 3
    for name, schedule in schedules.items():
        props = schedule["Properties"]
        assert "Name" not in props, name  # two stacks in one account do not collide
        dead_letter = props["Target"]["DeadLetterConfig"]["Arn"]
        assert dead_letter == {"Fn::GetAtt": ["SchedulerDeadLetterQueue", "Arn"]}, name


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    """A role's statements, both branches of a conditional one."""
    found = []
    for policy in role["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            branches = statement["Fn::If"][1:] if "Fn::If" in statement else [statement]
            found += [b for b in branches if isinstance(b, dict) and "Action" in b]
    return found


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_each_function_has_its_own_narrow_role(transformed: dict[str, Any]) -> None:
    resources = transformed["Resources"]
    roles = _resources(transformed, "AWS::IAM::Role")
    for name, role in roles.items():
        for statement in _statements(role):
            for action in _as_list(statement["Action"]):
                assert "*" not in action, (name, action)
            for resource in _as_list(statement["Resource"]):
                assert resource != "*", (name, statement)
    managed = {
        name: role["Properties"].get("ManagedPolicyArns", []) for name, role in roles.items()
    }
    for arns in managed.values():
        for arn in arns:  # only the basic logging role; never SAM's wide stream-reader policy
            assert "AWSLambdaBasicExecutionRole" in str(arn) or "PushToCloudWatch" in str(arn)

    proxy = json.dumps(_statements(roles["ProxyFunctionRole"]))
    assert "secretsmanager:GetSecretValue" in proxy and '"ProviderSecret"' in proxy
    assert "s3:" not in proxy
    # It lists nothing but a split bucket's shards and an envelope's shares (docs/shards.md):
    # the budget table's items it may read one by one already, never the ledger's.
    queries = [
        s
        for s in _statements(roles["ProxyFunctionRole"])
        if "dynamodb:Query" in _as_list(s["Action"])
    ]
    assert [q["Resource"] for q in queries] == [{"Fn::GetAtt": ["BudgetTable", "Arn"]}]
    account = json.dumps(_statements(roles["AccountFunctionRole"]))
    assert "ProviderSecret" not in account  # the account function never sees provider keys
    archiver = resources["ArchiverFunction"]["Properties"]["Role"]
    assert archiver == {"Fn::GetAtt": ["ArchiverRole", "Arn"]}
    stream = [s for s in _statements(roles["ArchiverRole"]) if "dynamodb:GetRecords" in s["Action"]]
    assert stream and stream[0]["Resource"] == {"Fn::GetAtt": ["LedgerTable", "StreamArn"]}
    every_action = json.dumps([_statements(r) for r in roles.values()])
    assert "ConditionCheckItem" not in every_action


def test_storage_is_protected_and_tidy(transformed: dict[str, Any]) -> None:
    resources = transformed["Resources"]
    for table in ("BudgetTable", "LedgerTable"):
        assert resources[table]["Properties"]["DeletionProtectionEnabled"] is True, table
    rules = resources["ArchiveBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert any("AbortIncompleteMultipartUpload" in r for r in rules), rules
    (expiring,) = [r for r in rules if r.get("Prefix") == "statements/"]
    assert "NoncurrentVersionExpiration" in expiring, expiring
    # Only per-entry ledger objects ever expire (see the test below)
    expiring_rules = [r for r in rules if "ExpirationInDays" in r or "Expiration" in r]
    assert all(r["Prefix"] == LEDGER_PREFIX for r in expiring_rules), rules
    secret = resources["ProviderSecret"]["Properties"]
    assert secret["SecretString"] == "{}"
    url = transformed["Outputs"]["ApiUrl"]["Value"]["Fn::Sub"]
    assert "${AWS::URLSuffix}" in url and "amazonaws.com" not in url


def _expiring_prefixes(rules: list[dict[str, Any]]) -> list[str]:
    """The prefixes whose current objects a lifecycle rule deletes."""
    return [r.get("Prefix", "") for r in rules if "ExpirationInDays" in r]


def test_per_entry_objects_expire_once_their_month_is_compacted_and_nothing_else_does(
    transformed: dict[str, Any],
) -> None:
    rules = transformed["Resources"]["ArchiveBucket"]["Properties"]["LifecycleConfiguration"][
        "Rules"
    ]
    # The per-entry objects expire (the bucket is versioned: the old versions and the delete
    # markers go too) ...
    (entries,) = [r for r in rules if "ExpirationInDays" in r]
    assert entries["Prefix"] == LEDGER_PREFIX and entries["Status"] == "Enabled"
    assert entries["NoncurrentVersionExpiration"]["NoncurrentDays"] >= 1
    assert any(
        r.get("Prefix") == LEDGER_PREFIX and r.get("ExpiredObjectDeleteMarker") is True
        for r in rules
    )
    # ... long after their month is compacted: a month's first entry is at most 31 days old
    # when the schedule of the 1st compacts it, and a failed compaction gets two more months.
    assert entries["ExpirationInDays"] >= 31 + 59
    # No rule reaches the compacted months, the closing records or the statements.
    entry = LedgerEntry(
        entry_id="le_1",
        account_id="acct_x",
        bucket=Bucket.CREDIT,
        seq=1,
        kind=LedgerKind.TOPUP,
        amount=1,
        balance_after=1,
    )
    month = Month.of(entry.created_at)
    assert archive_key(entry).startswith(LEDGER_PREFIX)
    kept = [
        monthly_key("acct_x", month, Bucket.CREDIT),
        closing_key("acct_x", month),
        f"{STATEMENT_PREFIX}acct_x/{month}.csv",
    ]
    assert kept[0].startswith(MONTHLY_PREFIX) and kept[1].startswith(CLOSING_PREFIX)
    for key in kept:
        assert not any(key.startswith(p) for p in _expiring_prefixes(rules)), key


# Glue's types for the JSON the archive writes: pydantic dumps ints, strings, enums (their
# value) and datetimes (ISO 8601, read with from_iso8601_timestamp).
GLUE_TYPES = {"int": {"int", "bigint"}, "str": {"string"}, "datetime": {"string"}}
ENUMS_AS_STRING = {"Bucket", "LedgerKind"}


def _glue_type_of(annotation: Any) -> set[str]:
    names = {getattr(a, "__name__", str(a)) for a in getattr(annotation, "__args__", [annotation])}
    names.discard("NoneType")
    (name,) = names
    return {"string"} if name in ENUMS_AS_STRING else GLUE_TYPES[name]


def test_the_glue_table_has_the_archived_records_fields(transformed: dict[str, Any]) -> None:
    table = transformed["Resources"]["LedgerMonthlyTable"]["Properties"]
    assert table["DatabaseName"] == {"Ref": "ArchiveDatabase"}
    described = table["TableInput"]["StorageDescriptor"]
    columns = [(c["Name"], c["Type"]) for c in described["Columns"]]
    # Every field of the archived record, in its order, with a type Athena reads it as
    fields = LedgerEntry.model_fields
    assert [name for name, _ in columns] == list(fields)
    for name, glue_type in columns:
        assert glue_type in _glue_type_of(fields[name].annotation), (name, glue_type)
    assert "bigint" in dict(columns)["amount"]  # micro-units overflow an int
    assert described["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"


def test_the_glue_table_projects_the_compacted_months(transformed: dict[str, Any]) -> None:
    table = transformed["Resources"]["LedgerMonthlyTable"]["Properties"]["TableInput"]
    params = table["Parameters"]
    assert [k["Name"] for k in table["PartitionKeys"]] == ["month"]
    assert params["projection.enabled"] == "true"
    assert (params["projection.month.type"], params["projection.month.format"]) == (
        "date",
        "yyyy-MM",
    )
    assert params["projection.month.interval.unit"] == "MONTHS"
    assert params["projection.month.range"].endswith(",NOW")
    assert params["compressionType"] == "gzip"
    # The projected location of a month is exactly where compaction writes it, flat
    template = params["storage.location.template"]["Fn::Sub"]
    prefix = "s3://${ArchiveBucket}/"
    assert template.startswith(prefix)
    month = Month(2026, 11)
    key = monthly_key("acct_x", month, Bucket.RMB)
    located = template[len(prefix) :].replace("${!month}", str(month))
    assert key.startswith(located) and "/" not in key[len(located) :]
    assert key.endswith(".jsonl.gz")
    location = table["StorageDescriptor"]["Location"]["Fn::Sub"]
    assert location == f"{prefix}{MONTHLY_PREFIX}"
