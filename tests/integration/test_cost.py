"""`make cost`'s measurement: the recorder on the store adapter's client counts what the
adapter actually sends for a paid call, and `python -m bench.cost` writes a table whose total
is the sum of its parts.

The first test pins the hot path's shape: a plain non-streamed call is three DynamoDB round
trips (a two-item reservation, a consistent read of the wallet, a five-item settlement), each
item under 1 KB. A change to the hot path changes these numbers here, visibly."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.cost.capacity import item_size, write_units
from bench.cost.recorder import CapacityRecorder, StoreCall
from bench.cost.report import DOCS_END, DOCS_START, README_END, README_START
from bench.cost.run import BODY, serving
from forge import wiring
from forge.api import create_paid_app
from forge.domain.money import Bucket
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from forge.providers.demo import create_demo_app
from forge.store.dynamo.store import DynamoStore
from forge_tools.emulator import Emulator, Resources

ROOT = Path(__file__).resolve().parents[2]


def paid_call(url: str, key: str, store: DynamoStore, account_id: str) -> str:
    answer = httpx.post(
        f"{url}/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200, answer.text
    request_id = answer.headers["x-request-id"]
    deadline = time.monotonic() + 10
    while store.get_receipt(account_id, request_id) is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return request_id


def table_writes(call: StoreCall) -> list[tuple[str, str, int]]:
    return [(w.kind, w.table, w.wru) for w in call.writes if w.index is None]


def test_one_plain_call_costs_what_the_store_adapter_sends(
    emulator: Emulator, aws_stack: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget, ledger = aws_stack.tables["BudgetTable"], aws_stack.tables["LedgerTable"]
    store = DynamoStore(emulator.client("dynamodb"), budget, ledger)  # not recorded
    account_id = create_account(store, "cost test")
    credit_wallet(store, account_id, Bucket.CREDIT, "10", source="test", memo="fund")
    key, issued = issue_key(store, account_id)
    with serving(create_demo_app(), "cost-test-demo") as demo:
        # Given the proxy's app, its DynamoDB client recorded, and beside the recorder a plain
        # log of the parameters the store adapter hands botocore
        monkeypatch.setenv("FORGE_DEMO_BASE_URL", f"{demo}/v1")
        monkeypatch.setenv("FORGE_DYNAMO_CLIENT", "botocore")  # the recorder hooks its events
        wiring.clear()
        client = wiring.dynamodb_client()
        sent: list[tuple[str, dict[str, Any]]] = []

        def log(params: dict[str, Any], model: Any, **_: Any) -> None:
            sent.append((model.name, copy.deepcopy(params)))

        client.meta.events.register("provide-client-params.dynamodb", log)
        recorder = CapacityRecorder(client, emulator.client("dynamodb")).install()
        with serving(create_paid_app(), "cost-test-proxy") as proxy:
            paid_call(proxy, key, store, account_id)  # a warm container: key, catalog read
            # and the key's last use stamped (after the answer, once a minute per container)
            deadline = time.monotonic() + 10
            while (stamped := store.get_key(account_id, issued.key_id)) is None or (
                stamped.last_used_at is None
            ):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            recorder.wait_idle()
            recorder.take()
            sent.clear()

            # When one plain, non-streamed paid call is made
            paid_call(proxy, key, store, account_id)
            recorder.wait_idle()
            calls = recorder.take()

    # Then the recorder saw exactly the calls the adapter sent, item for item
    assert [c.operation for c in calls] == [name for name, _ in sent]
    for call, (_, params) in zip(calls, sent, strict=True):
        if call.operation == "TransactWriteItems":
            sent_items = [
                (kind, op["TableName"]) for i in params["TransactItems"] for kind, op in i.items()
            ]
            assert [(w.kind, w.table) for w in call.writes if w.index is None] == sent_items
            for write, item in zip(
                (w for w in call.writes if w.index is None), params["TransactItems"], strict=True
            ):
                if "Put" in item:  # a new item is sized from what was sent
                    assert write.size == item_size(item["Put"]["Item"])
                assert write.wru == write_units(write.size, transactional=True)

    # And that is a reservation (the hold, the wallet), a consistent read of the wallet and a
    # settlement (the hold, the wallet, the ledger entry, the receipt, the hour's usage cell),
    # every item under 1 KB: 2 WRU each, 14 on the tables; the indexes add the hold entering
    # and leaving pending-holds, the entry entering both ledger indexes and the receipt one
    reserve, read, settle = calls
    assert table_writes(reserve) == [("Put", budget, 2), ("Update", budget, 2)]
    assert read.operation == "GetItem" and read.rru == 1.0 and sent[1][1]["ConsistentRead"]
    assert table_writes(settle) == [
        ("Update", budget, 2),
        ("Update", budget, 2),
        ("Put", ledger, 2),
        ("Put", ledger, 2),
        ("Update", ledger, 2),
    ]
    indexes = [(w.kind, w.index) for c in calls for w in c.writes if w.index is not None]
    assert indexes == [
        ("index put", "pending-holds"),
        ("index delete", "pending-holds"),
        ("index put", "ledger-by-time"),
        ("index put", "ledger-by-scope"),
        ("index put", "ledger-by-time"),
    ]
    assert sum(c.table_wru for c in calls) == 14
    assert sum(c.gsi_wru for c in calls) == 5
    assert sum(c.rru for c in calls) == 1.0


def _table_after(text: str, start: str, end: str) -> list[list[str]]:
    section = text.split(start, 1)[1].split(end, 1)[0]
    table = next(b.strip() for b in section.split("\n\n") if b.strip().startswith("| part"))
    return [
        [cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]
    ]


def _dollars(cell: str) -> Decimal:
    return Decimal(re.sub(r"[*$,]", "", cell))


def test_make_cost_writes_a_table_whose_total_is_the_sum_of_its_parts(tmp_path: Path) -> None:
    # Given copies of the pages it writes into
    docs, readme, out = tmp_path / "performance.md", tmp_path / "README.md", tmp_path / "cost.json"
    shutil.copy(ROOT / "docs" / "performance.md", docs)
    shutil.copy(ROOT / "README.md", readme)

    # When a short run is priced
    command = [sys.executable, "-m", "bench.cost", "--requests", "5"]
    command += ["--json", str(out), "--docs", str(docs), "--readme", str(readme)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]

    # Then each duration's total is the sum of its parts, in the docs and in the README
    rows = _table_after(docs.read_text(), DOCS_START, DOCS_END)
    *parts, total = rows
    assert total[0] == "**total**"
    for column in range(1, 5):
        assert sum(_dollars(p[column]) for p in parts) == _dollars(total[column])
        assert all(p[-1] for p in parts)  # every part traced
    *short, short_total = _table_after(readme.read_text(), README_START, README_END)
    assert [p[0] for p in short] == [p[0] for p in parts]
    assert sum(_dollars(p[1]) for p in short) == _dollars(short_total[1])
    assert _dollars(short_total[1]) == _dollars(total[2])  # the 2 s column
    assert out.read_text().count('"measurement"') == 1
