// Ledger (paged, per bucket), statements (downloaded through their presigned link), redeem.
import { api, query } from "./api.js";
import { field, h, replace, table } from "./dom.js";
import { t } from "./i18n.js";
import { money } from "./money.js";
import { empty, go, showError, title, values, when } from "./ui.js";

export async function ledgerPage(main, where) {
  const params = { bucket: where.params.get("bucket") || "", from: where.params.get("from") || "", order: where.params.get("order") || "desc" };
  const highlight = where.params.get("entry");
  const cursor = where.params.get("cursor");
  const page = await api("/v1/ledger" + query({ ...params, limit: 25, cursor }));
  const form = h("form", { class: "card filters", onsubmit: (event) => { event.preventDefault(); go("ledger", values(form)); } },
    h("div", { class: "grid" },
      field(t("col.bucket"), h("select", { name: "bucket" }, h("option", { value: "" }, t("filter.any")),
        ["credit", "rmb"].map((b) => h("option", { value: b, selected: params.bucket === b }, t(`bucket.${b}`))))),
      field(t("filter.from"), h("input", { type: "date", name: "from", value: params.from })),
      field(t("ledger.order"), h("select", { name: "order" }, ["desc", "asc"].map((o) => h("option", { value: o, selected: params.order === o }, t(`ledger.${o}`)))))),
    h("button", { type: "submit", class: "primary" }, t("action.filter")));
  const rows = page.data.map((e) => h("tr", { "data-entry-id": e.entry_id, class: e.entry_id === highlight ? "highlight" : null, id: e.entry_id === highlight ? "entry" : null },
    h("td", {}, when(e.created_at)), h("td", {}, t(`bucket.${e.bucket}`)), h("td", { class: "num" }, e.shard ? `${String(e.shard).padStart(2, "0")}-${e.seq}` : e.seq),
    h("td", {}, t(`kind.${e.kind}`)), h("td", { class: "num" }, money(e.amount_micros, e.currency)),
    h("td", { class: "num" }, money(e.balance_after_micros, e.currency)),
    h("td", {}, e.source || "—", e.request_id ? [" ", h("a", { href: `#/requests/${encodeURIComponent(e.request_id)}` }, t("action.receipt"))] : null)));
  const nav = h("div", { class: "actions" },
    cursor ? h("a", { class: "button secondary", href: `#/ledger?${new URLSearchParams(params)}` }, t("ledger.first")) : null,
    page.next_cursor ? h("a", { class: "button secondary", id: "next-page", href: `#/ledger?${new URLSearchParams({ ...params, cursor: page.next_cursor })}` }, t("action.more")) : null);
  main.replaceChildren(title(t("nav.ledger")), form, h("section", { class: "card" },
    rows.length ? table([t("col.time"), t("col.bucket"), "#", t("col.kind"), t("col.amount"), t("col.balanceafter"), t("col.source")], rows, { id: "ledger" }) : empty(t("ledger.none")),
    nav));
  document.getElementById("entry")?.scrollIntoView({ block: "center" });
}

async function download(month, format, status) {
  try {
    const link = await api(`/v1/statements/${month}` + query({ format }));
    // The presigned link answers with Content-Disposition: attachment, so this downloads.
    const anchor = h("a", { href: link.url, download: `${month}.${format}`, class: "hidden" });
    document.body.append(anchor);
    anchor.click();
    anchor.remove();
    replace(status, h("span", { class: "muted" }, t("statements.started", { month, format: format.toUpperCase() })));
  } catch (error) { showError(status, error); }
}

export async function statementsPage(main) {
  const list = await api("/v1/statements");
  const status = h("div", { role: "status" });
  main.replaceChildren(title(t("nav.statements")), h("section", { class: "card" },
    h("p", { class: "muted" }, t("statements.intro")), status,
    list.data.length ? table([t("statements.month"), t("col.status"), ""], list.data.map((m) => h("tr", { "data-month": m.month },
      h("td", {}, m.month), h("td", {}, t(`statement.${m.status}`)),
      h("td", { class: "actions" }, m.formats.map((format) => h("button", { type: "button", class: "secondary", "data-format": format,
        onclick: () => download(m.month, format, status) }, t("statements.download", { format: format.toUpperCase() }))))))) : empty(t("statements.none"))));
}

export async function redeemPage(main) {
  const status = h("div", { role: "status" });
  const form = h("form", { class: "card narrow", onsubmit: async (event) => {
    event.preventDefault();
    try {
      const done = await api("/v1/redeem", { method: "POST", body: { code: values(form).code } });
      form.reset();
      replace(status, h("p", { class: "success" }, t("redeem.done", { amount: money(done.amount_micros, done.currency), bucket: t(`bucket.${done.bucket}`), balance: money(done.balance_micros, done.currency) })));
    } catch (error) { showError(status, error); }
  } },
    h("h2", {}, t("redeem.title")),
    field(t("redeem.code"), h("input", { name: "code", required: true, maxLength: 64, autocomplete: "off" })),
    h("button", { type: "submit", class: "primary" }, t("redeem.submit")), status);
  main.replaceChildren(title(t("nav.redeem")), form);
}
