"""What both fuzz suites share: the app in process over the emulated store, a funded caller,
a deterministic upstream, and the check that nothing refused was charged."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import timedelta

import httpx

from forge.accounts import create_account, credit_wallet, issue_key
from forge.adapters.dynamo import DynamoStore
from forge.adapters.openai_compat import OpenAICompatProvider
from forge.api import create_app
from forge.api.deps import get_gateway
from forge.catalog import load_catalog
from forge.gateway import Gateway
from forge.money import Bucket
from forge.reconcile import reconcile
from forge.records import LedgerKind, utcnow
from forge.stores import get_store

PAID_PATHS = ("/v1/chat/completions", "/v1/embeddings", "/v1/messages")


def demo_upstream(request: httpx.Request) -> httpx.Response:
    """An OpenAI-compatible upstream: a short answer (or stream, or embedding) with usage."""
    body = json.loads(request.content)
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    if request.url.path.endswith("/embeddings"):
        data = [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]
        return httpx.Response(200, json={"object": "list", "data": data, "usage": usage})
    if not body.get("stream"):
        choice = {"index": 0, "message": {"role": "assistant", "content": "ok"}}
        return httpx.Response(
            200, json={"id": "c", "object": "chat.completion", "choices": [choice], "usage": usage}
        )
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": usage},
    ]
    sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return httpx.Response(200, content=sse.encode(), headers={"content-type": "text/event-stream"})


@dataclass
class FuzzTarget:
    store: DynamoStore
    account_id: str
    api_key: str
    app: object
    served: int = 0  # paid calls answered 2xx
    statuses: dict[int, int] = field(default_factory=dict)

    def record(self, path: str, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if path in PAID_PATHS and 200 <= status < 300:
            self.served += 1

    def assert_nothing_refused_was_charged(self) -> None:
        """Every charge belongs to a served call; no hold is left; the books balance."""
        charges = [
            e
            for bucket in Bucket
            for e in self.store.list_entries(self.account_id, bucket)
            if e.kind is LedgerKind.CHARGE
        ]
        assert len(charges) <= self.served, (len(charges), self.served, self.statuses)
        for entry in charges:
            receipt = self.store.get_receipt(self.account_id, entry.request_id or "")
            assert receipt is not None and receipt.status in ("succeeded", "partial")
        assert self.store.expired_holds(utcnow() + timedelta(days=1)) == []
        report = reconcile(self.store, utcnow())
        assert report.ok, report


def fuzz_target() -> FuzzTarget:
    """A funded account and key, and the app wired to a deterministic upstream."""
    store = get_store()
    account_id = create_account(store, "fuzz")
    for bucket in Bucket:
        credit_wallet(store, account_id, bucket, "1000", source="test", memo="fuzz")
    plaintext, _ = issue_key(store, account_id)
    demo = OpenAICompatProvider(
        "http://up.test/v1", "k", transport=httpx.MockTransport(demo_upstream)
    )
    app = create_app()
    gateway = Gateway(store, {"demo": demo}, load_catalog(), hold_ttl_seconds=960)
    app.dependency_overrides[get_gateway] = lambda: gateway
    return FuzzTarget(store, account_id, plaintext, app)


def send(target: FuzzTarget, method: str, path: str, **kwargs: object) -> httpx.Response:
    """One request to the app in process (httpx's ASGI transport, as the integration tests)."""

    async def run() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=target.app),  # type: ignore[arg-type]
            base_url="http://gw",
        ) as client:
            return await client.request(method, path, **kwargs)  # type: ignore[arg-type]

    return asyncio.run(run())
