"""Accounts, keys, project caps, idempotency claims, receipts and the generic item helpers
through the DynamoDB adapter, on both backends."""

from __future__ import annotations

from datetime import timedelta

import pytest

from forge.domain.errors import BudgetStoreUnavailable, GuardFailed, KeyChangeConflict, NotFound
from forge.domain.idempotency import IdempotencyRecord, StoredResponse
from forge.domain.money import Bucket
from forge.domain.records import ApiKey, KeyCaps, KeyKind, KeyStatus, Project, ProjectCaps, utcnow
from tests.contract.conftest import Backend
from tests.contract.money import ACCOUNT, NOW, api_key, hold, open_account, receipt


def test_accounts_and_their_keys(backend: Backend) -> None:
    store = backend.store()
    assert not store.account_exists(ACCOUNT)
    open_account(store, credit=0)
    assert store.account_exists(ACCOUNT)
    with pytest.raises(BudgetStoreUnavailable):  # the account exists: the transaction fails
        store.create_account(ACCOUNT, "again")
    assert store.get_wallet(ACCOUNT, Bucket.RMB).balance == 0

    key = api_key(caps={Bucket.CREDIT: KeyCaps(daily=100)})
    store.put_api_key("hash_1", key)
    assert store.get_api_key("hash_1") == key
    assert store.get_api_key("hash_unknown") is None
    with pytest.raises(BudgetStoreUnavailable):
        store.put_api_key("hash_1", key)

    paused = store.update_api_key(ACCOUNT, key.key_id, status=KeyStatus.PAUSED)
    assert paused.status is KeyStatus.PAUSED and paused.caps == key.caps
    assert store.get_api_key("hash_1") == paused
    with pytest.raises(NotFound):
        store.update_api_key(ACCOUNT, "key_unknown", status=KeyStatus.REVOKED)
    record = store.get_item(f"ACCT#{ACCOUNT}", "KEYID#key_1")
    assert record is not None and record["key_hash"] == "hash_1"
    assert ApiKey.model_validate(record) == paused  # the record by id holds the whole key
    (audit,), _ = store.list_audit(ACCOUNT, limit=10)
    assert (audit.actor_key_id, audit.action, audit.target_id) == (
        "operator",
        "key.update",
        "key_1",
    )
    assert audit.before is not None and audit.before["status"] == "active"
    assert audit.after is not None and audit.after["status"] == "paused"


def test_keys_written_before_records_still_read_list_and_change(backend: Backend) -> None:
    """A key item and a by-id item holding only its hash, as stored before key records."""
    store = backend.store()
    open_account(store, credit=0)
    key = api_key()
    legacy = {k: v for k, v in key.model_dump(mode="json").items() if v is not None}
    del legacy["revision"]
    store.put_item("KEY#hash_1", "KEY", legacy)
    store.put_item(f"ACCT#{ACCOUNT}", "KEYID#key_1", {"key_hash": "hash_1"})
    assert store.get_key(ACCOUNT, "key_1") == key and store.list_keys(ACCOUNT) == [key]
    assert key.kind is KeyKind.INFERENCE and key.models is None and key.calls_models
    store.touch_key(ACCOUNT, "key_1", NOW)
    assert store.get_key(ACCOUNT, "key_1").last_used_at == NOW  # type: ignore[union-attr]
    paused = store.save_key(key.model_copy(update={"status": KeyStatus.PAUSED}))
    assert store.get_api_key("hash_1") == paused and store.get_key(ACCOUNT, "key_1") == paused
    with pytest.raises(KeyChangeConflict):  # saved at the revision it had read: taken
        store.save_key(key.model_copy(update={"name": "late"}))


def test_rotation_keeps_one_copy_per_live_secret(backend: Backend) -> None:
    store = backend.store()
    open_account(store, credit=0)
    key = api_key()
    store.put_api_key("hash_1", key)
    grace = utcnow() + timedelta(hours=1)
    rotated = store.rotate_key(
        key.model_copy(update={"prefix": "sk-forge-new"}), "hash_2", grace, None
    )
    assert rotated.previous_secret_expires_at == grace and rotated.revision == 1
    old, new = store.get_api_key("hash_1"), store.get_api_key("hash_2")
    assert old is not None and old.secret_expires_at == grace and old.key_id == "key_1"
    assert new is not None and new.secret_expires_at is None and new.prefix == "sk-forge-new"
    # a change within the grace reaches both secrets
    paused = store.save_key(rotated.model_copy(update={"status": KeyStatus.PAUSED}))
    assert store.get_api_key("hash_1").status is KeyStatus.PAUSED  # type: ignore[union-attr]
    assert store.get_api_key("hash_2") == paused
    # rotating again without grace: the two older secrets are gone, only the newest works
    store.rotate_key(paused, "hash_3", None, None)
    assert store.get_api_key("hash_1") is None and store.get_api_key("hash_2") is None
    assert store.get_key(ACCOUNT, "key_1").previous_secret_expires_at is None  # type: ignore[union-attr]
    hashes = [i for i in store.scan_budget() if i["pk"].startswith("KEY#")]
    assert [i["pk"] for i in hashes] == ["KEY#hash_3"]


def test_projects_and_their_audit(backend: Backend) -> None:
    store = backend.store()
    open_account(store, credit=0)
    assert [p.project_id for p in store.list_projects(ACCOUNT)] == ["default"]
    project = Project(account_id=ACCOUNT, project_id="alpha", name="A", created_at=NOW)
    store.save_project(project, None, new=True)
    with pytest.raises(GuardFailed):
        store.save_project(project, None, new=True)
    changed = store.save_project(
        project.model_copy(update={"caps": {Bucket.CREDIT: ProjectCaps(daily=5)}})
    )
    assert store.get_project(ACCOUNT, "alpha") == changed and changed.revision == 1
    assert store.get_project_caps(ACCOUNT, "alpha") == {Bucket.CREDIT: ProjectCaps(daily=5)}
    with pytest.raises(GuardFailed):  # read at revision 0, now 1
        store.save_project(project)
    assert store.get_project(ACCOUNT, "nope") is None
    assert [p.project_id for p in store.list_projects(ACCOUNT)] == ["alpha", "default"]


def test_project_caps(backend: Backend) -> None:
    store = backend.store()
    open_account(store)
    assert store.get_project_caps(ACCOUNT, "default") == {}
    caps = {Bucket.CREDIT: ProjectCaps(daily=5), Bucket.RMB: ProjectCaps(monthly=7)}
    store.put_project_caps(ACCOUNT, "default", caps)
    assert store.get_project_caps(ACCOUNT, "default") == caps
    store.put_project_caps(ACCOUNT, "default", {Bucket.RMB: ProjectCaps(daily=1)})
    assert store.get_project_caps(ACCOUNT, "default") == {Bucket.RMB: ProjectCaps(daily=1)}


def test_generic_items(backend: Backend) -> None:
    store = backend.store()
    assert store.put_item("P#1", "A#2", {"n": 2, "tags": ["x"], "nested": {"k": "v"}})
    assert not store.put_item("P#1", "A#2", {"n": 3})  # exists: not written
    assert store.get_item("P#1", "A#2") == {
        "pk": "P#1",
        "sk": "A#2",
        "n": 2,
        "tags": ["x"],
        "nested": {"k": "v"},
    }
    assert store.put_item("P#1", "A#2", {"n": 3}, new=False)  # overwritten
    for sk in ("A#1", "B#1", "A#10", "A#3"):
        store.put_item("P#1", sk, {"n": 0})
    store.put_item("P#2", "A#0", {"n": 0})
    assert [i["sk"] for i in store.query_items("P#1", "A#")] == ["A#1", "A#10", "A#2", "A#3"]
    assert [i["sk"] for i in store.query_items("P#1", "B")] == ["B#1"]
    # DynamoDB refuses an empty key value, even as a begins_with prefix: the default prefix
    # cannot be used (no caller does).
    with pytest.raises(BudgetStoreUnavailable):
        store.query_items("P#1")
    assert store.query_items("P#3", "A") == []
    assert store.get_item("P#1", "A#2") == {"pk": "P#1", "sk": "A#2", "n": 3}
    assert sorted((i["pk"], i["sk"]) for i in store.scan_budget()) == [
        ("P#1", "A#1"),
        ("P#1", "A#10"),
        ("P#1", "A#2"),
        ("P#1", "A#3"),
        ("P#1", "B#1"),
        ("P#2", "A#0"),
    ]


def test_idempotency_claims(backend: Backend) -> None:
    store = backend.store()
    first = IdempotencyRecord(
        state="in_progress", fingerprint="f1", request_id="req_1", lease_until=1_000
    )
    assert store.claim_idempotency(ACCOUNT, "k1", first, now=500) is None
    second = first.model_copy(update={"request_id": "req_2"})
    assert store.claim_idempotency(ACCOUNT, "k1", second, now=600) == first
    store.finish_idempotency(ACCOUNT, "k1", "req_2", None)  # not the holder: nothing happens
    assert store.read_idempotency(ACCOUNT, "k1") == first

    response = StoredResponse.of(
        200, {"x-request-id": "req_1"}, b'{"ok": true}', "application/json"
    )
    store.finish_idempotency(ACCOUNT, "k1", "req_1", response)
    done = store.read_idempotency(ACCOUNT, "k1")
    assert done is not None and done.state == "done" and done.response == response
    assert done.response.body == b'{"ok": true}'
    assert store.claim_idempotency(ACCOUNT, "k1", second, now=5_000) == done  # done: never taken

    assert store.claim_idempotency(ACCOUNT, "k2", first, now=500) is None
    assert store.claim_idempotency(ACCOUNT, "k2", second, now=1_001) is None  # lease over
    assert store.read_idempotency(ACCOUNT, "k2") == second
    store.finish_idempotency(ACCOUNT, "k2", "req_1", response)  # the lease was lost: no-op
    assert store.read_idempotency(ACCOUNT, "k2") == second
    store.finish_idempotency(ACCOUNT, "k2", "req_2", None)  # released for a clean retry
    assert store.read_idempotency(ACCOUNT, "k2") is None
    store.finish_idempotency(ACCOUNT, "k2", "req_2", response)  # a late finish: no resurrection
    assert store.read_idempotency(ACCOUNT, "k2") is None
    assert store.read_idempotency(ACCOUNT, "k3") is None


def test_receipts_are_written_and_counted_once(backend: Backend) -> None:
    store = backend.store()
    open_account(store)
    refused = receipt(hold("req_refused", 0, run_id="run-9"), "failed").model_copy(
        update={"error_code": "budget_exceeded"}
    )
    store.put_receipt(refused)
    store.put_receipt(refused)  # a retry after a lost answer changes nothing
    assert store.get_receipt(ACCOUNT, "req_refused") == refused
    assert store.get_receipt(ACCOUNT, "req_unknown") is None
    assert store.get_receipt("acct_other", "req_refused") is None
    [line] = backend.views().run_totals(ACCOUNT, "run-9")
    assert (line.totals.requests, line.totals.failed, line.totals.charge) == (1, 1, 0)
