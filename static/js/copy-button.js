// A "Copy" button for a read-only text field holding something shown once (a feed URL, a webhook secret).
// The clipboard API can be refused (permissions, an insecure origin): then the text is selected so the
// user can copy it by hand, and the message region says so.

import { t } from "./i18n.js";
import { announce, el } from "./shell.js";

export function copyButton(input, id, message) {
  return el("button", {
    type: "button", id, "data-i18n": "copy",
    onclick: async () => {
      input.focus();
      input.select();
      try {
        await navigator.clipboard.writeText(input.value);
        announce(message, t("copy.done"), "ok");
      } catch {
        announce(message, t("copy.manual"), "info");
      }
    },
  });
}
