"""Accounts, API keys and project caps in the budget table (the KeyStore port)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forge.domain.errors import NotFound
from forge.domain.money import Bucket
from forge.domain.records import ApiKey, ProjectCaps, Wallet, utcnow
from forge.store.dynamo import schema
from forge.store.dynamo.base import DynamoTables, store_errors
from forge.store.dynamo.items import dump, from_item, to_item


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

    def put_api_key(self, key_hash: str, key: ApiKey) -> None:
        """The key item (looked up by hash) and its account-side index (found by key id)."""
        items = [
            {**schema.api_key_key(key_hash), **dump(key)},
            {**schema.key_id_key(key.account_id, key.key_id), "key_hash": key_hash},
        ]
        with store_errors():
            self._db.transact_write_items(
                TransactItems=[self._put_new(self._budget, item) for item in items]
            )

    def update_api_key(self, account_id: str, key_id: str, **changes: Any) -> ApiKey:
        """Change a key's caps, status or scope (operators); found through the account."""
        index = self._get(schema.key_id_key(account_id, key_id))
        if index is None:
            raise NotFound(f"No key '{key_id}' in account '{account_id}'")
        key_hash = str(index["key_hash"])
        current = self.get_api_key(key_hash)
        if current is None:
            raise NotFound(f"No key '{key_id}'")
        updated = ApiKey.model_validate({**current.model_dump(), **changes})
        self._put(schema.api_key_key(key_hash), dump(updated), new=False)
        return updated

    def get_api_key(self, key_hash: str) -> ApiKey | None:
        with store_errors():
            got = self._db.get_item(
                TableName=self._budget, Key=to_item(schema.api_key_key(key_hash))
            )
        return ApiKey.model_validate(from_item(got["Item"])) if "Item" in got else None

    def get_project_caps(self, account_id: str, project_id: str) -> dict[Bucket, ProjectCaps]:
        item = self._get(schema.project_key(account_id, project_id))
        caps = (item or {}).get("caps") or {}
        return {Bucket(b): ProjectCaps.model_validate(c) for b, c in caps.items()}

    def put_project_caps(
        self, account_id: str, project_id: str, caps: Mapping[Bucket, ProjectCaps]
    ) -> None:
        values = {
            "caps": {b.value: c.model_dump(exclude_none=True) for b, c in caps.items()},
            "updated_at": utcnow().isoformat(),
        }
        self._put(schema.project_key(account_id, project_id), values, new=False)
