// Playground: a streamed answer (fetch + a stream reader over SSE), then its receipt; a
// refusal shows the envelope that stopped it and what was left.
import { api, streamChat } from "./api.js";
import { field, h, replace } from "./dom.js";
import { t } from "./i18n.js";
import { currencyOf, micros, money } from "./money.js";
import { refusalText } from "./overview.js";
import { showError, title, values } from "./ui.js";

export async function playgroundPage(main) {
  const output = h("pre", { class: "answer", id: "answer", "aria-live": "polite" });
  const result = h("div", { id: "result" });
  const modelSelect = h("select", { name: "model", id: "model", required: true });
  const keyInput = h("input", { name: "key", type: "password", autocomplete: "off", placeholder: t("playground.samekey") });
  const buckets = {};  // model -> the bucket that pays for it
  const loadModels = async () => {
    try {
      const models = await api("/v1/models", { key: keyInput.value.trim() || undefined });
      for (const m of models.data) buckets[m.id] = m.bucket;
      replace(modelSelect, models.data.map((m) => h("option", { value: m.id },
        `${m.id} · ${t(`routetype.${m.route_type}`)} · ${t("playground.price", { input: money(micros(m.prices.input), m.prices.currency), output: money(micros(m.prices.output), m.prices.currency) })}`)));
    } catch (error) { showError(result, error); }
  };
  keyInput.addEventListener("change", loadModels);
  const form = h("form", { class: "card", id: "playground", onsubmit: async (event) => {
    event.preventDefault();
    const v = values(form);
    const headers = {};
    if (v.max_charge) headers["X-Max-Request-Charge"] = v.max_charge;
    if (v.run_id) headers["X-Run-Id"] = v.run_id;
    output.textContent = "";
    result.replaceChildren(h("p", { class: "muted" }, t("playground.streaming")));
    send.disabled = true;
    try {
      const done = await streamChat({ model: v.model, messages: [{ role: "user", content: v.prompt }], max_tokens: Number(v.max_tokens || 256) },
        { key: v.key, headers, onDelta: (text) => output.append(text) });
      const receipt = await api(`/v1/requests/${encodeURIComponent(done.requestId)}`, { key: v.key });
      const currency = currencyOf(receipt.bucket);
      replace(result, h("dl", { class: "facts", id: "outcome" },
        h("dt", {}, t("receipt.id")), h("dd", {}, h("a", { href: `#/requests/${encodeURIComponent(receipt.request_id)}` }, receipt.request_id)),
        h("dt", {}, t("col.route")), h("dd", {}, `${receipt.final_route} (${t(`routetype.${receipt.route_type}`)})`),
        h("dt", {}, t("col.charge")), h("dd", { class: "amount", id: "play-charge", "data-micros": receipt.charge }, money(receipt.charge, currency)),
        h("dt", {}, t("col.bucket")), h("dd", {}, t(`bucket.${receipt.bucket}`)),
        h("dt", {}, t("receipt.balanceafter")), h("dd", { id: "play-balance" }, money(receipt.balance_after, currency))));
    } catch (error) {
      if (error.code === "budget_exceeded") {
        const bucket = buckets[v.model];
        replace(result, h("div", { class: "refusal card", role: "alert", id: "refusal" },
          h("h2", {}, t("playground.refused")),
          h("p", {}, refusalText(error.details, currencyOf(bucket))),
          h("p", { class: "muted" }, error.message)));
      } else showError(result, error);
    } finally { send.disabled = false; }
  } },
    h("div", { class: "grid" },
      field(t("col.model"), modelSelect),
      field(t("playground.key"), keyInput, t("playground.keyhint")),
      field(t("playground.maxtokens"), h("input", { name: "max_tokens", type: "number", min: 1, max: 4096, value: 256 })),
      field(t("playground.maxcharge"), h("input", { name: "max_charge", inputMode: "decimal", autocomplete: "off" }), t("playground.maxchargehint")),
      field(t("col.run"), h("input", { name: "run_id", autocomplete: "off" }))),
    field(t("playground.prompt"), h("textarea", { name: "prompt", rows: 4, required: true, id: "prompt" })));
  const send = h("button", { type: "submit", class: "primary" }, t("playground.send"));
  form.append(send);
  main.replaceChildren(title(t("nav.playground")), form, h("section", { class: "card" }, h("h2", {}, t("playground.answer")), output, result));
  await loadModels();
}
