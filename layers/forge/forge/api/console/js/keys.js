// Keys and projects: create (the secret shown once, with a copy button), list, and the
// one-click actions; revoke and rotate ask first.
import { api, query } from "./api.js";
import { field, h, replace, table } from "./dom.js";
import { t } from "./i18n.js";
import { currencyOf, money } from "./money.js";
import { badge, confirmAction, empty, showError, title, values, when } from "./ui.js";

const CAPS = ["daily", "monthly", "total", "run_budget", "max_request_charge"];

function capsText(capsMicros) {
  const parts = [];
  for (const [bucket, caps] of Object.entries(capsMicros || {})) {
    for (const [name, value] of Object.entries(caps || {})) {
      if (value !== null && value !== undefined) parts.push(`${t(`cap.${name}`)} ${money(value, currencyOf(bucket))}`);
    }
  }
  return parts.length ? parts.join(" · ") : t("keys.nocaps");
}

/** The plaintext, once: a read-only field, a copy button, and a warning it will not return. */
function reveal(target, key, heading) {
  const input = h("input", { type: "text", readOnly: true, value: key.key, id: "new-key", class: "secret", "aria-label": t("keys.secret") });
  const copied = h("span", { class: "muted", role: "status" });
  replace(target, h("section", { class: "card reveal", "aria-live": "polite" },
    h("h2", {}, heading),
    h("p", {}, t("keys.once")),
    h("div", { class: "row" }, input,
      h("button", { type: "button", class: "primary", id: "copy-key", onclick: async () => {
        input.select();
        try { await navigator.clipboard.writeText(key.key); copied.textContent = t("keys.copied"); }
        catch { copied.textContent = t("keys.copyfailed"); }
      } }, t("action.copy")), copied),
    key.previous_secret_expires_at ? h("p", {}, t("keys.grace", { until: when(key.previous_secret_expires_at) })) : null,
    h("button", { type: "button", class: "secondary", onclick: () => target.replaceChildren() }, t("keys.done"))));
  input.focus();
}

function createForm(projects, onCreated) {
  const status = h("div");
  const capFields = CAPS.map((cap) => field(t(`cap.${cap}`) + " (USD)", h("input", { name: `credit.${cap}`, inputMode: "decimal", pattern: "[0-9]+(\\.[0-9]{1,6})?", autocomplete: "off" })));
  const form = h("form", { class: "card", id: "create-key", onsubmit: async (event) => {
    event.preventDefault();
    const v = values(form);
    const routeTypes = ["official", "routed"].filter((type) => form.elements[`route_${type}`].checked);
    const credit = {};
    for (const cap of CAPS) if (v[`credit.${cap}`]) credit[cap] = v[`credit.${cap}`];
    const body = { name: v.name, kind: v.kind, project_id: v.project_id, route_types: routeTypes };
    if (v.models) body.models = v.models.split(",").map((m) => m.trim()).filter(Boolean);
    if (Object.keys(credit).length) body.caps = { credit };
    if (v.expires_at) body.expires_at = new Date(v.expires_at + "Z").toISOString();
    if (v.kind === "management") body.can_call_models = form.elements.can_call_models.checked;
    try {
      const key = await api("/v1/keys", { method: "POST", body });
      form.reset();
      status.replaceChildren();
      onCreated(key);
    } catch (error) { showError(status, error); }
  } },
    h("h2", {}, t("keys.create")),
    h("div", { class: "grid" },
      field(t("col.name"), h("input", { name: "name", required: true, maxLength: 100, autocomplete: "off" })),
      field(t("col.kind"), h("select", { name: "kind" }, h("option", { value: "inference" }, t("kind.inference")), h("option", { value: "management" }, t("kind.management")))),
      field(t("col.project"), h("select", { name: "project_id" }, projects.map((p) => h("option", { value: p.id }, p.name || p.id)))),
      field(t("keys.models"), h("input", { name: "models", placeholder: t("keys.allmodels"), autocomplete: "off" })),
      field(t("keys.expires"), h("input", { name: "expires_at", type: "datetime-local" }), "UTC")),
    h("fieldset", {}, h("legend", {}, t("keys.routetypes")),
      ["official", "routed"].map((type) => h("label", { class: "check" }, h("input", { type: "checkbox", name: `route_${type}`, defaultChecked: true }), t(`routetype.${type}`))),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "can_call_models" }), t("keys.cancall"))),
    h("fieldset", {}, h("legend", {}, t("keys.caps")), h("div", { class: "grid" }, capFields)),
    h("button", { type: "submit", class: "primary" }, t("keys.create")),
    status);
  return form;
}

function keyRow(key, refresh, revealTarget, status) {
  const act = (action, body) => async () => {
    try {
      const done = await api(`/v1/keys/${encodeURIComponent(key.id)}/${action}`, { method: "POST", body });
      if (action === "rotate") reveal(revealTarget, done, t("keys.rotated", { name: key.name }));
      await refresh();
    } catch (error) { showError(status, error); }
  };
  const live = key.status === "active" || key.status === "paused";
  const actions = [];
  if (key.status === "active") actions.push(h("button", { type: "button", class: "secondary", "data-action": "pause", onclick: act("pause") }, t("action.pause")));
  if (key.status === "paused") actions.push(h("button", { type: "button", class: "secondary", "data-action": "resume", onclick: act("resume") }, t("action.resume")));
  if (live) {
    actions.push(h("button", { type: "button", class: "secondary", "data-action": "rotate", onclick: async () => {
      const hours = h("input", { type: "number", name: "grace_hours", min: 0, max: 720, value: 24, step: 1 });
      const answer = await confirmAction(t("keys.confirmrotate", { name: key.name }), field(t("keys.gracehours"), hours));
      if (answer) await act("rotate", { grace_seconds: Math.round(Number(answer.get("grace_hours") || 0) * 3600) })();
    } }, t("action.rotate")));
    actions.push(h("button", { type: "button", class: "danger", "data-action": "revoke", onclick: async () => {
      if (await confirmAction(t("keys.confirmrevoke", { name: key.name }))) await act("revoke")();
    } }, t("action.revoke")));
  }
  return h("tr", { "data-key-id": key.id },
    h("td", {}, h("code", {}, key.prefix + "…")),
    h("td", {}, key.name),
    h("td", {}, t(`kind.${key.kind}`)),
    h("td", {}, key.project_id),
    h("td", {}, (key.models ? key.models.join(", ") : t("keys.allmodels")) + " · " + (key.route_types || []).map((r) => t(`routetype.${r}`)).join(", ")),
    h("td", {}, capsText(key.caps_micros)),
    h("td", {}, badge(key.status)),
    h("td", {}, when(key.last_used_at)),
    h("td", { class: "actions" }, actions));
}

export async function keysPage(main) {
  const revealTarget = h("div", { id: "reveal" });
  const status = h("div");
  const list = h("div");
  const [projects] = await Promise.all([api("/v1/projects")]);
  const refresh = async () => {
    const keys = await api("/v1/keys");
    replace(list, keys.data.length
      ? table([t("col.prefix"), t("col.name"), t("col.kind"), t("col.project"), t("col.scopes"), t("col.caps"), t("col.status"), t("col.lastused"), ""],
        keys.data.map((k) => keyRow(k, refresh, revealTarget, status)), { id: "keys" })
      : empty(t("keys.none")));
  };
  await refresh();
  main.replaceChildren(title(t("nav.keys")), revealTarget,
    createForm(projects.data, async (key) => { reveal(revealTarget, key, t("keys.created", { name: key.name })); await refresh(); }),
    h("section", { class: "card" }, h("h2", {}, t("keys.list")), status, list));
}

export async function projectsPage(main) {
  const from = new Date().toISOString().slice(0, 8) + "01";
  const [projects, usage] = await Promise.all([api("/v1/projects"), api("/v1/usage" + query({ group_by: "project", from }))]);
  const status = h("div");
  const spend = (id) => usage.data.filter((l) => l.group === id).map((l) => money(l.charge_micros, l.currency)).join(" · ") || "—";
  const capInputs = (prefix, caps) => ["daily", "monthly"].map((cap) =>
    field(`${t(`cap.${cap}`)} (USD)`, h("input", { name: `${prefix}${cap}`, inputMode: "decimal", value: caps?.credit?.[cap] ?? "", autocomplete: "off" })));
  const capsBody = (v, prefix) => {
    const credit = {};
    for (const cap of ["daily", "monthly"]) credit[cap] = v[`${prefix}${cap}`] ?? null;
    return { credit };
  };
  const rows = projects.data.map((p) => {
    const form = h("form", { class: "inline", onsubmit: async (event) => {
      event.preventDefault();
      try {
        await api(`/v1/projects/${encodeURIComponent(p.id)}`, { method: "PATCH", body: { caps: capsBody(values(form), "") } });
        await projectsPage(main);
      } catch (error) { showError(status, error); }
    } }, capInputs("", p.caps), h("button", { type: "submit", class: "secondary" }, t("action.save")));
    return h("tr", { "data-project-id": p.id }, h("td", {}, h("strong", {}, p.name || p.id), h("br"), h("code", {}, p.id)),
      h("td", {}, capsText(p.caps_micros)), h("td", { class: "num" }, spend(p.id)), h("td", {}, form));
  });
  const create = h("form", { class: "card", onsubmit: async (event) => {
    event.preventDefault();
    const v = values(create);
    try {
      await api("/v1/projects", { method: "POST", body: { id: v.id, name: v.name, caps: capsBody(v, "new_") } });
      await projectsPage(main);
    } catch (error) { showError(status, error); }
  } },
    h("h2", {}, t("projects.create")),
    h("div", { class: "grid" },
      field(t("projects.id"), h("input", { name: "id", required: true, pattern: "[a-z0-9][a-z0-9_\\-]{0,62}", autocomplete: "off" })),
      field(t("col.name"), h("input", { name: "name", autocomplete: "off" })), capInputs("new_", null)),
    h("button", { type: "submit", class: "primary" }, t("projects.create")));
  main.replaceChildren(title(t("nav.projects")), status,
    h("section", { class: "card" }, h("h2", {}, t("projects.list")),
      rows.length ? table([t("col.project"), t("col.caps"), t("projects.spend"), t("projects.setcaps")], rows) : empty(t("projects.none"))),
    create);
}
