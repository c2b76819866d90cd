"""The in-memory twin of DynamoDB: the low-level client API the store adapters call, with
DynamoDB's semantics (conditional writes, all-or-nothing transactions and their cancellation
reasons, sparse indexes, pages) and an injectable, seeded fault schedule.

    twin = MemoryDynamoDB(faults=Faults(seed=7, rates={FaultKind.CONFLICT: 0.05}))
    twin.create_table(TableName="budget", KeySchema=[...], AttributeDefinitions=[...])
    store = DynamoStore(twin, "budget", "ledger")
"""

from forge.store.memory.client import MemoryDynamoDB
from forge.store.memory.faults import Call, FaultKind, Faults, Injected, Rule

__all__ = ["Call", "FaultKind", "Faults", "Injected", "MemoryDynamoDB", "Rule"]
