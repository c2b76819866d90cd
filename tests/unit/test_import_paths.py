"""What each path imports, in a fresh interpreter: the proxy loads the paid routes and what a
paid call uses, nothing of the account surface, the ledger's jobs or Powertools; the gateway
loads without the web layer (no forge.gateway <-> forge.api cycle). Import time is measured in
`make bench` (cold start); this keeps the import graph from growing back."""

from __future__ import annotations

import json
import os
import subprocess
import sys

_LOADED = """
import json, sys
{code}
print(json.dumps(sorted(sys.modules)))
"""
ENV = {"BUDGET_TABLE": "b", "LEDGER_TABLE": "l", "ARCHIVE_BUCKET": "a"}


def loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", _LOADED.format(code=code)],
        env={**os.environ, **ENV, "AWS_DEFAULT_REGION": "us-east-1"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(json.loads(out))


def under(modules: set[str], *packages: str) -> set[str]:
    return {m for m in modules if any(m == p or m.startswith(f"{p}.") for p in packages)}


def test_the_proxy_loads_only_what_a_paid_call_uses() -> None:
    modules = loaded_after(
        "from forge.api import create_paid_app\n"
        "create_paid_app()\n"
        "from forge import wiring\n"
        "wiring.get_store(); wiring.get_gateway()"
    )

    assert {"forge.api.routes.chat", "forge.gateway.service", "forge.store.dynamo.wire"} <= modules
    assert not under(
        modules,
        "forge.api.routes.account",
        "forge.api.routes.money",
        "forge.money_in",
        "forge.ledger.statements",
        "forge.ledger.reconcile",
        "forge.store.dynamo.views",
        "forge.store.failure_queue",
        "forge.telemetry",
        "aws_lambda_powertools",
        "boto3",
        "botocore.client",  # the store speaks DynamoDB through forge.store.dynamo.wire
        "mangum",
    )


def test_the_gateway_loads_without_the_web_layer() -> None:
    modules = loaded_after("import forge.gateway")

    assert "forge.gateway.service" in modules
    assert not under(modules, "forge.api", "fastapi", "starlette", "botocore")
