"""The DynamoDB store: every store port over one client and two tables (budget, ledger).

One module per port, each a mixin over the shared `DynamoTables` base (base.py: the client,
transactions and their cancellation reasons, errors failing closed, plain item access):

| module         | port / part                                                     |
|----------------|-----------------------------------------------------------------|
| keys.py        | KeyStore: accounts, API keys, project caps                      |
| credits.py     | CreditStore: credit() and the guards that make it once-only     |
| codes.py       | redeem code items (listing, reading, disabling)                 |
| holds.py       | BudgetStore, taking: reserve, rehold, rooms                     |
| settle.py      | BudgetStore, resolving: settle, void, outcomes, expired holds   |
| idempotency.py | IdempotencyStore: Idempotency-Key claims                        |
| ledger.py      | LedgerReader, LedgerScan: receipts, entries, budget snapshot    |

Keys and indexes are in schema.py, item (de)serialisation in items.py, the views' read side in
views.py and totals.py. Mixins rather than composition: the parts call each other's reads
and the plain item access through one `self`, so a test (or a simulation) that overrides one
method of DynamoStore sees every part use it, and callers keep one object to pass around.
"""

from __future__ import annotations

from forge.store.dynamo.codes import DynamoCodes
from forge.store.dynamo.credits import DynamoCredits
from forge.store.dynamo.holds import DynamoHolds
from forge.store.dynamo.idempotency import DynamoIdempotency
from forge.store.dynamo.keys import DynamoKeys
from forge.store.dynamo.ledger import DynamoLedger
from forge.store.dynamo.settle import DynamoSettlement


class DynamoStore(
    DynamoKeys,
    DynamoCredits,
    DynamoCodes,
    DynamoHolds,
    DynamoSettlement,
    DynamoIdempotency,
    DynamoLedger,
):
    """The budget store and ledger writer: `DynamoStore(client, budget_table, ledger_table)`."""
