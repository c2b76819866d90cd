"""Store adapters: the budget store, ledger and catalog over DynamoDB, and their in-memory twin."""
