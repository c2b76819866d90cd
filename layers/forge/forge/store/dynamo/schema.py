"""Every key, index and record type of the two tables, in one place. Changing a line here
changes the stored data layout: don't, without a migration.

Budget table (pk, sk):

| item                  | pk                         | sk                                 |
|-----------------------|----------------------------|------------------------------------|
| account               | `ACCT#{account}`           | `META`                             |
| wallet (bucket)       | `ACCT#{account}`           | `BUCKET#{bucket}`                  |
| wallet shard 1..31    | `ACCT#{account}`           | `BUCKET#{bucket}#{shard:02d}`      |
| API key, by hash      | `KEY#{key_hash}`           | `KEY`                              |
| API key, by id        | `ACCT#{account}`           | `KEYID#{key_id}`                   |
| project               | `ACCT#{account}`           | `PROJECT#{project}`                |
| audit entry           | `AUDIT#{account}`          | `{time}#{audit_id}`                |
| hold                  | `HOLD#{request_id}`        | `HOLD`                             |
| key envelope          | `ENV#KEY#{key_id}`         | `{bucket}#day#{yyyy-mm-dd}`        |
|                       |                            | `{bucket}#month#{yyyy-mm}`         |
|                       |                            | `{bucket}#total`                   |
| project envelope      | `ENV#PROJECT#{account}#{project}` | `{bucket}#day#…`, `…#month#…` |
| run envelope          | `ENV#RUN#{account}#{run_id}` | `{bucket}`                       |
| an envelope's share   | the envelope's pk          | its sk + `#{shard:02d}` (split bucket) |
| idempotency key       | `IDEM#{account}#{key}`     | `IDEM`                             |
| payment event marker  | `PAYMENT#{event_id}`       | `EVENT`                            |
| refund marker         | `REFUND#{account}#{request_id}` | `REFUND`                      |
| redeem code           | `CODE#{code}`              | `CODE`                             |
| code claim            | `CODE#{code}`              | `CLAIM#{account}`                  |
| code listing          | `CODES`                    | `CODE#{code}`                      |
| catalog index, model  | `CATALOG`                  | `INDEX`, `MODEL#{model_id}`        |

Envelope keys are the one exception to "built here": every hold stores the keys of the
envelopes it reserved against (`Hold.envelopes[].pk/sk`), so the domain names them when it
decides which envelopes apply (forge.domain.envelopes.envelopes_for) and the store uses them
as given. The sparse `pending-holds` index (`pending_shard`, `expires_at_epoch`) holds only
pending holds: resolving one removes its `pending_shard`.

Ledger table (pk, sk), and its two sparse indexes (see forge.store.dynamo.views):

| item / index          | partition                    | sort                          |
|-----------------------|------------------------------|-------------------------------|
| ledger entry          | `ACCT#{account}`             | `ENTRY#{series}#{seq:012d}`   |
| receipt               | `ACCT#{account}`             | `RCPT#{request_id}`           |
| run total             | `RUNSUM#{account}#{run_id}`  | `{bucket}` (`-` before a route) |
| usage cell            | `USAGE#{account}`            | `{yyyy-mm-ddThh}#{hash}`      |
| ledger-by-time        | `ENTRIES#{account}`          | `{time}#{series}#{seq:012d}`  |
|                       | `RECEIPTS#{account}`         | `{time}#{request_id}`         |
| ledger-by-scope       | `ENTRIES#{account}#{bucket}` | `{time}#{seq:012d}[#{shard}]` |
|                       | `RUN#{account}#{run_id}`     | `{time}#{request_id}`         |

A ledger series is one shard's chain: `{bucket}` for shard 0 (the only one of an account that
is not split), `{bucket}.{shard:02d}` for the others (records.series_label).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime

from forge.domain.calendar import as_utc
from forge.domain.money import Bucket
from forge.domain.records import EnvelopeRef, LedgerEntry, Receipt, series_label

Key = dict[str, str]  # {"pk": ..., "sk": ...}, plain strings


def _key(pk: str, sk: str) -> Key:
    return {"pk": pk, "sk": sk}


# Budget table ---------------------------------------------------------------------------------
def account_pk(account_id: str) -> str:
    return f"ACCT#{account_id}"


def account_key(account_id: str) -> Key:
    return _key(account_pk(account_id), "META")


def wallet_key(account_id: str, bucket: Bucket, shard: int = 0) -> Key:
    suffix = f"#{shard:02d}" if shard else ""
    return _key(account_pk(account_id), f"{wallets_prefix(bucket)}{suffix}")


def wallets_prefix(bucket: Bucket) -> str:
    """The sort key prefix of a bucket's wallet and all its shards."""
    return f"BUCKET#{bucket.value}"


def is_wallet(pk: str, sk: str) -> bool:
    return pk.startswith("ACCT#") and sk.startswith("BUCKET#")


def api_key_key(key_hash: str) -> Key:
    return _key(f"KEY#{key_hash}", "KEY")


def key_id_key(account_id: str, key_id: str) -> Key:
    """The account-side index of a key: finds its hash from its id."""
    return _key(account_pk(account_id), f"{KEY_ID_PREFIX}{key_id}")


KEY_ID_PREFIX = "KEYID#"
PROJECT_PREFIX = "PROJECT#"


def project_key(account_id: str, project_id: str) -> Key:
    return _key(account_pk(account_id), f"{PROJECT_PREFIX}{project_id}")


def audit_pk(account_id: str) -> str:
    return f"AUDIT#{account_id}"


def audit_key(account_id: str, at: datetime, audit_id: str) -> Key:
    """Newest last in key order: the audit listing reads the partition backwards."""
    return _key(audit_pk(account_id), f"{time_key(at)}#{audit_id}")


def hold_key(request_id: str) -> Key:
    return _key(f"HOLD#{request_id}", "HOLD")


def is_hold(pk: str) -> bool:
    return pk.startswith("HOLD#")


def envelope_key(envelope: EnvelopeRef, shard: int = 0) -> Key:
    """The envelope's own item, or its share on shard k of a split bucket (`{sk}#{k:02d}`)."""
    return _key(envelope.pk, f"{envelope.sk}#{shard:02d}" if shard else envelope.sk)


def is_envelope(pk: str) -> bool:
    return pk.startswith("ENV#")


def idempotency_key(account_id: str, key: str) -> Key:
    return _key(f"IDEM#{account_id}#{key}", "IDEM")


def payment_marker_key(event_id: str) -> Key:
    return _key(f"PAYMENT#{event_id}", "EVENT")


def refund_marker_key(account_id: str, request_id: str) -> Key:
    return _key(f"REFUND#{account_id}#{request_id}", "REFUND")


def code_key(code: str) -> Key:
    return _key(f"CODE#{code}", "CODE")


def code_claim_key(code: str, account_id: str) -> Key:
    return _key(f"CODE#{code}", f"CLAIM#{account_id}")


CODE_CLAIM_PREFIX = "CLAIM#"  # under code_key(code)["pk"]
# One listing item per code under one partition, so operators can list them.
CODE_LISTING_PK = "CODES"
CODE_LISTING_PREFIX = "CODE#"


def code_listing_key(code: str) -> Key:
    return _key(CODE_LISTING_PK, f"{CODE_LISTING_PREFIX}{code}")


def listed_code(sk: str) -> str:
    return sk.removeprefix(CODE_LISTING_PREFIX)


CATALOG_PK = "CATALOG"
CATALOG_INDEX_SK = "INDEX"


def catalog_key(sk: str) -> Key:
    return _key(CATALOG_PK, sk)


def catalog_model_sk(model_id: str) -> str:
    return f"MODEL#{model_id}"


PENDING_HOLDS_INDEX = "pending-holds"
PENDING_SHARDS = 8  # spreads the pending-holds index over partitions


def pending_shard(request_id: str) -> str:
    return str(int(hashlib.sha256(request_id.encode()).hexdigest(), 16) % PENDING_SHARDS)


# Ledger table ---------------------------------------------------------------------------------
ENTRY_PREFIX = "ENTRY#"
RECEIPT_PREFIX = "RCPT#"


def entry_sort_key(bucket: Bucket, seq: int, shard: int = 0) -> str:
    return f"{entries_prefix(bucket, shard)}{seq:012d}"


def entries_prefix(bucket: Bucket, shard: int = 0) -> str:
    """The sort key prefix of one series' entries."""
    return f"{ENTRY_PREFIX}{series_label(bucket, shard)}#"


def entry_key(account_id: str, bucket: Bucket, seq: int, shard: int = 0) -> Key:
    return _key(account_pk(account_id), entry_sort_key(bucket, seq, shard))


def receipt_key(account_id: str, request_id: str) -> Key:
    return _key(account_pk(account_id), f"{RECEIPT_PREFIX}{request_id}")


# The views' indexes: sparse, stamped on entries and receipts as they are written.
BY_TIME_INDEX = "ledger-by-time"
BY_SCOPE_INDEX = "ledger-by-scope"
INDEX_KEYS = {BY_TIME_INDEX: ("time_pk", "time_sk"), BY_SCOPE_INDEX: ("scope_pk", "scope_sk")}


def time_key(moment: datetime) -> str:
    """A sortable UTC instant: fixed width, so text order is time order."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entries_partition(account_id: str, bucket: Bucket | None = None) -> tuple[str, str]:
    """(index, partition) of an account's entries, of one bucket or both."""
    if bucket is None:
        return BY_TIME_INDEX, f"ENTRIES#{account_id}"
    return BY_SCOPE_INDEX, f"ENTRIES#{account_id}#{bucket.value}"


def receipts_partition(account_id: str) -> tuple[str, str]:
    return BY_TIME_INDEX, f"RECEIPTS#{account_id}"


def run_partition(account_id: str, run_id: str) -> tuple[str, str]:
    return BY_SCOPE_INDEX, f"RUN#{account_id}#{run_id}"


def runs_partition(account_id: str) -> tuple[str, str]:
    """(index, partition) of an account's runs: one run total per run and bucket."""
    return BY_TIME_INDEX, f"RUNS#{account_id}"


def run_index_attributes(
    account_id: str, run_id: str, bucket: Bucket | None, first_call_at: datetime
) -> dict[str, str]:
    """What a run total carries so the runs listing finds it, by its first call's time."""
    return {
        "time_pk": runs_partition(account_id)[1],
        "time_sk": f"{time_key(first_call_at)}#{run_id}#{bucket.value if bucket else '-'}",
    }


def entry_index_attributes(entry: LedgerEntry) -> dict[str, str]:
    """What a ledger entry item carries so the views can find it."""
    at = time_key(entry.created_at)
    return {
        "time_pk": entries_partition(entry.account_id)[1],
        "time_sk": f"{at}#{series_label(entry.bucket, entry.shard)}#{entry.seq:012d}",
        "scope_pk": entries_partition(entry.account_id, entry.bucket)[1],
        "scope_sk": f"{at}#{entry.seq:012d}" + (f"#{entry.shard:02d}" if entry.shard else ""),
    }


def receipt_index_attributes(receipt: Receipt) -> dict[str, str]:
    """What a receipt item carries; only receipts of a run join a run."""
    at = time_key(receipt.created_at)
    values = {
        "time_pk": receipts_partition(receipt.account_id)[1],
        "time_sk": f"{at}#{receipt.request_id}",
    }
    if receipt.run_id:
        values["scope_pk"] = run_partition(receipt.account_id, receipt.run_id)[1]
        values["scope_sk"] = f"{at}#{receipt.request_id}"
    return values


# The views' aggregates (forge.store.dynamo.totals).
HOUR_FORMAT = "%Y-%m-%dT%H"  # fixed width: text order is time order


def hour_key(hour: datetime) -> str:
    return hour.astimezone(UTC).strftime(HOUR_FORMAT)


def usage_pk(account_id: str) -> str:
    return f"USAGE#{account_id}"


def usage_cell_key(
    account_id: str, hour: datetime, dimensions: Sequence[str | None], shard: int = 0
) -> Key:
    """A split bucket's calls count in one cell per shard (`…#{shard:02d}`), so the cell is no
    hotter than the shard; the views sum cells of one combination wherever they are."""
    # 128 bits of SHA-256: two combinations of one account and hour never share a cell.
    combination = json.dumps(list(dimensions), separators=(",", ":"))
    digest = hashlib.sha256(combination.encode()).hexdigest()[:32]
    suffix = f"#{shard:02d}" if shard else ""
    return _key(usage_pk(account_id), f"{hour_key(hour)}#{digest}{suffix}")


def run_total_pk(account_id: str, run_id: str) -> str:
    return f"RUNSUM#{account_id}#{run_id}"


def run_total_key(account_id: str, run_id: str, bucket: Bucket | None) -> Key:
    return _key(run_total_pk(account_id, run_id), bucket.value if bucket else "-")


# Record types: a `record_type` attribute says what an item is. The archiver's stream filter
# (template.yaml) takes only inserts of ledger entries.
LEDGER_ENTRY_RECORD = "ledger_entry"
RECEIPT_RECORD = "receipt"
RUN_TOTAL_RECORD = "run_total"
USAGE_CELL_RECORD = "usage_cell"
PAYMENT_EVENT_RECORD = "payment_event"
REFUND_RECORD = "refund"
REDEEM_CODE_RECORD = "redeem_code"
CODE_CLAIM_RECORD = "code_claim"
AUDIT_RECORD = "audit_entry"
