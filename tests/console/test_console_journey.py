"""The newcomer's journey in a real browser: sign in, create a key, use it with the openai SDK
(a run, a fallback), read the requests, the receipt and the run, rotate and revoke the key,
and download a statement whose closing balance is the overview's."""

from __future__ import annotations

import csv
import io
import time
import uuid
from pathlib import Path

import openai
import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from forge.domain.money import decimal_to_micros
from tests.console.conftest import shot, sign_in
from tests.e2e.conftest import LocalStack

pytestmark = pytest.mark.browser


def calls_work(stack: LocalStack, key: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=stack.base_url, api_key=key, max_retries=0, default_headers=headers
    )


def test_sign_in_create_use_rotate_revoke_and_reconcile(
    page: Page, console_stack: LocalStack, console_url: str, management_key: str
) -> None:
    # 1. Sign in with the management key make dev printed
    sign_in(page, console_url, management_key)
    expect(page.locator("h1")).to_have_text("Overview")
    shot(page, "01-overview-empty")

    # 2. Create an inference key with a run budget, and copy it from the page
    page.click("nav >> text=Keys")
    name = f"agent-{uuid.uuid4().hex[:6]}"
    page.fill("#create-key input[name=name]", name)
    page.fill("#create-key input[name='credit.run_budget']", "0.50")
    page.click("#create-key button[type=submit]")
    expect(page.locator("#new-key")).to_be_visible()
    page.click("#copy-key")
    expect(page.locator("#reveal [role=status]")).to_have_text("Copied.")
    key = page.evaluate("navigator.clipboard.readText()")
    assert key == page.input_value("#new-key") and len(key) > 20
    shot(page, "02-keys-created")
    row = page.locator(f"#keys tr:has-text('{name}')")
    expect(row).to_contain_text("Run budget $0.50")
    key_id = row.get_attribute("data-key-id")
    assert key_id

    # 3. The openai SDK calls with it: three calls in one run, one of them falling back
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    client = calls_work(console_stack, key, **{"X-Run-Id": run_id})
    served = []
    for model in ("demo-official", "demo-fallback", "demo-official"):
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": f"hello {model}"}], max_tokens=32
        )
        served.append(raw.headers["x-request-id"])
    fallback_id = served[1]
    client.close()

    # 4. The requests are in the console, and the receipt shows the fallback attempt
    page.click("nav >> text=Requests")
    page.select_option("#filters select[name=key_id]", key_id)
    page.click("#filters button[type=submit]")
    expect(page.locator("#requests tbody tr")).to_have_count(3)
    assert page.locator("#requests tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.requestId)"
    ) == list(reversed(served))
    shot(page, "03-requests")
    page.click(f"#requests tr[data-request-id='{fallback_id}'] a")
    # the failing route is retried once, then the call falls back to the next route
    attempts = page.locator("#attempts tbody tr")
    expect(attempts).to_have_count(3)
    expect(attempts.nth(0)).to_contain_text("demo:demo-fail-503")
    expect(attempts.nth(0)).to_contain_text("retried")
    expect(attempts.nth(1)).to_contain_text("fell back")
    expect(attempts.nth(2)).to_contain_text("demo:demo-official-1")
    expect(attempts.nth(2)).to_contain_text("ok")
    expect(page.locator("#ledger-link")).to_be_visible()
    shot(page, "04-receipt-fallback")
    page.click("#ledger-link")
    expect(page.locator("#ledger tr.highlight")).to_have_count(1)
    shot(page, "05-ledger")

    # 5. The run, against its budget
    page.click("nav >> text=Runs")
    run_row = page.locator(f"#runs tr[data-run-id='{run_id}']")
    expect(run_row).to_contain_text("of $0.50")
    expect(run_row.locator("td").nth(3)).to_have_text("3")
    shot(page, "06-runs")
    run_row.locator("a").click()
    expect(page.locator("#calls tbody tr")).to_have_count(3)
    shot(page, "07-run")

    # 6. Rotate: the new secret is shown once; the old one still works in its grace period
    page.click("nav >> text=Keys")
    page.click(f"#keys tr[data-key-id='{key_id}'] button[data-action=rotate]")
    expect(page.locator("#confirm input[name=grace_hours]")).to_have_value("24")
    shot(page, "08-keys-rotate-confirm")
    page.click("#confirm-yes")
    expect(page.locator("#reveal")).to_contain_text("The previous secret keeps working until")
    new_key = page.input_value("#new-key")
    assert new_key != key
    for secret in (key, new_key):
        answer = calls_work(console_stack, secret).chat.completions.create(
            model="demo-official", messages=[{"role": "user", "content": "still here?"}]
        )
        assert answer.choices[0].message.content

    # 7. Revoke (after a confirmation): both secrets are refused within 2 s
    page.click(f"#keys tr[data-key-id='{key_id}'] button[data-action=revoke]")
    expect(page.locator("#confirm")).to_contain_text("cannot be undone")
    page.click("#confirm-yes")
    revoked_at = time.monotonic()
    expect(page.locator(f"#keys tr[data-key-id='{key_id}'] .badge")).to_have_text("revoked")
    refused_after = {}
    for secret in (key, new_key):
        client = calls_work(console_stack, secret)
        while True:
            try:
                client.models.list()
            except openai.AuthenticationError:
                refused_after[secret] = time.monotonic() - revoked_at
                break
            assert time.monotonic() - revoked_at < 2.0, "a revoked key still worked after 2 s"
            time.sleep(0.05)
        client.close()
    print(f"revoked key refused after {max(refused_after.values()):.3f} s")
    shot(page, "09-keys-revoked")

    # 8. The statement's closing balance is the overview's, in each bucket
    page.click("nav >> text=Overview")
    expect(page.locator("#refusals")).to_be_visible()
    balances = {
        b: int(
            page.locator(f".bucket[data-bucket={b}] dd[data-field=balance]").get_attribute(
                "data-micros"
            )
            or ""
        )
        for b in ("credit", "rmb")
    }
    shot(page, "10-overview")
    page.click("nav >> text=Statements")
    month = page.locator("tr[data-month]").first.get_attribute("data-month")
    shot(page, "11-statements")
    closing = None
    for _ in range(20):  # the archive follows the ledger's stream within a moment
        try:
            with page.expect_download(timeout=3000) as download:
                page.click(f"tr[data-month='{month}'] button[data-format=csv]")
        except PlaywrightTimeout:  # 503 statement_not_ready, shown on the page
            continue
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        closing = {
            r["bucket"]: decimal_to_micros(r["balance_after"])
            for r in rows
            if r["row_type"].startswith("closing")
        }
        if closing == balances:
            break
        time.sleep(0.25)
    assert closing == balances, (closing, balances)
    expect(page.locator("[role=status]")).to_contain_text("Downloading")
