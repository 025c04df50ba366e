// Page chrome shared by every screen: the header with navigation, the language toggle and the
// live connection indicator. Each page's module calls mountShell() first.

import { applyTranslations, lang, onLangChange, setLang, t } from "./i18n.js";
import { bindStatus } from "./live.js";

// [href, label, the roles that see the link, space-separated (null: everybody)]. Staff and admin links are not
// shown to patients.
const NAV = [
  ["/", "nav.map", null],
  ["/me", "nav.me", null],
  ["/staff", "nav.staff", "staff clinic_admin"],
  ["/admin", "nav.admin", "admin"],
];
// The signed-in user's role as last seen by this browser (set by session.js), so the header knows which links
// to show at once, without asking the server before it paints. Only decides links; the server checks roles.
const ROLE_KEY = "tandtid.role";

function storedRole() {
  try {
    return localStorage.getItem(ROLE_KEY);
  } catch {
    return null; // storage disabled: patients' links only
  }
}

/** Remember who is signed in (null: nobody) and show or hide the header's role links to match. */
export function rememberRole(role) {
  try {
    if (role) localStorage.setItem(ROLE_KEY, role);
    else localStorage.removeItem(ROLE_KEY);
  } catch {
    // storage disabled: the links follow this page only
  }
  for (const item of document.querySelectorAll("header.site li[data-role]")) {
    item.hidden = !item.dataset.role.split(" ").includes(role) && !item.querySelector("[aria-current]");
  }
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/**
 * Fill <header class="site"> and wire translations. Pass {live} (a LiveConnection) to show its state.
 * Returns the status element (or null).
 */
export function mountShell({ active = "", live = null, nav = true } = {}) {
  const header = document.querySelector("header.site");
  header.replaceChildren();
  header.append(el("a", { class: "brand", href: "/", "data-i18n": "app.name" }));
  if (nav) {
    const list = el("ul");
    const role = storedRole();
    for (const [href, key, needs] of NAV) {
      const link = el("a", { href, "data-i18n": key });
      if (href === active) link.setAttribute("aria-current", "page");
      const shown = !needs || needs.split(" ").includes(role) || href === active;
      list.append(el("li", { dataset: needs ? { role: needs } : {}, hidden: !shown }, link));
    }
    const menu = el("nav", { "data-i18n-label": "nav.label" }, list);
    header.append(menu);
    // A menu wider than its row scrolls sideways (a screen a little wider than a phone's, where the menu shares
    // the row; on a phone it has a row of its own and wraps): show this page's link.
    const current = list.querySelector("[aria-current]");
    if (current) {
      requestAnimationFrame(() => {
        const past = current.getBoundingClientRect().right - menu.getBoundingClientRect().right;
        if (past > 0) menu.scrollLeft += past;
      });
    }
  }
  const tools = el("div", { class: "tools" });
  let status = null;
  if (live) {
    status = el("p", { class: "conn", role: "status", id: "conn-status" });
    tools.append(status);
    bindStatus(live, status);
  }
  // "English" / "Svenska", the button's name; on a phone it shows "EN" / "SV" (the name stays the word, for
  // screen readers) so the header keeps to one row.
  const toggle = el("button", {
    type: "button", class: "lang", id: "lang-toggle",
    lang: lang() === "sv" ? "en" : "sv",
    onclick: () => setLang(lang() === "sv" ? "en" : "sv"),
  }, el("span", { class: "long", "data-i18n": "lang.toggle" }),
  el("span", { class: "short", "aria-hidden": "true", "data-i18n": "lang.toggle.short" }));
  onLangChange((next) => toggle.setAttribute("lang", next === "sv" ? "en" : "sv"));
  tools.append(toggle);
  header.append(tools);
  applyTranslations(document);
  if (live) onLangChange(() => live.setState(live.state));
  return status;
}

/**
 * Name each body cell's column for where a phone shows a table's rows as cards (table.stacks: each cell on its
 * own line after its data-label). The names are the header row's, as shown now: call again after the body is
 * filled and after a change of language. A row of another shape (one "nothing here" cell) is left alone.
 */
export function labelColumns(table) {
  const names = [...table.tHead.rows[0].cells].map((th) => th.textContent.trim());
  for (const body of table.tBodies) {
    for (const row of body.rows) {
      if (row.cells.length !== names.length) continue;
      [...row.cells].forEach((cell, i) => { cell.dataset.label = names[i]; });
    }
  }
}

/** Put a message in a region that screen readers announce (role=status or role=alert in the markup). */
export function announce(element, text, kind = "info") {
  element.textContent = text;
  element.dataset.kind = kind;
  element.hidden = !text;
}

export { t };
