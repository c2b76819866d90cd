// Runs (X-Run-Id): each run's spend against its budget, and one run's calls.
import { api, query } from "./api.js";
import { h, table } from "./dom.js";
import { t } from "./i18n.js";
import { currencyOf, money } from "./money.js";
import { badge, empty, more, title, when } from "./ui.js";

function budgetCell(run) {
  const currency = currencyOf(run.bucket);
  if (run.budget_micros === null || run.budget_micros === undefined) return h("span", {}, money(run.charge_micros, currency), " ", h("small", { class: "muted" }, t("runs.nobudget")));
  return h("span", { class: "budget" },
    h("meter", { min: 0, max: run.budget_micros, value: run.charge_micros, high: run.budget_micros * 0.8, "aria-label": t("runs.used") }),
    " ", t("runs.of", { spent: money(run.charge_micros, currency), budget: money(run.budget_micros, currency) }));
}

export async function runsPage(main) {
  const body = h("tbody");
  const holder = h("div");
  const load = async (cursor, button) => {
    const page = await api("/v1/runs" + query({ limit: 50, cursor }));
    body.append(...page.data.map((run) => h("tr", { "data-run-id": run.run_id },
      h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(run.run_id)}` }, run.run_id)),
      h("td", {}, when(run.first_call_at)), h("td", {}, run.bucket ? t(`bucket.${run.bucket}`) : "—"),
      h("td", { class: "num" }, run.requests), h("td", {}, budgetCell(run)))));
    if (button) button.remove();
    const next = more(page.next_cursor, load);
    if (next) holder.append(next);
    return page;
  };
  const first = await load(null);
  main.replaceChildren(title(t("nav.runs")), h("section", { class: "card" },
    first.data.length
      ? h("div", { class: "table-wrap" }, h("table", { id: "runs" }, h("thead", {}, h("tr", {},
        [t("col.run"), t("runs.started"), t("col.bucket"), t("col.requests"), t("runs.spend")].map((x) => h("th", { scope: "col" }, x)))), body))
      : empty(t("runs.none")), holder));
}

export async function runPage(main, where) {
  const run = await api(`/v1/runs/${encodeURIComponent(where.id)}` + query({ limit: 200 }));
  main.replaceChildren(title(t("runs.title", { id: run.run_id })),
    h("section", { class: "cards" }, run.totals.map((line) => h("article", { class: "card" },
      h("h2", {}, line.bucket ? t(`bucket.${line.bucket}`) : "—"),
      h("dl", { class: "facts" },
        h("dt", {}, t("col.requests")), h("dd", {}, `${line.requests} (${t("status.succeeded")} ${line.succeeded}, ${t("status.failed")} ${line.failed})`),
        h("dt", {}, t("col.charge")), h("dd", { class: "amount" }, money(line.charge_micros, line.currency)))))),
    h("section", { class: "card" }, h("h2", {}, t("runs.calls")),
      run.calls.length ? table([t("col.time"), t("col.model"), t("col.status"), t("col.route"), t("col.attempts"), t("col.charge")],
        run.calls.map((c) => h("tr", {},
          h("td", {}, h("a", { href: `#/requests/${encodeURIComponent(c.request_id)}` }, when(c.created_at))),
          h("td", {}, c.requested_model), h("td", {}, badge(c.status)), h("td", {}, c.final_route || "—"),
          h("td", { class: "num" }, c.attempts.length), h("td", { class: "num" }, money(c.charge_micros, currencyOf(c.bucket))))), { id: "calls" })
        : empty(t("runs.nocalls")),
      run.has_more ? h("p", { class: "muted" }, t("runs.firstpage")) : null));
}
