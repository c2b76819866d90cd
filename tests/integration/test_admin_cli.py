"""forge-admin against the emulated stack, in process: key limits and the retry ceiling,
what it says without a stack, and the forms it shows money, instants and statements in."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime

import httpx
import pytest

from forge.api import create_app
from forge.domain.calendar import Month
from forge.domain.ids import hash_api_key
from forge.domain.money import Bucket
from forge.domain.records import LedgerKind
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.wiring import get_archive, get_store
from forge_tools import admin
from forge_tools.emulator import Emulator, Resources
from tests.ledger_history import History


def test_key_caps_sets_limits_and_the_retry_ceiling(
    aws_stack: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    store = get_store()
    account_id = create_account(store, "cli")
    plaintext, key = issue_key(store, account_id)
    flags = ["key", "caps", "--account", account_id, "--key-id", key.key_id]

    admin.main([*flags, "--daily", "credit=1.5", "--max-upstream-attempts", "2"])
    shown = json.loads(capsys.readouterr().out)
    assert shown["max_upstream_attempts"] == 2
    stored = store.get_api_key(hash_api_key(plaintext))
    assert stored is not None and stored.max_upstream_attempts == 2
    assert stored.caps_for(Bucket.CREDIT).daily == 1_500_000

    admin.main([*flags, "--max-upstream-attempts", "0", "--daily", "credit=none"])
    stored = store.get_api_key(hash_api_key(plaintext))
    assert stored is not None and stored.max_upstream_attempts is None  # back to the default
    assert stored.caps_for(Bucket.CREDIT).daily is None


# A newcomer's rough edges (issue 9) -----------------------------------------------------------
def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_without_a_stack_it_says_what_to_source_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a shell where .local/dev.env was not sourced and no --stack is passed
    for name in ("BUDGET_TABLE", "LEDGER_TABLE", "ARCHIVE_BUCKET"):
        monkeypatch.delenv(name, raising=False)

    # When any command runs
    with pytest.raises(SystemExit) as exited:
        admin.main(["wallet", "show", "--account", "acct_x"])

    # Then one line says what to do, and the exit code is a usage error's
    assert exited.value.code == 2
    said = one_line(capsys.readouterr().err)
    assert said.startswith("forge-admin: no stack configured")
    assert "source .local/dev.env" in said and "--stack NAME" in said


def test_an_unknown_stack_is_one_line_too(
    aws_stack: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    # The emulator answers CloudFormation as AWS would for a stack that does not exist.
    with pytest.raises(SystemExit) as exited:
        admin.main(["--stack", "no-such-stack", "reconcile"])
    assert exited.value.code == 2
    assert "no-such-stack" in one_line(capsys.readouterr().err)


def test_wallet_show_gives_decimals_in_the_bucket_currency(
    aws_stack: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    store = get_store()
    account_id = create_account(store, "cli")
    credit_wallet(store, account_id, Bucket.CREDIT, "12.50", source="test", memo="fund")

    admin.main(["wallet", "show", "--account", account_id])
    shown = json.loads(capsys.readouterr().out)
    assert shown["credit"] == {
        "currency": "USD",
        "balance": "12.500000",
        "held": "0.000000",
        "available": "12.500000",
        "seq": 1,
    }
    assert shown["rmb"]["currency"] == "CNY" and shown["rmb"]["balance"] == "0.000000"

    # --micros adds the stored integers, for comparing with what `reconcile` reports
    admin.main(["wallet", "show", "--account", account_id, "--micros"])
    credit = json.loads(capsys.readouterr().out)["credit"]
    assert (credit["balance"], credit["balance_micros"], credit["held_micros"]) == (
        "12.500000",
        12_500_000,
        0,
    )


def test_ledger_show_writes_instants_as_the_api_does(
    aws_stack: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    store = get_store()
    account_id = create_account(store, "cli")
    plaintext, _ = issue_key(store, account_id)
    credit_wallet(store, account_id, Bucket.CREDIT, "1", source="test", memo="one")
    credit_wallet(store, account_id, Bucket.RMB, "2", source="test", memo="two")

    admin.main(["ledger", "show", "--account", account_id])
    cli = {e["entry_id"]: e["created_at"] for e in json.loads(capsys.readouterr().out)["entries"]}

    async def api_ledger() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.get("/v1/ledger", headers={"Authorization": f"Bearer {plaintext}"})

    api = {e["entry_id"]: e["created_at"] for e in asyncio.run(api_ledger()).json()["data"]}
    assert len(cli) == 2 and cli == api
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", t) for t in cli.values())


@pytest.fixture
def history(emulator: Emulator, aws_stack: Resources) -> History:
    """Ledger entries on chosen days, archived as they are written."""
    return History(
        emulator.client("dynamodb"),
        aws_stack.tables["BudgetTable"],
        aws_stack.tables["LedgerTable"],
        archive=get_archive(),
    )


def test_statement_build_refuses_the_months_the_api_has_no_statement_for(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an account whose ledger starts in March 2025
    history.move("acct_cli_first", datetime(2025, 3, 5, tzinfo=UTC), LedgerKind.TOPUP, 5_000_000)
    this_month = Month.of(datetime.now(UTC))

    # When a statement is built for a month before it, or after this one
    for month in ("2025-02", str(this_month.next())):
        with pytest.raises(SystemExit) as exited:
            admin.main(["statement", "build", "--account", "acct_cli_first", "--month", month])

        # Then it is refused as the API refuses it (404), and nothing is stored
        assert exited.value.code == 1
        said = one_line(capsys.readouterr().err)
        assert f"No statement for {month}" in said and "(not_found)" in said
        assert get_archive().stored_statement("acct_cli_first", month) is None


def test_statement_list_shows_what_build_stored(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an account active in March 2025 and this month
    now = datetime.now(UTC)
    history.move("acct_cli_list", datetime(2025, 3, 5, tzinfo=UTC), LedgerKind.TOPUP, 5_000_000)
    history.move("acct_cli_list", now, LedgerKind.TOPUP, 1_000_000)
    this_month = str(Month.of(now))

    # When both months' statements are built
    for month in ("2025-03", this_month):
        admin.main(["statement", "build", "--account", "acct_cli_list", "--month", month])
    capsys.readouterr()

    # Then the list says each is stored, final or provisional, and the rest are not
    admin.main(["statement", "list", "--account", "acct_cli_list"])
    listed = {m["month"]: (m["status"], m["stored"]) for m in json.loads(capsys.readouterr().out)}
    assert listed["2025-03"] == ("final", "final")
    assert listed[this_month] == ("provisional", "provisional")
    assert listed["2025-04"] == ("final", None)


def test_archive_compact_compacts_a_closed_month_once_and_reports_failures(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two accounts active in March 2025, one of whose archive lost an entry
    history.move("acct_cli_c1", datetime(2025, 3, 5, tzinfo=UTC), LedgerKind.TOPUP, 5_000_000)
    history.move("acct_cli_c2", datetime(2025, 3, 6, tzinfo=UTC), LedgerKind.TOPUP, 7)
    history.move(
        "acct_cli_c2", datetime(2025, 3, 7, tzinfo=UTC), LedgerKind.CHARGE, -1, archive=False
    )

    # When March is compacted, twice
    for _ in range(2):
        with pytest.raises(SystemExit) as exited:
            admin.main(["archive", "compact", "--month", "2025-03"])
        assert exited.value.code == 1

        # Then the healthy account is compacted, the other is reported and left as it was
        assert json.loads(capsys.readouterr().out) == {
            "month": "2025-03",
            "compacted": ["acct_cli_c1"],
            "failed": {"acct_cli_c2": "statement_not_ready"},
        }
    assert get_archive().month_close("acct_cli_c1", Month(2025, 3)) is not None
    assert get_archive().month_close("acct_cli_c2", Month(2025, 3)) is None
