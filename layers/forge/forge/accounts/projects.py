"""Projects as their account's owner manages them: create, list, change name and caps."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from forge.accounts.keys import audit_entry
from forge.domain.errors import GuardFailed, KeyChangeConflict, ProjectExists, ProjectNotFound
from forge.domain.money import Bucket
from forge.domain.records import ApiKey, Project, ProjectCaps, utcnow
from forge.ports import KeyAdminStore


def create_project(
    store: KeyAdminStore,
    actor: ApiKey,
    project_id: str,
    name: str = "",
    caps: Mapping[Bucket, ProjectCaps] | None = None,
    *,
    now: datetime | None = None,
) -> Project:
    now = now or utcnow()
    if store.get_project(actor.account_id, project_id) is not None:
        raise ProjectExists(f"Project '{project_id}' already exists", param="id")
    project = Project(
        account_id=actor.account_id,
        project_id=project_id,
        name=name,
        caps=dict(caps or {}),
        created_at=now,
    )
    audit = audit_entry(
        actor, "project.create", "project", project_id, None, project.snapshot(), now
    )
    try:
        return store.save_project(project, audit, new=True)
    except GuardFailed as exc:
        raise ProjectExists(f"Project '{project_id}' already exists", param="id") from exc


def update_project(
    store: KeyAdminStore,
    actor: ApiKey,
    project_id: str,
    changes: Mapping[str, Any],
    *,
    now: datetime | None = None,
) -> Project:
    """Change a project's name or caps; `caps` merges per bucket as a key's do."""
    now = now or utcnow()
    current = store.get_project(actor.account_id, project_id)
    if current is None:
        raise ProjectNotFound(f"No project '{project_id}' in this account", param="project_id")
    values: dict[str, Any] = {}
    if "name" in changes:
        values["name"] = changes["name"]
    if "caps" in changes:
        caps = {b: c.model_dump() for b, c in current.caps.items()}
        for bucket, fields in changes["caps"].items():
            caps[bucket] = {**caps.get(bucket, {}), **fields}
        values["caps"] = caps
    updated = Project.model_validate({**current.model_dump(), **values})
    audit = audit_entry(
        actor, "project.update", "project", project_id, current.snapshot(), updated.snapshot(), now
    )
    try:
        return store.save_project(updated, audit)
    except GuardFailed as exc:
        raise KeyChangeConflict(
            "The project changed while this change was made; read it again and retry"
        ) from exc
