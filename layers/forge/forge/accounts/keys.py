"""Keys as their account's owner manages them: create, change, pause, resume, revoke, rotate.

Each change is read, checked, and written with its audit entry in one transaction at the
revision it read (the store refuses it if another change landed in between). The plaintext
exists only in the answer to create and rotate; the store keeps hashes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from forge.domain.errors import (
    InvalidRequest,
    KeyChangeConflict,
    KeyNotFound,
    KeyRevoked,
    ProjectNotFound,
)
from forge.domain.ids import display_prefix, hash_api_key, new_api_key, new_id
from forge.domain.records import ApiKey, AuditEntry, KeyStatus, utcnow
from forge.ports import KeyAdminStore

DEFAULT_GRACE_SECONDS = 86_400
MAX_GRACE_SECONDS = 30 * 86_400
_TRIES = 3  # a change that loses a race is read again and retried this often
# What PATCH may change; status only through pause/resume/revoke.
CHANGEABLE = frozenset(
    {"name", "project_id", "models", "route_types", "can_call_models", "caps", "expires_at"}
)


def audit_entry(
    actor: ApiKey,
    action: str,
    target_type: str,
    target_id: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    now: datetime,
) -> AuditEntry:
    return AuditEntry.model_validate(
        {
            "audit_id": new_id("aud"),
            "account_id": actor.account_id,
            "at": now,
            "actor_key_id": actor.key_id,
            "action": action,
            "target_type": target_type,
            "target_id": target_id,
            "before": before,
            "after": after,
        }
    )


def _require_project(store: KeyAdminStore, account_id: str, project_id: str) -> None:
    if store.get_project(account_id, project_id) is None:
        raise ProjectNotFound(f"No project '{project_id}' in this account", param="project_id")


def _check(key: ApiKey, now: datetime) -> None:
    if key.expires_at is not None and key.expires_at <= now:
        raise InvalidRequest("expires_at: must be in the future", param="expires_at")


def create_key(
    store: KeyAdminStore,
    actor: ApiKey,
    settings: Mapping[str, Any],
    *,
    now: datetime | None = None,
) -> tuple[str, ApiKey]:
    """A new key of the actor's account with `settings` (CHANGEABLE fields, and `kind`); its
    plaintext is returned once."""
    now = now or utcnow()
    plaintext = new_api_key()
    key = ApiKey.model_validate(
        {
            "project_id": "default",
            **settings,
            "key_id": new_id("key"),
            "account_id": actor.account_id,
            "prefix": display_prefix(plaintext),
            "created_at": now,
        }
    )
    _check(key, now)
    _require_project(store, key.account_id, key.project_id)
    audit = audit_entry(actor, "key.create", "key", key.key_id, None, key.snapshot(), now)
    store.put_api_key(hash_api_key(plaintext), key, audit)
    return plaintext, key


def get_key(store: KeyAdminStore, account_id: str, key_id: str) -> ApiKey:
    key = store.get_key(account_id, key_id)
    if key is None:
        raise KeyNotFound(f"No key '{key_id}' in this account", param="key_id")
    return key


def _change(
    store: KeyAdminStore,
    actor: ApiKey,
    key_id: str,
    action: str,
    change: Callable[[ApiKey], ApiKey],
    now: datetime,
) -> ApiKey:
    """Read, change, write with the audit entry; retried when another change won the race."""
    for attempt in range(_TRIES):
        current = get_key(store, actor.account_id, key_id)
        if current.status is KeyStatus.REVOKED:
            raise KeyRevoked(f"Key '{key_id}' is revoked; it cannot change")
        updated = change(current)
        audit = audit_entry(
            actor, action, "key", key_id, current.snapshot(), updated.snapshot(), now
        )
        try:
            return store.save_key(updated, audit)
        except KeyChangeConflict:
            if attempt == _TRIES - 1:
                raise
    raise AssertionError("unreachable")


def update_key(
    store: KeyAdminStore,
    actor: ApiKey,
    key_id: str,
    changes: Mapping[str, Any],
    *,
    now: datetime | None = None,
) -> ApiKey:
    """Change a key's CHANGEABLE settings; `caps` merges per bucket (a field set to None
    clears that cap, a field left out keeps it)."""
    now = now or utcnow()
    if "project_id" in changes:
        _require_project(store, actor.account_id, changes["project_id"])

    def apply(current: ApiKey) -> ApiKey:
        values = {k: v for k, v in changes.items() if k in CHANGEABLE}
        if "caps" in values:
            caps = {b: c.model_dump() for b, c in current.caps.items()}
            for bucket, fields in values["caps"].items():
                caps[bucket] = {**caps.get(bucket, {}), **fields}
            values["caps"] = caps
        updated = ApiKey.model_validate({**current.model_dump(), **values})
        if "expires_at" in changes:
            _check(updated, now)
        return updated

    return _change(store, actor, key_id, "key.update", apply, now)


def set_status(
    store: KeyAdminStore,
    actor: ApiKey,
    key_id: str,
    status: KeyStatus,
    *,
    now: datetime | None = None,
) -> ApiKey:
    """Pause, resume (ACTIVE) or revoke; revoking is final."""
    action = {
        KeyStatus.PAUSED: "key.pause",
        KeyStatus.ACTIVE: "key.resume",
        KeyStatus.REVOKED: "key.revoke",
    }[status]
    now = now or utcnow()
    return _change(
        store, actor, key_id, action, lambda k: k.model_copy(update={"status": status}), now
    )


def rotate_key(
    store: KeyAdminStore,
    actor: ApiKey,
    key_id: str,
    grace_seconds: int = DEFAULT_GRACE_SECONDS,
    *,
    now: datetime | None = None,
) -> tuple[str, ApiKey]:
    """A new secret for the key, returned once; the old one works `grace_seconds` more (0:
    it stops now). A secret still in the grace of an earlier rotate stops now."""
    now = now or utcnow()
    for attempt in range(_TRIES):
        current = get_key(store, actor.account_id, key_id)
        if current.status is KeyStatus.REVOKED:
            raise KeyRevoked(f"Key '{key_id}' is revoked; it cannot be rotated")
        plaintext = new_api_key()
        grace_until = now + timedelta(seconds=grace_seconds) if grace_seconds else None
        rotated = current.model_copy(update={"prefix": display_prefix(plaintext)})
        after = rotated.model_copy(update={"previous_secret_expires_at": grace_until})
        audit = audit_entry(
            actor, "key.rotate", "key", key_id, current.snapshot(), after.snapshot(), now
        )
        try:
            saved = store.rotate_key(rotated, hash_api_key(plaintext), grace_until, audit)
        except KeyChangeConflict:
            if attempt == _TRIES - 1:
                raise
            continue
        return plaintext, saved
    raise AssertionError("unreachable")
