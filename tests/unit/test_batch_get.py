"""batch_get reads every key or fails closed: an unread key is never an absent item."""

from __future__ import annotations

from typing import Any

import pytest

from forge.domain.errors import BudgetStoreUnavailable
from forge.store.dynamo.batch import batch_get


class StingyTable:
    """Answers at most `per_call` keys of each BatchGetItem and hands the rest back."""

    def __init__(self, items: dict[str, dict[str, Any]], per_call: int) -> None:
        self.items, self.per_call, self.calls = items, per_call, 0

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        ((table, request),) = RequestItems.items()
        keys = request["Keys"]
        read, left = keys[: self.per_call], keys[self.per_call :]
        found = [self.items[k["pk"]["S"]] for k in read if k["pk"]["S"] in self.items]
        return {
            "Responses": {table: found},
            "UnprocessedKeys": {table: {**request, "Keys": left}} if left else {},
        }


def keys(*names: str) -> list[dict[str, Any]]:
    return [{"pk": {"S": n}} for n in names]


def test_unprocessed_keys_are_read_again_until_every_key_is_read() -> None:
    items = {n: {"pk": {"S": n}, "v": {"N": "1"}} for n in ("a", "b", "c")}
    table = StingyTable(items, per_call=1)
    got = list(batch_get(table, "t", keys("a", "b", "c", "missing"), sleep=lambda _: None))
    assert sorted(i["pk"]["S"] for i in got) == ["a", "b", "c"]
    assert table.calls == 4


def test_keys_that_stay_unprocessed_fail_closed() -> None:
    slept: list[float] = []
    table = StingyTable({"a": {"pk": {"S": "a"}}}, per_call=0)
    with pytest.raises(BudgetStoreUnavailable):
        list(batch_get(table, "t", keys("a"), sleep=slept.append))
    assert table.calls == 8 and len(slept) == 7
    assert all(0 <= s <= 0.5 for s in slept)


def test_more_keys_than_one_batch_takes_go_in_batches_of_100() -> None:
    items = {f"k{n}": {"pk": {"S": f"k{n}"}} for n in range(250)}
    table = StingyTable(items, per_call=100)
    got = list(batch_get(table, "t", keys(*items), sleep=lambda _: None))
    assert len(got) == 250 and table.calls == 3
