"""The lists the web console needs beside the account views: requests (filtered) and runs.

Both are Queries on `ledger-by-time` inside a partition named after the caller's account,
with the cursor rules of forge.store.dynamo.views. Requests filter their receipts by key,
project, model, status or error code with a FilterExpression: DynamoDB reads the receipts of
the time range in order and returns the matches, so one page reads at most `MAX_EXAMINED`
receipts and may come back short with a cursor to continue. Runs are one item per run and
bucket (the run total, stamped with its first call's time), plus one BatchGetItem of the
page's run budgets from the budget table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from forge.domain.errors import BudgetStoreUnavailable
from forge.domain.money import Bucket
from forge.domain.records import Receipt
from forge.domain.views import Page, TimeRange, UsageLine
from forge.store.dynamo import schema
from forge.store.dynamo import totals as ledger_totals
from forge.store.dynamo.batch import batch_get
from forge.store.dynamo.items import from_item, to_item
from forge.store.dynamo.views import LedgerViews, _ledger_errors, _Query

# A filtered page examines at most this many receipts (each costs its read, matched or not).
MAX_EXAMINED = 1000


@dataclass(frozen=True)
class RequestFilter:
    """Receipt attributes a requests listing keeps (None: any)."""

    key_id: str | None = None
    project_id: str | None = None
    requested_model: str | None = None
    status: str | None = None
    error_code: str | None = None

    def expression(self) -> tuple[str, dict[str, str], dict[str, Any]] | None:
        wanted = {name: value for name, value in vars(self).items() if value is not None}
        if not wanted:
            return None
        names = {f"#f{n}": name for n, name in enumerate(wanted)}
        values = {f":f{n}": value for n, value in enumerate(wanted.values())}
        condition = " AND ".join(f"#f{n} = :f{n}" for n in range(len(wanted)))
        return condition, names, to_item(values)


class _RunsQuery(_Query):
    """The runs listing: its items are run totals, whose own key names the account too."""

    def owns(self, pk: str) -> bool:
        return pk.startswith(schema.run_total_pk(self.account_id, ""))


@dataclass(frozen=True)
class RunSummary:
    """One run's totals in one bucket, and its budget there (None: no run budget)."""

    run_id: str
    line: UsageLine
    first_call_at: str
    budget: int | None


class ConsoleListings(LedgerViews):
    """Listings over the caller's own partitions; run budgets from the budget table."""

    def __init__(self, client: Any, ledger_table: str, budget_table: str) -> None:
        super().__init__(client, ledger_table)
        self._budget = budget_table

    def requests(
        self,
        account_id: str,
        *,
        match: RequestFilter,
        window: TimeRange,
        limit: int,
        cursor: str | None = None,
    ) -> Page[Receipt]:
        """One page of the account's receipts, newest first, that match `match`."""
        index, partition = schema.receipts_partition(account_id)
        query = _Query(account_id, index, partition, schema.RECEIPT_PREFIX, window, True)
        items, next_cursor = self._filtered_page(query, match, limit, cursor)
        return Page([self._receipt(account_id, item) for item in items], next_cursor)

    def runs(
        self, account_id: str, *, window: TimeRange, limit: int, cursor: str | None = None
    ) -> Page[RunSummary]:
        """One page of the account's runs (one line per run and bucket), newest first."""
        index, partition = schema.runs_partition(account_id)
        query = _RunsQuery(account_id, index, partition, "", window, True)
        items, next_cursor = self._page(query, limit, cursor)
        plain = [from_item(item) for item in items]
        if any(item.get("account_id") != account_id for item in plain):
            raise BudgetStoreUnavailable("The ledger returned another account's run")
        budgets = self._run_budgets(account_id, plain)
        summaries = [
            RunSummary(
                run_id=str(item["run_id"]),
                line=ledger_totals.run_line(item),
                first_call_at=str(item["time_sk"]).split("#", 1)[0],
                budget=budgets.get((str(item["run_id"]), str(item["sk"]))),
            )
            for item in plain
        ]
        return Page(summaries, next_cursor)

    def _run_budgets(
        self, account_id: str, runs: Sequence[Mapping[str, Any]]
    ) -> dict[tuple[str, str], int]:
        """The run envelopes' limits (only runs with a budget have one), in one BatchGetItem."""
        wanted = {
            (str(item["run_id"]), str(item["sk"]))
            for item in runs
            if item["sk"] in {b.value for b in Bucket}
        }
        if not wanted:
            return {}
        keys = [
            to_item({"pk": f"ENV#RUN#{account_id}#{run_id}", "sk": bucket})
            for run_id, bucket in sorted(wanted)
        ]
        found: dict[tuple[str, str], int] = {}
        with _ledger_errors():
            for item in batch_get(self._db, self._budget, keys, consistent=False):
                plain = from_item(item)
                run_id = str(plain["pk"]).removeprefix(f"ENV#RUN#{account_id}#")
                if "limit" in plain:
                    found[(run_id, str(plain["sk"]))] = int(plain["limit"])
        return found

    def _filtered_page(
        self, query: _Query, match: RequestFilter, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Up to `limit` matching items; the cursor continues after the last item examined."""
        expression = match.expression()
        if expression is None:
            return self._page(query, limit, cursor)
        condition, names, values = expression
        request = query.request(self._ledger, None)
        request["FilterExpression"] = condition
        request["ExpressionAttributeNames"].update(names)
        request["ExpressionAttributeValues"].update(values)
        if cursor is not None:
            request["ExclusiveStartKey"] = query.start_key(cursor)
        found: list[dict[str, Any]] = []
        examined = 0
        with _ledger_errors():
            while True:
                # Never examine past the first match beyond the page: it starts the next one.
                request["Limit"] = min(MAX_EXAMINED - examined, 4 * (limit + 1 - len(found)))
                page = self._db.query(**request)
                examined += int(page.get("ScannedCount", len(page["Items"])))
                found += page["Items"]
                if len(found) > limit:
                    found = found[:limit]
                    return found, query.cursor_of(found[-1])
                last = page.get("LastEvaluatedKey")
                if last is None:
                    return found, None
                if examined >= MAX_EXAMINED:
                    return found, query.cursor_of(last)
                request["ExclusiveStartKey"] = last
