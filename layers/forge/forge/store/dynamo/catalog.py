"""The catalog in the budget table: one item per model (the model as JSON) and an index item
with the models' order and a version (keys in forge.store.dynamo.schema). Readers
make two round trips (GetItem, BatchGetItem); writers change a model and the index in one
transaction, conditioned on the version they read, so concurrent operators never lose edits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from forge.domain.catalog import Catalog, CatalogModel
from forge.domain.errors import BudgetStoreUnavailable, ConcurrentUpdate, NotFound
from forge.domain.records import utcnow
from forge.store.dynamo.batch import batch_get
from forge.store.dynamo.items import TypeSerializer, from_item, to_item
from forge.store.dynamo.schema import CATALOG_INDEX_SK, catalog_key, catalog_model_sk

_serializer = TypeSerializer()


def _key(sk: str) -> dict[str, Any]:
    return to_item(catalog_key(sk))


@contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "TransactionCanceledException":
            raise ConcurrentUpdate from exc
        raise BudgetStoreUnavailable("The catalog store is unavailable") from exc
    except BotoCoreError as exc:
        raise BudgetStoreUnavailable("The catalog store is unavailable") from exc


class DynamoCatalogStore:
    def __init__(self, client: Any, budget_table: str) -> None:
        self._db = client
        self._table = budget_table

    def _index(self) -> tuple[list[str], int] | None:
        with _store_errors():
            got = self._db.get_item(
                TableName=self._table, Key=_key(CATALOG_INDEX_SK), ConsistentRead=True
            )
        if "Item" not in got:
            return None
        item = from_item(got["Item"])
        return [str(m) for m in item.get("models", [])], int(item.get("version", 0))

    def read_catalog(self) -> Catalog | None:
        """The stored catalog in the operator's order, or None if it was never seeded."""
        index = self._index()
        if index is None:
            return None
        ids, _ = index
        found: dict[str, CatalogModel] = {}
        with _store_errors():
            for item in batch_get(self._db, self._table, [_key(catalog_model_sk(i)) for i in ids]):
                model = CatalogModel.model_validate_json(item["model"]["S"])
                found[model.id] = model
        return Catalog(models=[found[i] for i in ids if i in found])

    def _write(self, models: list[CatalogModel], removed: list[str], order: list[str]) -> None:
        """Put `models`, delete `removed`, and set the index to `order`, in one transaction
        conditioned on the index version read before (retried on a lost race)."""
        for _ in range(5):
            index = self._index()
            version = index[1] if index else 0
            update: dict[str, Any] = {
                "Put": {
                    "TableName": self._table,
                    "Item": {
                        **_key(CATALOG_INDEX_SK),
                        "models": _serializer.serialize(order),
                        "version": {"N": str(version + 1)},
                        "updated_at": {"S": utcnow().isoformat()},
                    },
                    "ConditionExpression": "attribute_not_exists(pk)"
                    if index is None
                    else "version = :v",
                }
            }
            if index is not None:
                update["Put"]["ExpressionAttributeValues"] = {":v": {"N": str(version)}}
            items = [update]
            items += [
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": {
                            **_key(catalog_model_sk(m.id)),
                            "model": {"S": m.model_dump_json()},
                        },
                    }
                }
                for m in models
            ]
            items += [
                {"Delete": {"TableName": self._table, "Key": _key(catalog_model_sk(i))}}
                for i in removed
            ]
            try:
                with _store_errors():
                    self._db.transact_write_items(TransactItems=items)
                return
            except ConcurrentUpdate:
                continue
        raise BudgetStoreUnavailable("The catalog is being changed by someone else; try again")

    def put_model(self, model: CatalogModel) -> None:
        """Add a model (at the end) or replace it (in place)."""
        index = self._index()
        order = list(index[0]) if index else [m.id for m in _seed_if_missing(self)]
        if model.id not in order:
            order.append(model.id)
        self._write([model], [], order)

    def remove_model(self, model_id: str) -> None:
        index = self._index()
        if index is None or model_id not in index[0]:
            raise NotFound(f"No model '{model_id}' in the catalog")
        self._write([], [model_id], [m for m in index[0] if m != model_id])

    def seed(self, catalog: Catalog, *, replace: bool = False) -> list[str]:
        """Write the catalog's models; with `replace`, drop stored models it does not name.
        Returns the ids written. Transactions hold at most 100 items: large catalogs go in
        several, each keeping the index consistent with the models it names."""
        index = self._index()
        stored = list(index[0]) if index else []
        wanted = [m.id for m in catalog.models]
        order = wanted + ([] if replace else [m for m in stored if m not in wanted])
        removed = [m for m in stored if m not in order]
        models = list(catalog.models)
        for start in range(0, max(len(models), 1), 90):
            batch = models[start : start + 90]
            partial = [m for m in order if m in stored or m in {x.id for x in models[: start + 90]}]
            self._write(batch, removed if start == 0 else [], partial)
        return wanted


def _seed_if_missing(store: DynamoCatalogStore) -> list[CatalogModel]:
    """Editing a never-seeded catalog starts from the shipped file, as readers see it."""
    from forge.domain.catalog import load_catalog

    models = load_catalog().models
    store.seed(Catalog(models=models))
    return models
