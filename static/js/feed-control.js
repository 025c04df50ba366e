// A private calendar feed (iCal) control: create a secret feed URL, copy it, revoke it.
// The server shows the URL once (only its hash is stored), so the control cannot show an existing
// feed after a reload: "Create link" makes a new one (the old one stops working), "Turn off" revokes.
// Used on /me (POST/DELETE /api/me/ical-token) and /staff (/api/clinic/v1/ical-token).

import { ApiError, api, post } from "./api.js";
import { applyTranslations, t } from "./i18n.js";
import { announce, el } from "./shell.js";
import { copyButton } from "./copy-button.js";

/**
 * Fill container (a <section> with its heading already in the markup) with the feed control.
 * tokenPath: the create/revoke endpoint; idPrefix: unique ids for the elements (e.g. "me-feed").
 */
export function feedControl(container, { tokenPath, idPrefix, intro }) {
  const message = el("p", { class: "message", id: `${idPrefix}-message`, role: "status", hidden: true });
  const url = el("input", {
    id: `${idPrefix}-url`, type: "text", readonly: true, class: "secret-value", spellcheck: "false",
    autocomplete: "off",
  });
  const shown = el("div", { class: "secret", id: `${idPrefix}-shown`, hidden: true },
    el("label", { for: `${idPrefix}-url`, "data-i18n": "feed.url" }),
    el("div", { class: "copy-row" }, url, copyButton(url, `${idPrefix}-copy`, message)),
    el("p", { class: "muted", "data-i18n": "feed.private" }));
  const say = (text, kind) => announce(message, text, kind);
  const describe = (err) => (err instanceof ApiError ? err.describe() : String(err));

  const create = el("button", {
    type: "button", class: "primary", id: `${idPrefix}-create`, "data-i18n": "feed.create",
    onclick: async () => {
      try {
        const data = await post(tokenPath, {});
        url.value = data.url;
        shown.hidden = false;
        say(t("feed.created"), "ok");
        url.focus();
        url.select();
      } catch (err) {
        say(describe(err), "error");
      }
    },
  });
  const revoke = el("button", {
    type: "button", class: "danger", id: `${idPrefix}-revoke`, "data-i18n": "feed.revoke",
    onclick: async () => {
      try {
        await api("DELETE", tokenPath);
        url.value = "";
        shown.hidden = true;
        say(t("feed.revoked"), "ok");
      } catch (err) {
        say(describe(err), "error");
      }
    },
  });
  container.append(
    el("p", { class: "muted", "data-i18n": intro }),
    el("p", { class: "actions" }, create, revoke),
    shown,
    message);
  applyTranslations(container);
}
