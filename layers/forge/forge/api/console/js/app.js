// The console's shell: sign-in, navigation, language, and a hash router (#/page/id?filters),
// so the server only ever serves files and a receipt's address can be shared in a tab.
import { ApiError, api, session } from "./api.js";
import { h, replace } from "./dom.js";
import { lang, setLang, t } from "./i18n.js";
import { keysPage, projectsPage } from "./keys.js";
import { ledgerPage, redeemPage, statementsPage } from "./money-pages.js";
import { overviewPage } from "./overview.js";
import { playgroundPage } from "./playground.js";
import { receiptPage, requestsPage } from "./requests.js";
import { runPage, runsPage } from "./runs.js";

const PAGES = {
  overview: overviewPage,
  keys: keysPage,
  projects: projectsPage,
  requests: requestsPage,
  runs: runsPage,
  ledger: ledgerPage,
  statements: statementsPage,
  playground: playgroundPage,
  redeem: redeemPage,
};
const DETAIL = { requests: receiptPage, runs: runPage };

function route() {
  const [path, search = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const [page, ...rest] = path.split("/");
  return { page: page || "overview", id: rest.length ? decodeURIComponent(rest.join("/")) : null, params: new URLSearchParams(search) };
}

function header(current) {
  const top = document.getElementById("top");
  const nav = session.key
    ? h("nav", { "aria-label": t("nav.label") },
        h("ul", {}, Object.keys(PAGES).map((page) =>
          h("li", {}, h("a", { href: `#/${page}`, "aria-current": page === current ? "page" : null }, t(`nav.${page}`))))))
    : null;
  replace(top,
    h("div", { class: "brand" }, h("span", { class: "logo", "aria-hidden": "true" }, "◆"), t("app.title")),
    nav,
    h("div", { class: "tools" },
      h("button", { type: "button", class: "link", id: "lang", lang: lang() === "en" ? "zh-CN" : "en",
        onclick: () => { setLang(lang() === "en" ? "zh" : "en"); render(); } }, t("app.switch")),
      session.key ? h("button", { type: "button", class: "link", id: "sign-out",
        onclick: () => { session.signOut(); location.hash = "#/"; render(); } }, t("app.signout")) : null));
}

function signIn(main) {
  const input = h("input", { type: "password", id: "key", name: "key", autocomplete: "off", required: true, spellcheck: false });
  const message = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "card narrow", onsubmit: async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    message.textContent = "";
    try {
      await api("/v1/keys", { key });  // only a management key may list keys
      session.signIn(key);
      render();
    } catch (error) {
      const code = error instanceof ApiError ? error.code : "network";
      message.textContent = t(code === "insufficient_scope" ? "signin.inference" : code === "invalid_api_key" ? "signin.invalid" : "signin.failed", { message: error.message });
    }
  } },
    h("h1", {}, t("signin.title")),
    h("p", {}, t("signin.intro")),
    h("label", { for: "key" }, t("signin.key")),
    input,
    h("p", { class: "muted" }, t("signin.session")),
    h("button", { type: "submit", class: "primary" }, t("signin.submit")),
    message);
  replace(main, form);
  input.focus();
}

export async function render() {
  document.documentElement.lang = lang() === "zh" ? "zh-CN" : "en";
  document.title = t("app.title");
  const main = document.getElementById("main");
  const where = route();
  header(where.page);
  if (!session.key) return signIn(main);
  const page = (where.id && DETAIL[where.page]) || PAGES[where.page];
  if (!page) return replace(main, h("h1", {}, t("error.notfound")));
  // Each render draws into its own view: one still loading when the user moves on is
  // detached by the next, so its late answer can never overwrite the page now shown.
  const view = h("div", { class: "view" }, h("p", { class: "muted" }, t("app.loading")));
  replace(main, view);
  try {
    await page(view, where);
  } catch (error) {
    if (!view.isConnected) return;
    if (error instanceof ApiError && error.status === 401) {
      session.signOut();
      return render();
    }
    replace(view, h("h1", {}, error.status === 404 ? t("error.notfound") : t("error.title")),
      h("p", { class: "error", role: "alert" }, error.message), h("p", {}, h("a", { href: "#/overview" }, t("nav.overview"))));
  }
}

window.addEventListener("hashchange", render);
render();
