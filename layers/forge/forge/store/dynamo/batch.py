"""BatchGetItem until every key is read: DynamoDB may answer part of a batch and hand the rest
back as UnprocessedKeys (throttling, the 16 MB answer limit), and a key left unread must never
read as an item that does not exist."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from forge.domain.errors import BudgetStoreUnavailable

_ATTEMPTS = 8  # AWS's advice: retry the unprocessed keys with exponential backoff
_BATCH = 100  # BatchGetItem's limit per call


def batch_get(
    db: Any,
    table: str,
    keys: Sequence[dict[str, Any]],
    *,
    consistent: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[dict[str, Any]]:
    """Every item of `keys` that exists (DynamoDB JSON, in no particular order; strongly
    consistent unless told); BudgetStoreUnavailable if some keys stay unprocessed after the
    retries."""
    for start in range(0, len(keys), _BATCH):
        request: dict[str, Any] = {
            table: {"Keys": list(keys[start : start + _BATCH]), "ConsistentRead": consistent}
        }
        for attempt in range(_ATTEMPTS):
            if attempt:
                sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))  # noqa: S311 - jitter only
            got = db.batch_get_item(RequestItems=request)
            yield from got["Responses"].get(table, [])
            request = got.get("UnprocessedKeys") or {}
            if not request:
                break
        else:
            raise BudgetStoreUnavailable("The store left keys unread; nothing was decided")
