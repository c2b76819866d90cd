"""Operator actions on accounts, keys and wallets (used by the admin CLI and the local stack)."""

from __future__ import annotations

from forge.domain.errors import InvalidRequest, NotFound
from forge.domain.ids import display_prefix, hash_api_key, new_api_key, new_id
from forge.domain.money import Bucket, RouteType, decimal_to_micros
from forge.domain.records import ApiKey, AuditEntry, KeyCaps, KeyKind, LedgerEntry, LedgerKind
from forge.ports import AccountStore


def create_account(store: AccountStore, name: str) -> str:
    account_id = new_id("acct")
    store.create_account(account_id, name)
    return account_id


def issue_key(
    store: AccountStore,
    account_id: str,
    project_id: str = "default",
    route_types: frozenset[RouteType] = frozenset(RouteType),
    caps: dict[Bucket, KeyCaps] | None = None,
    *,
    kind: KeyKind = KeyKind.INFERENCE,
    name: str = "",
) -> tuple[str, ApiKey]:
    """A new key (an operator's: audited as `operator`); the plaintext is returned once and
    never stored."""
    if not store.account_exists(account_id):
        raise NotFound(f"No account '{account_id}'")
    plaintext = new_api_key()
    key = ApiKey(
        key_id=new_id("key"),
        account_id=account_id,
        project_id=project_id,
        prefix=display_prefix(plaintext),
        name=name,
        kind=kind,
        route_types=route_types,
        caps=caps or {},
    )
    audit = AuditEntry(
        audit_id=new_id("aud"),
        account_id=account_id,
        at=key.created_at,
        actor_key_id="operator",
        action="key.create",
        target_type="key",
        target_id=key.key_id,
        after=key.snapshot(),
    )
    store.put_api_key(hash_api_key(plaintext), key, audit)
    return plaintext, key


def create_account_with_owner_key(store: AccountStore, name: str) -> tuple[str, str]:
    """A new account and its first management key: (account id, the key's plaintext, which
    is shown once)."""
    account_id = create_account(store, name)
    plaintext, _ = issue_key(store, account_id, kind=KeyKind.MANAGEMENT, name="owner")
    return account_id, plaintext


def credit_wallet(
    store: AccountStore, account_id: str, bucket: Bucket, amount: str, *, source: str, memo: str
) -> LedgerEntry:
    """Top up a bucket by a positive decimal amount; one ledger entry records it."""
    try:
        micros = decimal_to_micros(amount)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="amount") from exc
    if micros <= 0:
        raise InvalidRequest("A top-up must be positive", param="amount")
    if not store.account_exists(account_id):
        raise NotFound(f"No account '{account_id}'")
    return store.credit(
        account_id,
        bucket,
        micros,
        kind=LedgerKind.TOPUP,
        entry_id=new_id("le"),
        source=source,
        memo=memo,
    )
