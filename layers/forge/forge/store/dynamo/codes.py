"""Redeem codes in the budget table: the code item, its claims under it, and one listing item
per code so operators can list them. A claim itself is a credit guard (credits.py)."""

from __future__ import annotations

from forge.domain.money_in import RedeemCode
from forge.store.dynamo import schema
from forge.store.dynamo.base import DynamoTables


def _code_values(code: RedeemCode) -> dict[str, object]:
    return {**code.item_values(), "record_type": schema.REDEEM_CODE_RECORD}


class DynamoCodes(DynamoTables):
    def add_code(self, code: RedeemCode) -> bool:
        """Store a new code; False if its code is taken. The listing goes first: a crash in
        between leaves a listing without a code (listed as nothing), never a live code that
        operators cannot see."""
        listed = {"created_at": code.created_at.isoformat()}
        return self._put(schema.code_listing_key(code.code), listed) and self._put(
            schema.code_key(code.code), _code_values(code)
        )

    def get_code(self, code: str) -> RedeemCode | None:
        item = self._get(schema.code_key(code))
        return RedeemCode.model_validate(item) if item else None

    def list_codes(self) -> list[RedeemCode]:
        """Every listed code (one read per code)."""
        codes = []
        for listed in self.query_items(schema.CODE_LISTING_PK, schema.CODE_LISTING_PREFIX):
            code = self.get_code(schema.listed_code(str(listed["sk"])))
            if code is not None:
                codes.append(code)
        return codes

    def replace_code(self, code: RedeemCode) -> None:
        """Overwrite a code item (an operator disabling it, or correcting its count)."""
        self._put(schema.code_key(code.code), _code_values(code), new=False)

    def count_code_claims(self, code: str) -> int:
        """How many accounts have claimed the code: its claim items, the source of truth."""
        return len(self.query_items(schema.code_key(code)["pk"], schema.CODE_CLAIM_PREFIX))
