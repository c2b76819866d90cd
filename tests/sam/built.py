"""The SAM application as Lambda runs it: build it once, then run each built function.

Each function is imported from `.aws-sam/build` in a fresh python3.12 whose sys.path holds only
the standard library, the function's directory and the layer's `python/` directory (Lambda's
/var/task and /opt/python), so a dependency missing from the layer fails here, not on AWS.
The functions talk to the embedded DynamoDB/S3 emulator, with tables made from template.yaml.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from forge.domain.ids import display_prefix, hash_api_key, new_api_key, new_id
from forge.domain.records import ApiKey
from forge.store.dynamo.store import DynamoStore
from forge_tools.emulator import Emulator, Resources, load_template

ROOT = Path(__file__).resolve().parents[2]
SAM = ROOT / "tools" / "sam.sh"
TEMPLATE = ROOT / "template.yaml"
EVENTS = ROOT / "events"
BUILD_DIR = ROOT / ".aws-sam" / "build"
LAYER_ID = "ForgeLayer"

# Runs inside the Lambda-like interpreter: argv = [module:function, event file, result file].
# The result goes to a file because Powertools logs to stdout.
_INVOKE = """
import importlib, json, sys, uuid
assert not any("-packages" in p for p in sys.path), sys.path
target, event_path, result_path = sys.argv[1:]
module_name, function_name = target.rsplit(".", 1)

class Context:
    function_name = "{function}"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:{function}"
    memory_limit_in_mb = 512
    aws_request_id = str(uuid.uuid4())
    log_group_name = "/aws/lambda/{function}"
    log_stream_name = "2026/11/15/[$LATEST]0123456789abcdef"
    def get_remaining_time_in_millis(self):
        return 30_000

with open(event_path, encoding="utf-8") as fh:
    event = json.load(fh)
handler = getattr(importlib.import_module(module_name), function_name)
result = handler(event, Context())
with open(result_path, "w", encoding="utf-8") as fh:
    json.dump(result, fh, default=str)
"""


@dataclass(frozen=True)
class Invocation:
    returncode: int
    result: Any
    output: str


def run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_ok(proc: subprocess.CompletedProcess[str], what: str) -> None:
    assert proc.returncode == 0, (
        f"{what} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    )


def load_event(name: str) -> dict[str, Any]:
    path = EVENTS / f"{name}.json"
    if not path.is_file():
        pytest.fail(f"missing test event {path.relative_to(ROOT)}")
    event: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return event


def literal_environment(template: dict[str, Any], function_id: str) -> dict[str, str]:
    """The function's environment as the template declares it: literals as they are,
    parameter references as their defaults; resource references are the emulator's job."""

    def variables(scope: dict[str, Any]) -> dict[str, Any]:
        return dict(scope.get("Environment", {}).get("Variables", {}))

    parameters = template.get("Parameters", {})
    declared = {
        **variables(template.get("Globals", {}).get("Function", {})),
        **variables(template["Resources"][function_id]["Properties"]),
    }
    env: dict[str, str] = {}
    for name, value in declared.items():
        if isinstance(value, str):
            env[name] = value
        elif isinstance(value, dict) and value.get("Ref") in parameters:
            env[name] = str(parameters[value["Ref"]].get("Default", ""))
    return env


def invoke_built(
    build_dir: Path,
    function_id: str,
    event: dict[str, Any],
    *,
    python312: str,
    backend: Resources,
    tmp_path: Path,
    extra_env: dict[str, str] | None = None,
) -> Invocation:
    """Invoke one built function as Lambda would: only stdlib, its code and the layer."""
    template = load_template(build_dir / "template.yaml")
    props = template["Resources"][function_id]["Properties"]
    code_dir = build_dir / props["CodeUri"]
    layer_dir = build_dir / template["Resources"][LAYER_ID]["Properties"]["ContentUri"] / "python"
    for path in (code_dir, layer_dir):
        assert path.is_dir(), f"{path} was not built"

    event_path, result_path = tmp_path / f"{function_id}-event.json", tmp_path / "result.json"
    event_path.write_text(json.dumps(event), encoding="utf-8")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join([str(code_dir), str(layer_dir)]),
        "LAMBDA_TASK_ROOT": str(code_dir),
        "AWS_LAMBDA_FUNCTION_NAME": function_id,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        **literal_environment(template, function_id),
        **backend.environment(),
        **(extra_env or {}),
    }
    # -S: no site-packages; -P: no cwd on sys.path; -B: /var/task is read-only on Lambda.
    args = [python312, "-S", "-P", "-B", "-c", _INVOKE.replace("{function}", function_id)]
    args += [props["Handler"], str(event_path), str(result_path)]
    proc = subprocess.run(
        args, cwd=code_dir, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    output = f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    result = json.loads(result_path.read_text("utf-8")) if proc.returncode == 0 else None
    return Invocation(proc.returncode, result, output)


def seed_api_key(emulator: Emulator, backend: Resources) -> str:
    """An account with one active key; returns the key's plaintext."""
    store = DynamoStore(
        emulator.client("dynamodb"), backend.tables["BudgetTable"], backend.tables["LedgerTable"]
    )
    account_id = new_id("acct")
    store.create_account(account_id, "SAM test account")
    plaintext = new_api_key()
    key = ApiKey(
        key_id=new_id("key"),
        account_id=account_id,
        project_id=new_id("proj"),
        prefix=display_prefix(plaintext),
    )
    store.put_api_key(hash_api_key(plaintext), key)
    return plaintext
