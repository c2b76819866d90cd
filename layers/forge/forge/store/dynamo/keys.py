"""Accounts, API keys, projects and the audit trail in the budget table (the KeyStore port).

A key lives in up to three items: its record by id (`KEYID#`, what the owner lists and
changes; it names the current secret's hash and, after a rotate, the previous one), and one
copy per live secret by hash (`KEY#{hash}`, the one read that authenticates a call). Every
change writes the record, each live copy and its audit entry in one transaction, guarded by
the record's `revision`, so a copy never disagrees with the record for longer than that write.
Records written before keys had kinds hold only `key_hash`: they are read through the copy.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from forge.domain.errors import (
    BudgetStoreUnavailable,
    GuardFailed,
    InvalidCursor,
    KeyChangeConflict,
    NotFound,
)
from forge.domain.ids import new_id
from forge.domain.money import Bucket
from forge.domain.records import ApiKey, AuditEntry, Project, ProjectCaps, Wallet, utcnow
from forge.store.dynamo import schema
from forge.store.dynamo.base import DynamoTables, is_condition_failure, store_errors
from forge.store.dynamo.items import dump, from_item, to_item

DEFAULT_PROJECT = "default"
_MAX_CURSOR_CHARS = 512
_AUDIT_SK = re.compile(r"\d{4}-\d{2}-\d{2}T[0-9:.]+Z#aud_[0-9a-f]+")
# A change names the revision it read: legacy records carry none, and read as revision 0.
_SAME_REVISION = "attribute_exists(pk) AND (attribute_not_exists(revision) OR revision = :rev)"


class DynamoKeys(DynamoTables):
    def create_account(self, account_id: str, name: str) -> None:
        """The account and its empty wallets, one per bucket, together."""
        account = {"name": name, "created_at": utcnow().isoformat()}
        items = [self._put_new(self._budget, {**schema.account_key(account_id), **account})]
        for bucket in Bucket:
            wallet = dump(Wallet(account_id=account_id, bucket=bucket))
            items.append(
                self._put_new(self._budget, {**schema.wallet_key(account_id, bucket), **wallet})
            )
        with store_errors():
            self._db.transact_write_items(TransactItems=items)

    def account_exists(self, account_id: str) -> bool:
        with store_errors():
            got = self._db.get_item(
                TableName=self._budget, Key=to_item(schema.account_key(account_id))
            )
        return "Item" in got

    # Keys --------------------------------------------------------------------------------------
    def put_api_key(self, key_hash: str, key: ApiKey, audit: AuditEntry | None = None) -> None:
        """A new key: its record, its secret's copy (looked up by hash) and its audit entry."""
        items = [
            self._put_new(self._budget, self._record(key, key_hash, None)),
            self._put_new(self._budget, {**schema.api_key_key(key_hash), **dump(key)}),
            *self._audit_items(audit),
        ]
        with store_errors():  # an id or hash taken already fails the transaction
            self._db.transact_write_items(TransactItems=items)

    def get_api_key(self, key_hash: str) -> ApiKey | None:
        """The key a secret belongs to (consistent: a change is seen by the next read)."""
        with store_errors():
            got = self._db.get_item(
                TableName=self._budget,
                Key=to_item(schema.api_key_key(key_hash)),
                ConsistentRead=True,
            )
        return ApiKey.model_validate(from_item(got["Item"])) if "Item" in got else None

    def get_key(self, account_id: str, key_id: str) -> ApiKey | None:
        """A key of this account by id; None for any other account's id."""
        record = self._get(schema.key_id_key(account_id, key_id))
        return self._key_of(record) if record is not None else None

    def list_keys(self, account_id: str) -> list[ApiKey]:
        """Every key of the account, oldest first."""
        records = self.query_items(schema.account_pk(account_id), schema.KEY_ID_PREFIX)
        keys = [k for k in map(self._key_of, records) if k is not None]
        return sorted(keys, key=lambda k: (k.created_at, k.key_id))

    def save_key(self, key: ApiKey, audit: AuditEntry | None = None) -> ApiKey:
        """Write a changed key (`key.revision` is the revision it was read at) to its record
        and every live secret's copy; a rotated-out secret past its grace is deleted. Raises
        KeyChangeConflict if the record changed since, NotFound if it is gone."""
        hashes = self._hashes(key)
        saved = key.model_copy(update={"revision": key.revision + 1})
        previous, until = hashes.get("previous_hash"), saved.previous_secret_expires_at
        keep_previous = previous is not None and until is not None and until > self._clock()
        if not keep_previous:
            saved = saved.model_copy(update={"previous_secret_expires_at": None})
        items = [
            self._guarded(
                self._record(saved, hashes["key_hash"], previous if keep_previous else None),
                key.revision,
            ),
            self._put_item(schema.api_key_key(hashes["key_hash"]), dump(saved)),
        ]
        if previous is not None:
            items.append(self._copy_or_delete(previous, saved, until if keep_previous else None))
        self._write_change(items, audit)
        return saved

    def rotate_key(
        self, key: ApiKey, new_hash: str, grace_until: datetime | None, audit: AuditEntry | None
    ) -> ApiKey:
        """Give the key a new secret (`new_hash`; `key` carries its new prefix). The old
        secret keeps working until `grace_until` (None: stops now); a secret rotated out
        earlier stops now."""
        hashes = self._hashes(key)
        old_hash, older = hashes["key_hash"], hashes.get("previous_hash")
        saved = key.model_copy(
            update={"revision": key.revision + 1, "previous_secret_expires_at": grace_until}
        )
        items = [
            self._guarded(
                self._record(saved, new_hash, old_hash if grace_until else None), key.revision
            ),
            self._put_new(self._budget, {**schema.api_key_key(new_hash), **dump(saved)}),
            self._copy_or_delete(old_hash, saved, grace_until),
        ]
        if older is not None and older != old_hash:
            items.append(self._copy_or_delete(older, saved, None))
        self._write_change(items, audit)
        return saved

    def touch_key(self, account_id: str, key_id: str, at: datetime) -> None:
        """Record when the key was last used (its record only; no revision: not a change)."""
        try:
            self._db.update_item(
                TableName=self._budget,
                Key=to_item(schema.key_id_key(account_id, key_id)),
                UpdateExpression="SET last_used_at = :at",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=to_item({":at": at.isoformat()}),
            )
        except ClientError as exc:
            if not is_condition_failure(exc):  # a gone record has nothing to stamp
                raise BudgetStoreUnavailable("The budget store is unavailable") from exc
        except BotoCoreError as exc:
            raise BudgetStoreUnavailable("The budget store is unavailable") from exc

    def update_api_key(self, account_id: str, key_id: str, **changes: Any) -> ApiKey:
        """Change a key's caps, status or scope (operators, audited as `operator`)."""
        current = self.get_key(account_id, key_id)
        if current is None:
            raise NotFound(f"No key '{key_id}' in account '{account_id}'")
        if not changes:
            return current
        updated = ApiKey.model_validate({**current.model_dump(), **changes})
        audit = AuditEntry(
            audit_id=new_id("aud"),
            account_id=account_id,
            at=utcnow(),
            actor_key_id="operator",
            action="key.update",
            target_type="key",
            target_id=key_id,
            before=current.snapshot(),
            after=updated.snapshot(),
        )
        return self.save_key(updated, audit)

    # Projects ----------------------------------------------------------------------------------
    def get_project_caps(self, account_id: str, project_id: str) -> dict[Bucket, ProjectCaps]:
        item = self._get(schema.project_key(account_id, project_id))
        caps = (item or {}).get("caps") or {}
        return {Bucket(b): ProjectCaps.model_validate(c) for b, c in caps.items()}

    def put_project_caps(
        self, account_id: str, project_id: str, caps: Mapping[Bucket, ProjectCaps]
    ) -> None:
        """Set a project's caps (operators); its other fields stay as they are."""
        values = {
            "caps": {b.value: c.model_dump(exclude_none=True) for b, c in caps.items()},
            "updated_at": utcnow().isoformat(),
        }
        with store_errors():
            self._db.update_item(
                TableName=self._budget,
                Key=to_item(schema.project_key(account_id, project_id)),
                UpdateExpression="SET caps = :caps, updated_at = :updated_at",
                ExpressionAttributeValues=to_item({f":{k}": v for k, v in values.items()}),
            )

    def get_project(self, account_id: str, project_id: str) -> Project | None:
        """A project of this account; `default` exists even before anything was written."""
        item = self._get(schema.project_key(account_id, project_id))
        if item is None:
            if project_id != DEFAULT_PROJECT:
                return None
            item = {}
        return _project(account_id, project_id, item)

    def list_projects(self, account_id: str) -> list[Project]:
        items = self.query_items(schema.account_pk(account_id), schema.PROJECT_PREFIX)
        projects = {
            p.project_id: p
            for p in (
                _project(account_id, i["sk"].removeprefix(schema.PROJECT_PREFIX), i) for i in items
            )
        }
        projects.setdefault(DEFAULT_PROJECT, _project(account_id, DEFAULT_PROJECT, {}))
        return sorted(projects.values(), key=lambda p: p.project_id)

    def save_project(
        self, project: Project, audit: AuditEntry | None = None, *, new: bool = False
    ) -> Project:
        """Write a project (`new`: must not exist yet; else at the revision it was read at).
        GuardFailed(0) if it exists (new) or changed since."""
        saved = project.model_copy(update={"revision": project.revision + (0 if new else 1)})
        item = {
            **schema.project_key(project.account_id, project.project_id),
            **dump(saved),
            "caps": {b.value: c.model_dump(exclude_none=True) for b, c in saved.caps.items()},
            "updated_at": utcnow().isoformat(),
        }
        put = self._put_new(self._budget, item) if new else self._guarded(item, project.revision)
        if not new and project.created_at is None:  # the implicit default, written the first time
            put["Put"]["ConditionExpression"] = "attribute_not_exists(revision) OR revision = :rev"
        self._transact([put, *self._audit_items(audit)], guards=1)
        return saved

    # Audit -------------------------------------------------------------------------------------
    def list_audit(
        self, account_id: str, *, limit: int, cursor: str | None = None
    ) -> tuple[list[AuditEntry], str | None]:
        """The account's audit entries, newest first, one page; and the next page's cursor."""
        kwargs: dict[str, Any] = {
            "TableName": self._budget,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": to_item({":pk": schema.audit_pk(account_id)}),
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if cursor is not None:
            kwargs["ExclusiveStartKey"] = to_item(
                {"pk": schema.audit_pk(account_id), "sk": _decode_cursor(cursor)}
            )
        with store_errors():
            page = self._db.query(**kwargs)
        entries = [AuditEntry.model_validate(from_item(i)) for i in page["Items"]]
        last = page.get("LastEvaluatedKey")
        return entries, _encode_cursor(from_item(last)["sk"]) if last else None

    # Items -------------------------------------------------------------------------------------
    def _record(self, key: ApiKey, key_hash: str, previous_hash: str | None) -> dict[str, Any]:
        record = {**schema.key_id_key(key.account_id, key.key_id), **dump(key)}
        record.pop("secret_expires_at", None)
        return {**record, "key_hash": key_hash, "previous_hash": previous_hash}

    def _key_of(self, record: Mapping[str, Any]) -> ApiKey | None:
        if "key_id" in record:
            return ApiKey.model_validate(record)
        legacy = self.get_api_key(str(record["key_hash"]))  # written before key records
        if legacy is None:
            return None
        return ApiKey.model_validate(
            {**legacy.model_dump(), "last_used_at": record.get("last_used_at")}
        )

    def _hashes(self, key: ApiKey) -> dict[str, str]:
        record = self._get(schema.key_id_key(key.account_id, key.key_id))
        if record is None:
            raise NotFound(f"No key '{key.key_id}'")
        return {k: str(record[k]) for k in ("key_hash", "previous_hash") if record.get(k)}

    def _guarded(self, item: Mapping[str, Any], revision: int) -> dict[str, Any]:
        put = self._put_item_values(item)
        put["Put"]["ConditionExpression"] = _SAME_REVISION
        put["Put"]["ExpressionAttributeValues"] = to_item({":rev": revision})
        return put

    def _put_item(self, key: schema.Key, values: Mapping[str, Any]) -> dict[str, Any]:
        return self._put_item_values({**key, **values})

    def _put_item_values(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {"Put": {"TableName": self._budget, "Item": to_item(item)}}

    def _copy_or_delete(self, key_hash: str, key: ApiKey, until: datetime | None) -> dict[str, Any]:
        """A rotated-out secret's copy: kept (stopping at `until`) or deleted (None)."""
        if until is None:
            return {
                "Delete": {"TableName": self._budget, "Key": to_item(schema.api_key_key(key_hash))}
            }
        copy = key.model_copy(
            update={"secret_expires_at": until, "previous_secret_expires_at": None}
        )
        return self._put_item(schema.api_key_key(key_hash), dump(copy))

    def _audit_items(self, audit: AuditEntry | None) -> list[dict[str, Any]]:
        if audit is None:
            return []
        item = {
            **schema.audit_key(audit.account_id, audit.at, audit.audit_id),
            **dump(audit),
            "record_type": schema.AUDIT_RECORD,
        }
        return [self._put_new(self._budget, item)]

    def _write_change(self, items: list[dict[str, Any]], audit: AuditEntry | None) -> None:
        try:
            self._transact([*items, *self._audit_items(audit)], guards=1)
        except GuardFailed as exc:
            raise KeyChangeConflict(
                "The key changed while this change was made; read it again and retry"
            ) from exc


def _project(account_id: str, project_id: str, item: Mapping[str, Any]) -> Project:
    caps = item.get("caps") or {}
    return Project(
        account_id=account_id,
        project_id=project_id,
        name=str(item.get("name", "")),
        caps={Bucket(b): ProjectCaps.model_validate(c) for b, c in caps.items()},
        created_at=item.get("created_at"),
        revision=int(item.get("revision", 0)),
    )


def _encode_cursor(sk: str) -> str:
    return base64.urlsafe_b64encode(sk.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        if len(cursor) > _MAX_CURSOR_CHARS:
            raise ValueError("too long")
        padded = cursor + "=" * (-len(cursor) % 4)
        sk = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
        if not _AUDIT_SK.fullmatch(sk):
            raise ValueError("not an audit position")
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursor("The cursor is not valid for this listing", param="cursor") from exc
    return sk
