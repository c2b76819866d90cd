"""Budget envelopes: every limit that can stop spend, as a counter a condition can test.

Each envelope is one item holding `consumed` (settled + held micro-units). Reserving adds the
hold under `consumed <= :room`, where room = limit - hold is computed here (conditions cannot
do arithmetic), so a limit change applies to the very next request. Windows are UTC and roll
over by themselves: a new day or month is a new item, no reset job. On a split bucket the
store gives each envelope a share per shard, lent room by its own item (docs/shards.md).
"""

from __future__ import annotations

import re
from datetime import datetime

from forge.domain.errors import InvalidRequest
from forge.domain.money import Bucket, decimal_to_micros
from forge.domain.records import ApiKey, EnvelopeRef, ProjectCaps

_RUN_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def parse_run_id(value: str | None) -> str | None:
    if value is None:
        return None
    if not _RUN_ID.match(value):
        raise InvalidRequest(
            "X-Run-Id must be 1-128 characters of letters, digits and . _ : -", param="X-Run-Id"
        )
    return value


def parse_header_amount(value: str | None, header: str) -> int | None:
    """A decimal header (X-Run-Budget, X-Max-Request-Charge) in the paying bucket's currency."""
    if value is None:
        return None
    try:
        micros = decimal_to_micros(value)
    except ValueError as exc:
        raise InvalidRequest(f"{header}: {exc}", param=header) from None
    if micros < 0:
        raise InvalidRequest(f"{header} cannot be negative", param=header)
    return micros


def lower_only(configured: int | None, requested: int | None) -> int | None:
    """A client header may lower a limit the key sets, never raise it."""
    if configured is None:
        return requested
    if requested is None:
        return configured
    return min(configured, requested)


def request_limit(key: ApiKey, bucket: Bucket, header_micros: int | None) -> int | None:
    return lower_only(key.caps_for(bucket).max_request_charge, header_micros)


def envelopes_for(
    key: ApiKey,
    project: ProjectCaps,
    bucket: Bucket,
    now: datetime,
    run_id: str | None,
    run_budget_header: int | None,
) -> list[EnvelopeRef]:
    """Every stored envelope a request paid from `bucket` must fit in, at `now` (UTC)."""
    day, month = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")
    caps = key.caps_for(bucket)
    # An envelope's id (pk, sk) is where its counters live, and every hold stores the ids of
    # its envelopes, so they are named here, once, where the envelopes are chosen; the store
    # uses them as given (forge.store.dynamo.schema lists them with every other key).
    key_pk = f"ENV#KEY#{key.key_id}"
    project_pk = f"ENV#PROJECT#{key.account_id}#{key.project_id}"
    candidates = [
        ("key:daily", key_pk, f"{bucket}#day#{day}", caps.daily),
        ("key:monthly", key_pk, f"{bucket}#month#{month}", caps.monthly),
        ("key:total", key_pk, f"{bucket}#total", caps.total),
        ("project:daily", project_pk, f"{bucket}#day#{day}", project.daily),
        ("project:monthly", project_pk, f"{bucket}#month#{month}", project.monthly),
    ]
    if run_id is not None:
        run_limit = lower_only(caps.run_budget, run_budget_header)
        candidates.append(("run", f"ENV#RUN#{key.account_id}#{run_id}", str(bucket), run_limit))
    return [
        EnvelopeRef(name=name, pk=pk, sk=sk, limit=limit)
        for name, pk, sk, limit in candidates
        if limit is not None
    ]


def affordable_output_tokens(room: int, input_cost: int, output_price_per_1m: int) -> int:
    """The most output tokens whose cost, on top of the input's, fits in `room`.

    ceil(n x p / 1M) <= r  <=>  n x p <= r x 1M, for integer r; so n = floor(r x 1M / p)."""
    left = room - input_cost
    if left < 0:
        return 0
    if output_price_per_1m == 0:
        return 2**31
    return left * 1_000_000 // output_price_per_1m
