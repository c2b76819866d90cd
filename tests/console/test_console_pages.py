"""The console's other promises, each in a real browser: the playground streams and shows the
receipt; a refusal names its envelope; the language switch; an inference key cannot sign in;
another account's receipt is "not found"; and every page at phone width."""

from __future__ import annotations

import itertools

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from forge.domain.calendar import Month
from forge.domain.money import Bucket, decimal_to_micros
from forge.domain.records import KeyKind
from forge.ledger.statements import build_statement
from forge.ledger.statements.render_html import render_html
from forge.money_in.accounts import create_account, credit_wallet, issue_key
from tests.console.conftest import PHONE, shot, sign_in
from tests.e2e.conftest import LocalStack
from tests.e2e.helpers import expected_reply_and_charge

pytestmark = pytest.mark.browser


def test_the_playground_streams_then_shows_the_receipt(
    page: Page, console_stack: LocalStack, console_url: str, management_key: str
) -> None:
    sign_in(page, console_url, management_key)
    page.click("nav >> text=Playground")
    # The demo account's inference key (make dev's OPENAI_API_KEY) pays for the call
    page.fill("#playground input[name=key]", console_stack.api_key)
    page.dispatch_event("#playground input[name=key]", "change")
    expect(page.locator("#model option[value=demo-official]")).to_have_count(1)
    page.select_option("#model", "demo-official")
    prompt = "Tell me about budgets"
    page.fill("#prompt", prompt)
    # Count the pieces the answer is built from: one per content chunk of the stream
    page.evaluate(
        """() => { window.steps = 0;
             new MutationObserver((records) => { window.steps += records.length; })
               .observe(document.getElementById('answer'), {childList: true}); }"""
    )
    with page.expect_response("**/v1/chat/completions") as answered:
        page.click("#playground button[type=submit]")
    response = answered.value
    assert response.headers["content-type"].startswith("text/event-stream")
    expect(page.locator("#outcome")).to_be_visible()

    text, charge = expected_reply_and_charge(
        "demo-official", [{"role": "user", "content": prompt}], 256
    )
    assert page.inner_text("#answer") == text
    assert page.evaluate("window.steps") == len(text.split(" ")) > 1
    receipt = httpx.get(
        f"{console_stack.base_url}/requests/{response.headers['x-request-id']}",
        headers={"Authorization": f"Bearer {console_stack.api_key}"},
    ).json()
    assert receipt["charge"] == charge > 0
    expect(page.locator("#play-charge")).to_have_attribute("data-micros", str(charge))
    expect(page.locator("#outcome")).to_contain_text("Credit")
    shot(page, "12-playground")


def test_a_refusal_shows_its_envelope_and_what_was_left(
    page: Page, console_stack: LocalStack, console_url: str, management_key: str
) -> None:
    sign_in(page, console_url, management_key)
    page.click("nav >> text=Playground")
    page.fill("#playground input[name=key]", console_stack.api_key)
    page.dispatch_event("#playground input[name=key]", "change")
    expect(page.locator("#model option[value=demo-official]")).to_have_count(1)
    page.fill("#playground input[name=max_charge]", "0.000001")
    page.fill("#prompt", "This will not fit")
    page.click("#playground button[type=submit]")

    refusal = page.locator("#refusal")
    expect(refusal).to_contain_text("Stopped by the request envelope")
    expect(refusal).to_contain_text("$0.000001 left")
    expect(page.locator("#answer")).to_have_text("")
    shot(page, "13-playground-refused")

    # The overview lists it among the recent refusals, with its envelope
    page.click("nav >> text=Overview")
    expect(page.locator("#refusals tbody tr").first).to_contain_text("request")
    shot(page, "14-overview-refusals")
    page.locator("#refusals tbody tr").first.locator("a").click()
    expect(page.locator("dd.refusal")).to_contain_text("Stopped by the request envelope")
    shot(page, "15-receipt-refused")


def test_the_language_switch_translates_and_is_remembered(
    page: Page, console_url: str, management_key: str
) -> None:
    sign_in(page, console_url, management_key)
    page.click("#lang")
    expect(page.locator("nav a[href='#/overview']")).to_have_text("概览")
    expect(page.locator("h1")).to_have_text("概览")
    expect(page.locator(".bucket[data-bucket=rmb] h2")).to_contain_text("人民币钱包")
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    # amounts stay in each bucket's currency: yuan for the RMB wallet
    expect(page.locator(".bucket[data-bucket=rmb] dd[data-field=balance]")).to_contain_text("¥")
    shot(page, "16-overview-zh")
    page.reload()
    expect(page.locator("nav a[href='#/keys']")).to_have_text("密钥")
    page.click("nav >> text=密钥")
    expect(page.locator("#create-key h2")).to_have_text("创建密钥")
    shot(page, "17-keys-zh")
    page.click("#lang")
    expect(page.locator("nav a[href='#/keys']")).to_have_text("Keys")


def test_an_inference_key_cannot_sign_in(
    page: Page, console_stack: LocalStack, console_url: str
) -> None:
    page.goto(console_url)
    page.fill("#key", console_stack.api_key)
    page.click("button[type=submit]")
    expect(page.locator("[role=alert]")).to_contain_text("This is an inference key")
    expect(page.locator("nav")).to_have_count(0)
    assert page.evaluate("sessionStorage.length") == 0
    shot(page, "18-sign-in-refused")


def test_sign_out_forgets_the_key(page: Page, console_url: str, management_key: str) -> None:
    sign_in(page, console_url, management_key)
    assert page.evaluate("sessionStorage.getItem('forge.key')") == management_key
    page.click("#sign-out")
    expect(page.locator("#key")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_another_accounts_receipt_is_not_found(
    page: Page, console_stack: LocalStack, console_url: str, management_key: str
) -> None:
    # Given a request of another account
    store = console_stack.store()
    stranger = create_account(store, "stranger")
    credit_wallet(store, stranger, Bucket.CREDIT, "1.00", source="test", memo="e2e")
    plaintext, _ = issue_key(store, stranger)
    theirs = httpx.post(
        f"{console_stack.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {plaintext}"},
        json={"model": "demo-official", "messages": [{"role": "user", "content": "mine"}]},
    )
    assert theirs.status_code == 200
    # When the demo account's owner opens its id in the console
    sign_in(page, console_url, management_key)
    page.goto(f"{console_url}#/requests/{theirs.headers['x-request-id']}")
    expect(page.locator("h1")).to_have_text("Not found")
    expect(page.locator("main")).not_to_contain_text(stranger)
    shot(page, "19-receipt-not-found")


def test_a_split_accounts_ledger_shows_each_entrys_shard_and_its_statement_the_buckets_balance(
    page: Page, console_stack: LocalStack, console_url: str
) -> None:
    """An account whose credit bucket is split into 3 (docs/shards.md): the ledger page names
    each entry's place in its shard's series, and its statement's balance column is the
    bucket's running balance, whichever shard a row is on."""
    store = console_stack.store()
    account = create_account(store, "split")
    credit_wallet(store, account, Bucket.CREDIT, "1.00", source="test", memo="e2e")
    store.shard_wallet(account, Bucket.CREDIT, 3)
    plaintext, _ = issue_key(store, account)
    manager, _ = issue_key(store, account, kind=KeyKind.MANAGEMENT)
    for n in range(6):
        called = httpx.post(
            f"{console_stack.base_url}/chat/completions",
            headers={"Authorization": f"Bearer {plaintext}"},
            json={"model": "demo-official", "messages": [{"role": "user", "content": f"{n}"}]},
        )
        assert called.status_code == 200
        assert "x-forge-balance-after-micros" not in called.headers
    sign_in(page, console_url, manager)
    page.goto(f"{console_url}#/ledger?bucket=credit&order=asc")
    seqs = page.locator("#ledger tbody tr td:nth-child(3)")
    expect(seqs.first).to_have_text("1")
    shown = seqs.all_inner_texts()
    assert {s.split("-")[0] for s in shown if "-" in s} == {"01", "02"}  # both other shards
    expect(page.locator("#ledger")).to_contain_text("moved between shards")
    expect(page.locator("#ledger")).not_to_contain_text("kind.")  # every kind has its words
    shot(page, "22-ledger-split-account")

    entries = [
        e
        for w in store.wallet_shards(account, Bucket.CREDIT)
        for e in store.list_entries(account, Bucket.CREDIT, w.shard)
    ]
    month = Month.of(entries[0].created_at)
    body = render_html(build_statement(account, month, entries, final=False))
    statement = page.context.new_page()  # a page of its own: the console's CSP is not its
    statement.set_content(body.decode())
    rows = statement.locator("table.entries tbody tr")
    expect(rows).to_have_count(len(entries))
    balances = [
        decimal_to_micros(b)
        for b in rows.evaluate_all("rows => rows.map(r => r.dataset.balanceAfter)")
    ]
    amounts = [
        decimal_to_micros(a) for a in rows.evaluate_all("rows => rows.map(r => r.dataset.amount)")
    ]
    assert balances == list(itertools.accumulate(amounts))  # the bucket's, row after row
    assert balances[-1] == store.get_wallet(account, Bucket.CREDIT).balance
    lines = rows.evaluate_all(
        """rows => rows.map(r => { const range = document.createRange();
             range.selectNodeContents(r.cells[1]); return range.getClientRects().length; })"""
    )
    assert set(lines) == {1}  # `01-2` stays on one line, as `3` does
    shot(statement, "23-statement-split-account")


FOCUSED = """() => { const el = document.activeElement;
    return el.getAttribute('name') || el.id || el.textContent; }"""
PAGES = [
    "overview",
    "keys",
    "projects",
    "requests",
    "runs",
    "ledger",
    "statements",
    "playground",
    "redeem",
]


def test_every_page_at_phone_width_by_keyboard(
    context: BrowserContext, page: Page, console_url: str, management_key: str
) -> None:
    page.set_viewport_size(PHONE)
    sign_in(page, console_url, management_key)
    for name in PAGES:
        page.goto(f"{console_url}#/{name}")
        expect(page.locator("h1")).to_be_visible()
        expect(page.locator("main .muted", has_text="Loading")).to_have_count(0)
        # nothing wider than the phone but the tables, which scroll inside their own box
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (name, overflow)
        shot(page, f"phone-{name}")
    # Every control is reachable by Tab, with a visible focus ring
    page.goto(f"{console_url}#/keys")
    expect(page.locator("#create-key")).to_be_visible()
    seen = set()
    for _ in range(60):
        page.keyboard.press("Tab")
        seen.add(page.evaluate(FOCUSED))
    assert {"name", "kind", "credit.run_budget", "Create a key"} <= seen, seen
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"


def test_a_project_is_created_with_caps_and_its_caps_changed(
    page: Page, console_url: str, management_key: str
) -> None:
    sign_in(page, console_url, management_key)
    page.click("nav >> text=Projects")
    page.fill("form.card input[name=id]", "research")
    page.fill("form.card input[name=name]", "Research")
    page.fill("form.card input[name=new_daily]", "2.50")
    page.click("form.card button[type=submit]")
    row = page.locator("tr[data-project-id=research]")
    expect(row).to_contain_text("Daily $2.50")
    row.locator("input[name=monthly]").fill("40")
    row.locator("button[type=submit]").click()
    expect(page.locator("tr[data-project-id=research]")).to_contain_text("Monthly $40.00")
    shot(page, "20-projects")
    # the new project is offered when a key is created
    page.click("nav >> text=Keys")
    expect(
        page.locator("#create-key select[name=project_id] option[value=research]")
    ).to_have_count(1)
