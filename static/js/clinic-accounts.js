// The clinic admin's part of the "Klinik" section on /staff: the clinic's staff accounts (add with a first
// password shown once, make staff or admin, remove: that signs them out at once) and the clinic's API key
// (create a new one, shown once with a copy button, which ends the old; revoke). Everything through
// /api/clinic/v1/accounts and /api/clinic/v1/key, which answer only the clinic's admin.

import { ApiError, del, get, post } from "./api.js";
import { copyButton } from "./copy-button.js";
import { locale, t } from "./i18n.js";
import { announce, el } from "./shell.js";

const $ = (id) => document.getElementById(id);
const ROLES = ["staff", "clinic_admin"];

export class AccountsPanel {
  constructor(user) {
    this.user = user; // the signed-in clinic admin: never offered to demote or remove themselves
    this.accounts = [];
    this.key = null; // {active, created_at}
  }

  say(text, kind = "info") {
    announce($("setup-message"), text, kind);
  }

  fail(err) {
    this.say(err instanceof ApiError ? err.describe() + (err.message ? ` (${err.message})` : "") : String(err), "error");
  }

  /** Show a secret once in its box (focused and selected), with a copy button and an "I have saved it". */
  reveal(prefix, value) {
    $(`${prefix}-secret-value`).value = value;
    $(`${prefix}-secret`).hidden = false;
    $(`${prefix}-secret-value`).focus();
    $(`${prefix}-secret-value`).select();
  }

  secretBox(prefix) {
    const input = $(`${prefix}-secret-value`);
    $(`${prefix}-secret-copy-row`).append(copyButton(input, `${prefix}-secret-copy`, $("setup-message")));
    $(`${prefix}-secret-hide`).addEventListener("click", () => {
      input.value = "";
      $(`${prefix}-secret`).hidden = true;
    });
  }

  async start() {
    $("accounts-role").replaceChildren(...ROLES.map((r) => el("option", { value: r, "data-i18n": `accounts.role.${r}`, text: t(`accounts.role.${r}`) })));
    this.secretBox("accounts");
    this.secretBox("key");
    $("accounts-form").addEventListener("submit", (ev) => { ev.preventDefault(); this.add(); });
    $("key-rotate").addEventListener("click", () => this.rotate());
    $("key-revoke").addEventListener("click", () => this.revoke());
    await Promise.all([this.load(), this.loadKey()]);
  }

  async load() {
    this.accounts = (await get("/api/clinic/v1/accounts")).accounts;
    this.render();
  }

  async loadKey() {
    this.key = (await get("/api/clinic/v1/key")).key;
    this.render();
  }

  render() {
    $("accounts-list").replaceChildren(...this.accounts.map((a) => {
      const self = a.id === this.user.id;
      const other = a.role === "staff" ? "clinic_admin" : "staff";
      return el("li", { dataset: { account: a.id } },
        el("span", { text: `${a.name} · ${a.email} · ${t(`accounts.role.${a.role}`)}${self ? ` (${t("accounts.you")})` : ""}` }),
        self ? null : el("span", { class: "actions" },
          el("button", { type: "button", text: t(`accounts.make.${other}`), onclick: () => this.setRole(a, other) }),
          el("button", { type: "button", class: "danger", text: t("accounts.remove"), onclick: () => this.remove(a) })));
    }));
    if (this.key) {
      $("key-state").textContent = this.key.active
        ? t("key.active", { when: new Date(this.key.created_at).toLocaleString(locale()) })
        : t("key.none");
      $("key-revoke").disabled = !this.key.active;
    }
  }

  async add() {
    try {
      const made = await post("/api/clinic/v1/accounts", {
        name: $("accounts-name").value, email: $("accounts-email").value.trim(), role: $("accounts-role").value,
      });
      $("accounts-name").value = "";
      $("accounts-email").value = "";
      this.say(t("accounts.added"), "ok");
      if (made.password) this.reveal("accounts", made.password);
      await this.load();
    } catch (err) {
      this.fail(err);
    }
  }

  async setRole(account, role) {
    try {
      await post(`/api/clinic/v1/accounts/${encodeURIComponent(account.id)}/role`, { role });
      this.say(t("accounts.changed"), "ok");
      await this.load();
    } catch (err) {
      this.fail(err);
    }
  }

  async remove(account) {
    if (!window.confirm(t("accounts.remove.confirm", { name: account.name }))) return;
    try {
      await del(`/api/clinic/v1/accounts/${encodeURIComponent(account.id)}`);
      this.say(t("accounts.removed"), "ok");
      await this.load();
    } catch (err) {
      this.fail(err);
    }
  }

  async rotate() {
    if (this.key?.active && !window.confirm(t("key.rotate.confirm"))) return;
    try {
      const made = await post("/api/clinic/v1/key", {});
      this.key = made.key;
      this.render();
      this.say(t("key.created"), "ok");
      this.reveal("key", made.secret);
    } catch (err) {
      this.fail(err);
    }
  }

  async revoke() {
    if (!window.confirm(t("key.revoke.confirm"))) return;
    try {
      await del("/api/clinic/v1/key");
      $("key-secret-value").value = "";
      $("key-secret").hidden = true;
      this.say(t("key.revoked"), "ok");
      await this.loadKey();
    } catch (err) {
      this.fail(err);
    }
  }
}
