"""The SAM application as Lambda runs it: lint and validate the template, then invoke each
built handler function (see tests/sam/built.py for how)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from forge.domain.ids import hash_api_key
from forge.domain.money import Bucket
from forge.money_in.accounts import credit_wallet
from forge.store.dynamo.store import DynamoStore
from forge_tools.emulator import Emulator, Resources
from tests.sam.built import SAM, TEMPLATE, assert_ok, invoke_built, load_event, run, seed_api_key

pytestmark = pytest.mark.sam


def test_cfn_lint_passes() -> None:
    assert_ok(run(["bash", str(SAM), "--cfn-lint", str(TEMPLATE)], timeout=900), "cfn-lint")


def test_sam_validate_lint_passes() -> None:
    assert_ok(
        run(["bash", str(SAM), "validate", "--lint", "--template", str(TEMPLATE)], timeout=900),
        "sam validate --lint",
    )


def _with_key(event: dict[str, Any], plaintext: str) -> dict[str, Any]:
    event["headers"]["Authorization"] = f"Bearer {plaintext}"
    event["multiValueHeaders"]["Authorization"] = [f"Bearer {plaintext}"]
    return event


def test_account_function_answers_the_balance_event(
    lambda_build: Path, python312: str, emulator: Emulator, backend: Resources, tmp_path: Path
) -> None:
    # Given an account with a key and 25.00 of Credit, and the GET /v1/balance event
    plaintext = seed_api_key(emulator, backend)
    store = DynamoStore(
        emulator.client("dynamodb"), backend.tables["BudgetTable"], backend.tables["LedgerTable"]
    )
    account_id = store.get_api_key(hash_api_key(plaintext)).account_id  # type: ignore[union-attr]
    credit_wallet(store, account_id, Bucket.CREDIT, "25.00", source="test", memo="top-up")

    # When the built account function (Mangum) handles it
    run = invoke_built(
        lambda_build,
        "AccountFunction",
        _with_key(load_event("account_balance"), plaintext),
        python312=python312,
        backend=backend,
        tmp_path=tmp_path,
    )

    # Then it answers 200 with both buckets, the credit in its currency
    assert run.returncode == 0, run.output
    assert run.result["statusCode"] == 200, run.output
    buckets = {b["bucket"]: b for b in json.loads(run.result["body"])["buckets"]}
    assert buckets["credit"]["balance"] == "25.000000", buckets
    assert buckets["credit"]["held"] == "0.000000", buckets


def test_account_function_pages_the_ledger_from_a_query_string(
    lambda_build: Path, python312: str, emulator: Emulator, backend: Resources, tmp_path: Path
) -> None:
    plaintext = seed_api_key(emulator, backend)
    store = DynamoStore(
        emulator.client("dynamodb"), backend.tables["BudgetTable"], backend.tables["LedgerTable"]
    )
    account_id = store.get_api_key(hash_api_key(plaintext)).account_id  # type: ignore[union-attr]
    for amount in ("1.00", "2.00", "3.00"):
        credit_wallet(store, account_id, Bucket.CREDIT, amount, source="test", memo=amount)

    run = invoke_built(
        lambda_build,
        "AccountFunction",
        _with_key(load_event("account_ledger"), plaintext),
        python312=python312,
        backend=backend,
        tmp_path=tmp_path,
    )

    assert run.returncode == 0, run.output
    assert run.result["statusCode"] == 200, run.output
    page = json.loads(run.result["body"])
    assert [e["amount"] for e in page["data"]] == ["1.000000", "2.000000", "3.000000"], page


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/chat/completions"), ("GET", "/v1/models")]
)
def test_account_function_serves_no_paid_route(
    method: str,
    path: str,
    lambda_build: Path,
    python312: str,
    emulator: Emulator,
    backend: Resources,
    tmp_path: Path,
) -> None:
    # The API routes these to the proxy; reaching the account function they do not exist.
    event = _with_key(load_event("account_balance"), seed_api_key(emulator, backend))
    event.update(path=path, httpMethod=method, pathParameters={"proxy": path.lstrip("/")})

    run = invoke_built(
        lambda_build,
        "AccountFunction",
        event,
        python312=python312,
        backend=backend,
        tmp_path=tmp_path,
    )

    assert run.returncode == 0, run.output
    assert run.result["statusCode"] == 404, run.output
    assert json.loads(run.result["body"])["error"]["code"] == "not_found", run.output


@pytest.mark.parametrize(
    ("path", "media_type"),
    [("/console/", "text/html"), ("/console/js/app.js", "text/javascript")],
)
def test_account_function_serves_the_console_from_the_built_artefact(
    path: str,
    media_type: str,
    sam_build: Path,
    lambda_build: Path,
    python312: str,
    backend: Resources,
    tmp_path: Path,
) -> None:
    # The console's files ship in the built layer and are served under the strict CSP.
    event = load_event("account_balance")
    event.update(path=path, httpMethod="GET", pathParameters={"proxy": path.lstrip("/")})
    event["headers"].pop("Authorization", None)
    event["multiValueHeaders"].pop("Authorization", None)

    run = invoke_built(
        lambda_build,
        "AccountFunction",
        event,
        python312=python312,
        backend=backend,
        tmp_path=tmp_path,
    )

    assert run.returncode == 0, run.output
    assert run.result["statusCode"] == 200, run.output
    headers = {k.lower(): v for k, v in run.result["headers"].items()}
    assert headers["content-type"].startswith(media_type)
    assert headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
    shipped = next(sam_build.glob("ForgeLayer/python/forge/api/console" + path[8:].rstrip("/")))
    expected = shipped / "index.html" if shipped.is_dir() else shipped
    assert run.result["body"] == expected.read_text(encoding="utf-8")


def test_archiver_reports_no_failed_records(
    lambda_build: Path, python312: str, backend: Resources, tmp_path: Path
) -> None:
    run = invoke_built(
        lambda_build,
        "ArchiverFunction",
        load_event("archiver"),
        python312=python312,
        backend=backend,
        tmp_path=tmp_path,
    )
    assert run.returncode == 0, run.output
    assert isinstance(run.result, dict), run.output
    assert run.result.get("batchItemFailures") == [], run.output


def test_statements_function_runs(
    lambda_build: Path, python312: str, backend: Resources, tmp_path: Path
) -> None:
    run = invoke_built(
        lambda_build,
        "StatementFunction",
        load_event("statements"),
        python312=python312,
        backend=backend,
        tmp_path=tmp_path,
    )
    assert run.returncode == 0, run.output


def test_sweeper_function_runs_and_reports(
    lambda_build: Path, python312: str, backend: Resources, tmp_path: Path
) -> None:
    run = invoke_built(
        lambda_build,
        "SweeperFunction",
        load_event("sweeper"),
        python312=python312,
        backend=backend,
        tmp_path=tmp_path,
    )
    assert run.returncode == 0, run.output
    assert run.result == {"settled": [], "voided": [], "already_resolved": []}, run.output


def test_reconcile_function_finds_no_drift_in_a_fresh_account(
    lambda_build: Path, python312: str, emulator: Emulator, backend: Resources, tmp_path: Path
) -> None:
    seed_api_key(emulator, backend)
    run = invoke_built(
        lambda_build,
        "ReconcileFunction",
        load_event("reconcile"),
        python312=python312,
        backend=backend,
        tmp_path=tmp_path,
    )
    assert run.returncode == 0, run.output
    assert run.result["drifts"] == [] and run.result["buckets"] == 2, run.output
