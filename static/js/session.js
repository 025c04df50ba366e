// Who is signed in, and the sign-in / register form used by the booking, my-bookings, staff and admin pages.

import { ApiError, get, hasSession, post } from "./api.js";
import { applyTranslations, t } from "./i18n.js";
import { el, rememberRole } from "./shell.js";

/** The signed-in user ({id, email, name, role, clinic?}) or null. */
export async function currentUser() {
  if (!hasSession()) {
    // Nobody signed in here: no request (a 401 in every visitor's console for nothing).
    rememberRole(null);
    return null;
  }
  try {
    const data = await get("/api/auth/me");
    const user = data && data.user ? data.user : null;
    rememberRole(user ? user.role : null);
    return user;
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      rememberRole(null);
      return null;
    }
    throw err;
  }
}

export async function signOut() {
  await post("/api/auth/logout", {});
  rememberRole(null);
}

/**
 * Render a sign-in form (with a switch to "create account" unless allowRegister is false) into container.
 * Resolves with the user once signed in.
 */
export function authForm(container, { allowRegister = true, idPrefix = "auth" } = {}) {
  return new Promise((resolve) => {
    let mode = "signin";
    const render = () => {
      const message = el("p", { class: "message", role: "alert", hidden: true });
      const field = (name, type, key, autocomplete) =>
        el("div", { class: "field" },
          el("label", { for: `${idPrefix}-${name}`, "data-i18n": key }),
          el("input", { id: `${idPrefix}-${name}`, name, type, required: true, autocomplete }));
      const form = el("form", { class: "auth", id: `${idPrefix}-form`, dataset: { mode } },
        el("h2", { "data-i18n": mode === "signin" ? "auth.signin" : "auth.register" }),
        mode === "register" ? field("name", "text", "auth.name", "name") : null,
        field("email", "email", "auth.email", "email"),
        field("password", "password", "auth.password", mode === "signin" ? "current-password" : "new-password"),
        message,
        el("button", { type: "submit", class: "primary", "data-i18n": mode === "signin" ? "auth.signin" : "auth.register" }),
        allowRegister
          ? el("button", {
            type: "button", class: "link", "data-i18n": mode === "signin" ? "auth.no_account" : "auth.have_account",
            onclick: () => { mode = mode === "signin" ? "register" : "signin"; render(); },
          })
          : null);
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const body = Object.fromEntries(new FormData(form).entries());
        message.hidden = true;
        try {
          const data = await post(mode === "signin" ? "/api/auth/login" : "/api/auth/register", body);
          container.replaceChildren();
          rememberRole(data.user.role);
          resolve(data.user);
        } catch (err) {
          message.textContent = err instanceof ApiError && err.status === 401 ? t("auth.failed")
            : err instanceof ApiError ? (err.field ? `${err.describe()} (${err.field})` : err.describe()) : String(err);
          message.hidden = false;
        }
      });
      container.replaceChildren(form);
      applyTranslations(container);
    };
    render();
  });
}

/** A "Signed in as … / Sign out" line. */
export function userBar(container, user, onSignOut) {
  const name = el("span", { text: t("auth.signed_in_as", { name: user.name || user.email }) });
  const button = el("button", {
    type: "button", class: "link", "data-i18n": "auth.signout",
    onclick: async () => { await signOut(); onSignOut(); },
  });
  container.replaceChildren(el("p", { class: "userbar" }, name, " ", button));
  applyTranslations(container);
}
