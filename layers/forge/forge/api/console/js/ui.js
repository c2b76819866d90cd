// Pieces every page uses: navigation, errors, dates, status badges, confirmation, paging.
import { h, replace } from "./dom.js";
import { lang, t } from "./i18n.js";

export function go(page, params) {
  const search = params ? new URLSearchParams(params).toString() : "";
  location.hash = `#/${page}${search ? "?" + search : ""}`;
}

/** The error of an action, shown where the action was taken. */
export function showError(target, error) {
  replace(target, h("p", { class: "error", role: "alert" }, error.code ? `${error.message} (${error.code})` : error.message));
}

export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return date.toLocaleString(lang() === "zh" ? "zh-CN" : "en-GB", { timeZone: "UTC", dateStyle: "medium", timeStyle: "medium" }) + " UTC";
}

export function badge(status) {
  return h("span", { class: `badge badge-${status}` }, t(`status.${status}`));
}

export function title(text, ...extra) {
  return h("div", { class: "page-title" }, h("h1", {}, text), ...extra);
}

export function empty(text) {
  return h("p", { class: "muted empty" }, text);
}

/** Ask before a destructive action: a modal <dialog> (focus stays inside; Esc cancels).
 * Resolves to the form's values on confirm, or null. */
export function confirmAction(message, extraFields = []) {
  const dialog = document.getElementById("confirm");
  return new Promise((resolve) => {
    // Buttons close the dialog themselves: no form submission (the CSP allows none).
    const form = h("form", { onsubmit: (event) => { event.preventDefault(); dialog.close("confirm"); } },
      h("p", {}, message),
      extraFields,
      h("div", { class: "actions" },
        h("button", { type: "button", class: "secondary", onclick: () => dialog.close("cancel") }, t("action.cancel")),
        h("button", { type: "submit", class: "danger", id: "confirm-yes" }, t("action.confirm"))));
    replace(dialog, form);
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "confirm" ? new FormData(form) : null);
    }, { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

/** A "next page" button for a cursor listing: calls load(cursor) and appends its rows. */
export function more(nextCursor, load) {
  if (!nextCursor) return null;
  const button = h("button", { type: "button", class: "secondary", onclick: async () => {
    button.disabled = true;
    await load(nextCursor, button);
  } }, t("action.more"));
  return button;
}

/** Reads a form's non-empty fields into an object. */
export function values(form) {
  const out = {};
  for (const [name, value] of new FormData(form)) {
    if (typeof value === "string" && value.trim() !== "") out[name] = value.trim();
  }
  return out;
}
