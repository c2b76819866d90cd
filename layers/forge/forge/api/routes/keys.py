"""The account owner's management API: /v1/keys, /v1/projects and /v1/audit, for management
keys only (an inference key gets 403 `insufficient_scope`). Every lookup is keyed by the
caller's own account, so another account's key or project id is 404."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from forge.accounts import keys as key_admin
from forge.accounts import projects as project_admin
from forge.api.deps import ManagementKeyDep, StoreDep
from forge.api.schemas import (
    AuditEntryView,
    AuditPage,
    KeyCreateBody,
    KeyList,
    KeyUpdateBody,
    KeyView,
    KeyWithSecret,
    ProjectCreateBody,
    ProjectList,
    ProjectUpdateBody,
    ProjectView,
    RotateBody,
)
from forge.api.strict import StrictJsonRoute
from forge.domain.errors import ProjectNotFound
from forge.domain.money import Bucket, format_micros
from forge.domain.records import (
    ApiKey,
    AuditEntry,
    KeyCaps,
    KeyKind,
    KeyStatus,
    Project,
    ProjectCaps,
    utcnow,
)
from forge.domain.views import MAX_PAGE_SIZE

router = APIRouter(route_class=StrictJsonRoute)

KeyId = Annotated[str, Path(min_length=1, max_length=64)]
ProjectIdPath = Annotated[str, Path(min_length=1, max_length=64)]


def _caps_views(
    caps: dict[Bucket, KeyCaps] | dict[Bucket, ProjectCaps], empty: KeyCaps | ProjectCaps
) -> tuple[dict[str, dict[str, str | None]], dict[str, dict[str, int | None]]]:
    """Every bucket's caps as decimal strings and as micros (null: no cap)."""
    micros = {b.value: (caps.get(b) or empty).model_dump() for b in Bucket}
    text = {
        bucket: {name: None if v is None else format_micros(v) for name, v in fields.items()}
        for bucket, fields in micros.items()
    }
    return text, micros


def key_view(key: ApiKey) -> dict[str, Any]:
    caps, caps_micros = _caps_views(key.caps, KeyCaps())
    return {
        "id": key.key_id,
        "name": key.name,
        "kind": key.kind,
        "prefix": key.prefix,
        "project_id": key.project_id,
        "status": key.status_at(utcnow()),
        "models": sorted(key.models) if key.models is not None else None,
        "route_types": sorted(key.route_types),
        "can_call_models": key.calls_models,
        "caps": caps,
        "caps_micros": caps_micros,
        "expires_at": key.expires_at,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "previous_secret_expires_at": key.previous_secret_expires_at,
    }


def project_view(project: Project) -> ProjectView:
    caps, caps_micros = _caps_views(project.caps, ProjectCaps())
    return ProjectView(
        id=project.project_id,
        name=project.name,
        caps=caps,
        caps_micros=caps_micros,
        created_at=project.created_at,
    )


def audit_view(entry: AuditEntry) -> AuditEntryView:
    return AuditEntryView(
        id=entry.audit_id,
        at=entry.at,
        actor_key_id=entry.actor_key_id,
        action=entry.action,
        target_type=entry.target_type,
        target_id=entry.target_id,
        before=entry.before,
        after=entry.after,
    )


def _settings(body: KeyCreateBody | KeyUpdateBody) -> dict[str, Any]:
    """The fields the client sent, as the domain takes them (caps per bucket, only the
    fields sent: a null clears a cap)."""
    values = body.model_dump(exclude_unset=True, exclude={"caps"})
    if body.caps is not None:
        values["caps"] = {
            bucket: caps.model_dump(exclude_unset=True) for bucket, caps in body.caps.items()
        }
    for name in ("models", "route_types"):
        if values.get(name) is not None:
            values[name] = frozenset(values[name])
    return values


# Keys ------------------------------------------------------------------------------------------
@router.post("/v1/keys", status_code=201)
async def create_key(
    body: KeyCreateBody, actor: ManagementKeyDep, store: StoreDep
) -> KeyWithSecret:
    """A new key; its secret is in this answer only (`key`)."""
    settings = {"kind": body.kind, **_settings(body)}
    plaintext, key = await asyncio.to_thread(key_admin.create_key, store, actor, settings)
    return KeyWithSecret(**key_view(key), key=plaintext)


@router.get("/v1/keys")
async def list_keys(
    actor: ManagementKeyDep,
    store: StoreDep,
    project_id: Annotated[str | None, Query(max_length=64)] = None,
    status: KeyStatus | None = None,
    kind: KeyKind | None = None,
) -> KeyList:
    keys = await asyncio.to_thread(store.list_keys, actor.account_id)
    views = [key_view(k) for k in keys]
    return KeyList(
        data=[
            KeyView(**v)
            for v in views
            if (project_id is None or v["project_id"] == project_id)
            and (status is None or v["status"] is status)
            and (kind is None or v["kind"] is kind)
        ]
    )


@router.get("/v1/keys/{key_id}")
async def get_key(key_id: KeyId, actor: ManagementKeyDep, store: StoreDep) -> KeyView:
    key = await asyncio.to_thread(key_admin.get_key, store, actor.account_id, key_id)
    return KeyView(**key_view(key))


@router.patch("/v1/keys/{key_id}")
async def update_key(
    key_id: KeyId, body: KeyUpdateBody, actor: ManagementKeyDep, store: StoreDep
) -> KeyView:
    key = await asyncio.to_thread(key_admin.update_key, store, actor, key_id, _settings(body))
    return KeyView(**key_view(key))


async def _set_status(store: StoreDep, actor: ApiKey, key_id: str, status: KeyStatus) -> KeyView:
    key = await asyncio.to_thread(key_admin.set_status, store, actor, key_id, status)
    return KeyView(**key_view(key))


@router.post("/v1/keys/{key_id}/pause")
async def pause_key(key_id: KeyId, actor: ManagementKeyDep, store: StoreDep) -> KeyView:
    return await _set_status(store, actor, key_id, KeyStatus.PAUSED)


@router.post("/v1/keys/{key_id}/resume")
async def resume_key(key_id: KeyId, actor: ManagementKeyDep, store: StoreDep) -> KeyView:
    return await _set_status(store, actor, key_id, KeyStatus.ACTIVE)


@router.post("/v1/keys/{key_id}/revoke")
async def revoke_key(key_id: KeyId, actor: ManagementKeyDep, store: StoreDep) -> KeyView:
    """Final: a revoked key never works again."""
    return await _set_status(store, actor, key_id, KeyStatus.REVOKED)


@router.post("/v1/keys/{key_id}/rotate")
async def rotate_key(
    key_id: KeyId, actor: ManagementKeyDep, store: StoreDep, body: RotateBody | None = None
) -> KeyWithSecret:
    """A new secret (in this answer only); the old one works `grace_seconds` more."""
    grace = (body or RotateBody()).grace_seconds
    plaintext, key = await asyncio.to_thread(key_admin.rotate_key, store, actor, key_id, grace)
    return KeyWithSecret(**key_view(key), key=plaintext)


# Projects --------------------------------------------------------------------------------------
def _project_caps(caps: dict[Bucket, Any] | None) -> dict[Bucket, dict[str, Any]]:
    return {b: c.model_dump(exclude_unset=True) for b, c in (caps or {}).items()}


@router.post("/v1/projects", status_code=201)
async def create_project(
    body: ProjectCreateBody, actor: ManagementKeyDep, store: StoreDep
) -> ProjectView:
    caps = {b: ProjectCaps(**c) for b, c in _project_caps(body.caps).items()}
    project = await asyncio.to_thread(
        project_admin.create_project, store, actor, body.id, body.name, caps
    )
    return project_view(project)


@router.get("/v1/projects")
async def list_projects(actor: ManagementKeyDep, store: StoreDep) -> ProjectList:
    projects = await asyncio.to_thread(store.list_projects, actor.account_id)
    return ProjectList(data=[project_view(p) for p in projects])


@router.get("/v1/projects/{project_id}")
async def get_project(
    project_id: ProjectIdPath, actor: ManagementKeyDep, store: StoreDep
) -> ProjectView:
    project = await asyncio.to_thread(store.get_project, actor.account_id, project_id)
    if project is None:
        raise ProjectNotFound(f"No project '{project_id}' in this account", param="project_id")
    return project_view(project)


@router.patch("/v1/projects/{project_id}")
async def update_project(
    project_id: ProjectIdPath, body: ProjectUpdateBody, actor: ManagementKeyDep, store: StoreDep
) -> ProjectView:
    changes: dict[str, Any] = body.model_dump(exclude_unset=True, exclude={"caps"})
    if body.caps is not None:
        changes["caps"] = _project_caps(body.caps)
    project = await asyncio.to_thread(
        project_admin.update_project, store, actor, project_id, changes
    )
    return project_view(project)


# Audit -----------------------------------------------------------------------------------------
@router.get("/v1/audit")
async def list_audit(
    actor: ManagementKeyDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> AuditPage:
    """Every change to the account's keys and projects, newest first, one page at a time."""
    entries, next_cursor = await asyncio.to_thread(
        lambda: store.list_audit(actor.account_id, limit=limit, cursor=cursor)
    )
    return AuditPage(
        data=[audit_view(e) for e in entries],
        has_more=next_cursor is not None,
        next_cursor=next_cursor,
    )
