// Requests: a filterable list, and one request's whole story (its receipt): every attempt,
// the tokens by class at the prices applied, the charge, the balance after, the ledger entry.
import { api, query } from "./api.js";
import { field, h, table } from "./dom.js";
import { t } from "./i18n.js";
import { classCharge, currencyOf, money } from "./money.js";
import { refusalText } from "./overview.js";
import { badge, empty, go, more, title, values, when } from "./ui.js";

const FILTERS = ["key_id", "project_id", "model", "status", "from", "to"];

function requestRow(r) {
  const currency = currencyOf(r.bucket);
  return h("tr", { "data-request-id": r.request_id },
    h("td", {}, h("a", { href: `#/requests/${encodeURIComponent(r.request_id)}` }, when(r.created_at))),
    h("td", {}, r.requested_model),
    h("td", {}, badge(r.status), r.refusal ? h("small", { class: "envelope" }, " ", r.refusal.envelope) : r.error_code ? h("small", {}, " ", r.error_code) : null),
    h("td", {}, r.final_route || "—"),
    h("td", { class: "num" }, r.attempts.length),
    h("td", {}, r.bucket ? t(`bucket.${r.bucket}`) : "—"),
    h("td", { class: "num" }, money(r.charge_micros, currency)),
    h("td", {}, h("code", {}, r.key_id)),
    h("td", {}, r.run_id ? h("a", { href: `#/runs/${encodeURIComponent(r.run_id)}` }, r.run_id) : "—"));
}

export async function requestsPage(main, where) {
  const params = Object.fromEntries(FILTERS.map((name) => [name, where.params.get(name) || ""]));
  const [keys, projects] = await Promise.all([api("/v1/keys"), api("/v1/projects")]);
  const select = (name, options) => h("select", { name }, h("option", { value: "" }, t("filter.any")),
    options.map(([value, label]) => h("option", { value, selected: params[name] === value }, label)));
  const form = h("form", { class: "card filters", id: "filters", onsubmit: (event) => {
    event.preventDefault();
    go("requests", values(form));
  } },
    h("div", { class: "grid" },
      field(t("col.key"), select("key_id", keys.data.map((k) => [k.id, `${k.name} (${k.prefix}…)`]))),
      field(t("col.project"), select("project_id", projects.data.map((p) => [p.id, p.name || p.id]))),
      field(t("col.model"), h("input", { name: "model", value: params.model, autocomplete: "off" })),
      field(t("col.status"), select("status", ["succeeded", "partial", "failed"].map((s) => [s, t(`status.${s}`)]))),
      field(t("filter.from"), h("input", { type: "date", name: "from", value: params.from })),
      field(t("filter.to"), h("input", { type: "date", name: "to", value: params.to }))),
    h("button", { type: "submit", class: "primary" }, t("action.filter")));
  const body = h("tbody");
  const holder = h("div");
  const load = async (cursor, button) => {
    const page = await api("/v1/requests" + query({ ...params, limit: 50, cursor }));
    body.append(...page.data.map(requestRow));
    if (button) button.remove();
    const next = more(page.next_cursor, load);
    if (next) holder.append(next);
    return page;
  };
  const first = await load(null);
  const headers = [t("col.time"), t("col.model"), t("col.status"), t("col.route"), t("col.attempts"), t("col.bucket"), t("col.charge"), t("col.key"), t("col.run")];
  main.replaceChildren(title(t("nav.requests")), form,
    h("section", { class: "card" },
      first.data.length || first.next_cursor
        ? h("div", { class: "table-wrap" }, h("table", { id: "requests" },
          h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))), body))
        : empty(t("requests.none")),
      holder));
}

function dl(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "").flatMap(([k, v, attrs]) => [h("dt", {}, k), h("dd", attrs || {}, v)]));
}

export async function receiptPage(main, where) {
  const r = await api(`/v1/requests/${encodeURIComponent(where.id)}`);
  const currency = currencyOf(r.bucket);
  const prices = r.prices;
  const usage = r.usage || {};
  const uncached = (usage.input_tokens || 0) - (usage.cached_input_tokens || 0);
  const classes = prices ? [
    [t("tokens.input"), uncached, prices.input],
    [t("tokens.cached"), usage.cached_input_tokens || 0, prices.cached_input],
    [t("tokens.output"), usage.output_tokens || 0, prices.output],
  ] : [];
  const ledgerLink = r.ledger_entry_id && r.bucket
    ? h("a", { href: `#/ledger?${new URLSearchParams({ bucket: r.bucket, from: r.created_at.slice(0, 10), entry: r.ledger_entry_id, order: "asc" })}`, id: "ledger-link" }, r.ledger_entry_id)
    : null;
  main.replaceChildren(
    title(t("receipt.title"), badge(r.status)),
    h("section", { class: "card" },
      dl([
        [t("receipt.id"), h("code", {}, r.request_id)],
        [t("col.time"), when(r.created_at)],
        [t("col.model"), r.requested_model],
        [t("col.key"), h("code", {}, r.key_id)],
        [t("col.project"), r.project_id],
        [t("col.run"), r.run_id ? h("a", { href: `#/runs/${encodeURIComponent(r.run_id)}` }, r.run_id) : null],
        [t("col.route"), r.final_route],
        [t("col.routetype"), r.route_type ? t(`routetype.${r.route_type}`) : null],
        [t("receipt.upstream"), r.upstream_model],
        [t("col.bucket"), r.bucket ? `${t(`bucket.${r.bucket}`)} (${currency})` : null],
        [t("receipt.hold"), r.hold ? money(r.hold, currency) : null],
        [t("col.charge"), money(r.charge, currency), { class: "amount", id: "charge" }],
        [t("receipt.balanceafter"), r.balance_after !== null && r.balance_after !== undefined ? money(r.balance_after, currency) : null, { id: "balance-after" }],
        [t("receipt.ledger"), ledgerLink],
        [t("receipt.settlement"), r.settlement !== "settled" ? r.settlement : null],
        [t("receipt.error"), r.error_code],
        [t("receipt.refusal"), r.refusal ? refusalText(r.refusal, currency) : null, { class: "refusal" }],
        [t("receipt.note"), r.note],
      ])),
    h("section", { class: "card" }, h("h2", {}, t("receipt.attempts")),
      r.attempts.length ? table(["#", t("col.route"), t("receipt.upstream"), t("col.routetype"), t("col.bucket"), t("receipt.http"), t("receipt.outcome"), t("receipt.latency"), t("receipt.next")],
        r.attempts.map((a, i) => h("tr", { class: `attempt attempt-${a.outcome}` },
          h("td", {}, i + 1), h("td", {}, a.route), h("td", {}, a.upstream_model),
          h("td", {}, a.route_type ? t(`routetype.${a.route_type}`) : "—"), h("td", {}, a.bucket ? t(`bucket.${a.bucket}`) : "—"),
          h("td", {}, a.status ?? "—"), h("td", {}, t(`outcome.${a.outcome}`)), h("td", { class: "num" }, `${a.latency_ms} ms`),
          h("td", {}, a.action ? t(`next.${a.action}`) : "—", a.reason ? h("small", { class: "reason" }, " ", a.reason) : null, a.wait_ms ? h("small", {}, ` (${a.wait_ms} ms)`) : null))), { id: "attempts" })
        : empty(t("receipt.noattempts"))),
    h("section", { class: "card" }, h("h2", {}, t("receipt.tokens")),
      classes.length ? table([t("receipt.class"), t("col.tokens"), t("receipt.price"), t("col.charge")],
        [...classes.map(([name, tokens, price]) => h("tr", {}, h("td", {}, name), h("td", { class: "num" }, tokens),
          h("td", { class: "num" }, money(price, currency)), h("td", { class: "num" }, money(classCharge(tokens, price), currency)))),
        h("tr", { class: "total" }, h("td", {}, t("receipt.total")), h("td", { class: "num" }, usage.input_tokens + usage.output_tokens), h("td"), h("td", { class: "num" }, money(r.charge, currency)))])
        : empty(t("receipt.noprices")),
      usage.reasoning_tokens ? h("p", { class: "muted" }, t("receipt.reasoning", { n: usage.reasoning_tokens })) : null,
      h("p", { class: "muted" }, t("receipt.rounding"))));
}

