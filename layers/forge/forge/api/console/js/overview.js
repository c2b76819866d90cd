// Overview: each bucket in its own currency, this month's spend by day (an SVG drawn with
// attributes only), by model and by route type, and the latest refusals with their envelope.
import { api, query } from "./api.js";
import { h, s, table } from "./dom.js";
import { t } from "./i18n.js";
import { currencyOf, micros, money } from "./money.js";
import { empty, title, when } from "./ui.js";

const ROUTE_TYPE = { credit: "official", rmb: "routed" };  // each bucket pays one route type

function monthStart() {
  const now = new Date();
  return `${now.getUTCFullYear()}-${String(now.getUTCMonth() + 1).padStart(2, "0")}-01`;
}

function bucketCards(balance) {
  return h("section", { class: "cards", "aria-label": t("overview.buckets") },
    balance.buckets.map((b) => h("article", { class: "card bucket", "data-bucket": b.bucket },
      h("h2", {}, t(`bucket.${b.bucket}`), " ", h("small", {}, b.currency)),
      h("dl", {},
        h("dt", {}, t("overview.balance")), h("dd", { class: "amount", "data-field": "balance", "data-micros": b.balance_micros }, money(b.balance_micros, b.currency)),
        h("dt", {}, t("overview.held")), h("dd", { "data-field": "held" }, money(b.held_micros, b.currency)),
        h("dt", {}, t("overview.available")), h("dd", { "data-field": "available" }, money(b.available_micros, b.currency))))));
}

/** One bar per day of the month with spend, height in proportion (BigInt: exact). */
export function spendChart(lines, bucket) {
  const currency = currencyOf(bucket);
  const now = new Date();
  const days = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 0)).getUTCDate();
  const byDay = new Map(lines.filter((l) => l.bucket === bucket).map((l) => [Number(l.group.slice(8, 10)), BigInt(l.charge_micros)]));
  const top = [...byDay.values()].reduce((a, b) => (b > a ? b : a), 0n);
  const width = 620, height = 160, left = 8, bottom = 20, slot = (width - left) / days;
  const bars = [];
  for (let day = 1; day <= days; day++) {
    const spent = byDay.get(day) || 0n;
    const barHeight = top > 0n ? Number((spent * BigInt(height - bottom - 4)) / top) : 0;
    const x = left + (day - 1) * slot;
    if (spent > 0n) {
      bars.push(s("rect", { class: "bar", x: x + 1, y: height - bottom - barHeight, width: Math.max(slot - 2, 1), height: Math.max(barHeight, 1) },
        s("title", {}, `${day}: ${money(spent, currency)}`)));
    }
    if (day === 1 || day % 5 === 0) bars.push(s("text", { x: x + slot / 2, y: height - 5, class: "tick", "text-anchor": "middle" }, String(day)));
  }
  return s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": t("overview.chart", { bucket: t(`bucket.${bucket}`), top: money(top, currency) }) },
    s("line", { x1: left, x2: width, y1: height - bottom, y2: height - bottom, class: "axis" }), bars);
}

function usageTable(lines, label) {
  if (!lines.length) return empty(t("overview.nospend"));
  return table([label, t("col.bucket"), t("col.requests"), t("col.tokens"), t("col.charge")],
    lines.map((l) => h("tr", {},
      h("td", {}, l.group || "—"), h("td", {}, t(`bucket.${l.bucket}`)), h("td", { class: "num" }, l.requests),
      h("td", { class: "num" }, `${l.input_tokens} / ${l.output_tokens}`),
      h("td", { class: "num" }, money(l.charge_micros, l.currency)))));
}

/** Which envelope refused a call, its limit and what was left, in the bucket's currency. */
export function refusalText(refusal, currency) {
  return t("refusal.text", {
    envelope: refusal.envelope,
    limit: money(micros(refusal.limit), currency),
    remaining: money(micros(refusal.remaining), currency),
    requested: money(micros(refusal.requested), currency),
  });
}

export async function overviewPage(main) {
  const from = monthStart();
  const [balance, byDay, byModel, refusals] = await Promise.all([
    api("/v1/balance"),
    api("/v1/usage" + query({ group_by: "day", from })),
    api("/v1/usage" + query({ group_by: "model", from })),
    api("/v1/requests" + query({ error_code: "budget_exceeded", limit: 5 })),
  ]);
  const spent = byDay.data.length > 0;
  main.replaceChildren(
    title(t("nav.overview")),
    bucketCards(balance),
    h("section", { class: "card" },
      h("h2", {}, t("overview.byday")),
      spent ? h("div", { class: "charts" }, ["credit", "rmb"].filter((b) => byDay.data.some((l) => l.bucket === b)).map((b) =>
        h("figure", {}, spendChart(byDay.data, b), h("figcaption", {}, t(`bucket.${b}`), " · ", money(byDay.totals.find((x) => x.bucket === b)?.charge_micros ?? 0, currencyOf(b))))))
        : empty(t("overview.nospend"))),
    h("div", { class: "two" },
      h("section", { class: "card" }, h("h2", {}, t("overview.bymodel")), usageTable(byModel.data, t("col.model"))),
      h("section", { class: "card" }, h("h2", {}, t("overview.byroutetype")),
        usageTable(byDay.totals.filter((l) => l.bucket).map((l) => ({ ...l, group: t(`routetype.${ROUTE_TYPE[l.bucket]}`) })), t("col.routetype")))),
    h("section", { class: "card", id: "refusals" },
      h("h2", {}, t("overview.refusals")),
      refusals.data.length
        ? table([t("col.time"), t("col.model"), t("col.envelope"), t("col.limit"), t("col.remaining"), ""],
          refusals.data.map((r) => h("tr", {},
            h("td", {}, when(r.created_at)), h("td", {}, r.requested_model),
            h("td", {}, h("strong", { class: "envelope" }, r.refusal ? r.refusal.envelope : r.error_code)),
            h("td", { class: "num" }, r.refusal ? money(micros(r.refusal.limit), currencyOf(r.bucket)) : "—"),
            h("td", { class: "num" }, r.refusal ? money(micros(r.refusal.remaining), currencyOf(r.bucket)) : "—"),
            h("td", {}, h("a", { href: `#/requests/${encodeURIComponent(r.request_id)}` }, t("action.receipt"))))))
        : empty(t("overview.norefusals"))));
}
