"""What a key record says by itself: its kind's scope, its status at an instant, whether a
secret still works, and how items stored before kinds existed read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from forge.domain.ids import is_well_formed_key, new_api_key
from forge.domain.records import ApiKey, KeyKind, KeyStatus

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def key(**fields: object) -> ApiKey:
    base = {"key_id": "key_1", "account_id": "acct_1", "project_id": "default", "prefix": "sk"}
    return ApiKey.model_validate({**base, **fields})


def test_an_item_stored_before_kinds_is_an_inference_key_for_every_model() -> None:
    old = ApiKey.model_validate(
        {
            "key_id": "key_1",
            "account_id": "acct_1",
            "project_id": "default",
            "prefix": "sk-forge-abc",
            "status": "active",
            "route_types": ["official"],
            "caps": {"credit": {"daily": 5}},
            "created_at": "2025-01-01T00:00:00Z",
        }
    )
    assert old.kind is KeyKind.INFERENCE and old.calls_models and old.models is None
    assert old.allows_model("anything") and old.works_at(NOW) and old.revision == 0


def test_management_keys_call_models_only_when_allowed() -> None:
    assert not key(kind="management").calls_models
    assert key(kind="management", can_call_models=True).calls_models
    scoped = key(models=["demo-official"])
    assert scoped.allows_model("demo-official") and not scoped.allows_model("demo-routed")


def test_status_and_whether_a_secret_works_at_an_instant() -> None:
    expiring = key(expires_at=NOW + timedelta(seconds=1))
    assert expiring.status_at(NOW) is KeyStatus.ACTIVE and expiring.works_at(NOW)
    later = NOW + timedelta(seconds=1)
    assert expiring.status_at(later) is KeyStatus.EXPIRED and not expiring.works_at(later)
    assert key(status="paused", expires_at=NOW).status_at(later) is KeyStatus.PAUSED
    assert not key(status="revoked").works_at(NOW)
    rotated_out = key(secret_expires_at=NOW + timedelta(hours=24))
    assert rotated_out.works_at(NOW) and not rotated_out.works_at(NOW + timedelta(hours=24))


def test_only_tokens_of_a_real_keys_shape_are_looked_up() -> None:
    assert is_well_formed_key(new_api_key())
    for token in ("", "sk-forge-", "sk-proj-" + "x" * 45, new_api_key()[:-1], new_api_key() + "x"):
        assert not is_well_formed_key(token)


def test_an_audit_snapshot_keeps_settings_not_bookkeeping() -> None:
    snapshot = key(revision=4, last_used_at=NOW, secret_expires_at=NOW).snapshot()
    assert not {"revision", "last_used_at", "secret_expires_at", "account_id"} & set(snapshot)
    assert snapshot["kind"] == "inference" and snapshot["key_id"] == "key_1"
