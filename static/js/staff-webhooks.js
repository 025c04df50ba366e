// The clinic's webhooks on /staff: its endpoints (URL, event types, how deliveries are going), the form to
// register one (the signing secret is shown once), delete, and per endpoint the delivery log with a
// Replay button per delivery. Deliveries happen in the server's background, so after any change the
// panel looks again every few seconds for a while, and for as long as a delivery is still pending.

import { ApiError, api, get, post, query } from "./api.js";
import { applyTranslations, lang, t } from "./i18n.js";
import { copyButton } from "./copy-button.js";
import { announce, el, labelColumns } from "./shell.js";
import { formatDateTime } from "./stockholm.js";

const BASE = "/api/clinic/v1/webhooks";
export const EVENT_TYPES = ["booking.created", "booking.cancelled", "booking.rescheduled"];
const LOG_LIMIT = 20;
const POLL_MS = 1500;
const WATCH_MS = 12000; // how long to keep looking after a change

const $ = (id) => document.getElementById(id);

function describe(err) {
  if (!(err instanceof ApiError)) return String(err);
  if (err.code === "INVALID" && err.field === "url") return `${t("webhooks.url.invalid")} (${err.message})`;
  return err.describe();
}

function when(value) {
  if (value === null || value === undefined || value === "") return "–";
  return formatDateTime(typeof value === "number" ? value * 1000 : value);
}

/** How an endpoint is doing, from its newest delivery. */
function health(deliveries) {
  const newest = deliveries[0];
  if (!newest) return "new";
  if (newest.status === "delivered") return "ok";
  if (newest.status === "failed") return "failing";
  if (newest.status === "pending") return newest.attempts > 0 ? "retrying" : "sending";
  return "new";
}

export class WebhooksPanel {
  constructor() {
    this.endpoints = [];      // [{endpoint, deliveries}]
    this.watchUntil = 0;
    this.timer = null;
  }

  say(text, kind = "info") {
    announce($("webhook-message"), text, kind);
  }

  start() {
    $("webhook-events").replaceChildren(...EVENT_TYPES.map((type, i) => el("div", { class: "check" },
      el("input", { type: "checkbox", id: `webhook-event-${i}`, name: "events", value: type, checked: true }),
      el("label", { for: `webhook-event-${i}`, text: type }))));
    const secret = $("webhook-secret-value");
    $("webhook-secret-copy-row").append(copyButton(secret, "webhook-secret-copy", $("webhook-message")));
    $("webhook-secret-hide").addEventListener("click", () => {
      secret.value = "";
      $("webhook-secret").hidden = true;
    });
    $("webhook-form").addEventListener("submit", (ev) => { ev.preventDefault(); this.register(); });
    $("webhook-refresh").addEventListener("click", () => this.refresh());
    return this.refresh();
  }

  /** Something happened at the clinic (a live diff): deliveries may follow. */
  changed() {
    this.watch();
  }

  watch() {
    this.watchUntil = Date.now() + WATCH_MS;
    if (!this.timer) this.timer = setTimeout(() => this.tick(), POLL_MS);
  }

  async tick() {
    this.timer = null;
    await this.refresh();
    const pending = this.endpoints.some((e) => e.deliveries.some((d) => d.status === "pending"));
    if (pending || Date.now() < this.watchUntil) this.timer = setTimeout(() => this.tick(), POLL_MS);
  }

  async register() {
    const url = $("webhook-url").value.trim();
    const events = [...document.querySelectorAll("#webhook-events input:checked")].map((i) => i.value);
    if (!events.length) {
      this.say(t("webhooks.events.none"), "error");
      return;
    }
    try {
      const data = await post(BASE, { url, events });
      $("webhook-secret-value").value = data.secret;
      $("webhook-secret").hidden = false;
      $("webhook-url").value = "";
      this.say(t("webhooks.created"), "ok");
      $("webhook-secret-value").focus();
      $("webhook-secret-value").select();
      await this.refresh();
      this.watch();
    } catch (err) {
      this.say(describe(err), "error");
    }
  }

  async remove(endpoint) {
    if (!window.confirm(t("webhooks.delete.confirm", { url: endpoint.url }))) return;
    try {
      await api("DELETE", `${BASE}/${encodeURIComponent(endpoint.id)}`);
      this.say(t("webhooks.deleted"), "ok");
    } catch (err) {
      this.say(describe(err), "error");
    }
    await this.refresh();
  }

  async replay(endpoint, delivery) {
    try {
      await post(`${BASE}/${encodeURIComponent(endpoint.id)}/deliveries/${encodeURIComponent(delivery.id)}/replay`, {});
      this.say(t("webhooks.replayed", { type: delivery.type, sequence: delivery.sequence }), "ok");
    } catch (err) {
      this.say(describe(err), "error");
    }
    await this.refresh();
    this.watch();
  }

  async refresh() {
    try {
      const data = await get(BASE);
      const endpoints = (data && data.endpoints) || [];
      this.endpoints = await Promise.all(endpoints.map(async (endpoint) => {
        const log = await get(`${BASE}/${encodeURIComponent(endpoint.id)}/deliveries${query({ limit: LOG_LIMIT })}`)
          .catch(() => null);
        return { endpoint, deliveries: (log && log.deliveries) || [] };
      }));
    } catch (err) {
      this.say(describe(err), "error");
      return;
    }
    this.render();
  }

  /** The list, changed in place: an endpoint whose data (and language) is unchanged keeps its very
   *  elements, so a poll that brings news about another endpoint never swaps a button out from under
   *  the user's pointer (a click whose press and release land on different buttons is lost). */
  render() {
    const list = $("webhook-list");
    if (!this.endpoints.length) {
      list.replaceChildren(el("li", { class: "muted", text: t("webhooks.none") }));
      return;
    }
    const shown = new Map([...list.children].filter((li) => li.dataset.endpoint).map((li) => [li.dataset.endpoint, li]));
    const items = this.endpoints.map((entry) => {
      const key = `${lang()}|${JSON.stringify(entry)}`;
      const old = shown.get(entry.endpoint.id);
      if (old && old.dataset.key === key) return old;
      const item = this.endpointItem(entry);
      item.dataset.key = key;
      applyTranslations(item);
      return item;
    });
    for (const child of [...list.children]) if (!items.includes(child)) child.remove();
    items.forEach((item, i) => {
      if (list.children[i] !== item) list.insertBefore(item, list.children[i] || null);
    });
  }

  endpointItem({ endpoint, deliveries }) {
    const state = health(deliveries);
    return el("li", { class: "endpoint", dataset: { endpoint: endpoint.id, health: state } },
      el("h3", { class: "endpoint-url", text: endpoint.url }),
      el("p", {}, `${t("webhooks.events")}: `, el("span", { class: "event-types", text: endpoint.events.join(", ") })),
      el("p", {}, `${t("webhooks.health")}: `, el("span", { class: `status health-${state}`, text: t(`webhooks.health.${state}`) }),
        el("span", { class: "muted", text: ` · ${t("webhooks.since", { time: when(endpoint.created_at) })}` })),
      el("p", { class: "actions" }, el("button", {
        type: "button", class: "danger delete", "aria-label": `${t("webhooks.delete")}: ${endpoint.url}`,
        text: t("webhooks.delete"), onclick: () => this.remove(endpoint),
      })),
      el("h4", { text: t("webhooks.log") }),
      this.logTable(endpoint, deliveries));
  }

  logTable(endpoint, deliveries) {
    if (!deliveries.length) return el("p", { class: "muted", text: t("webhooks.log.none") });
    const head = ["event", "sequence", "status", "attempts", "error", "time", "action"]
      .map((k) => el("th", { scope: "col", text: t(`webhooks.log.${k}`) }));
    const rows = deliveries.map((d) => {
      const error = d.last_error ? `${d.last_error}${d.last_status ? ` (HTTP ${d.last_status})` : ""}` : "–";
      return el("tr", { dataset: { delivery: String(d.id), status: d.status, type: d.type } },
        el("td", {}, d.type, d.replay_of ? el("span", { class: "muted", text: ` · ${t("webhooks.log.replay_of", { id: d.replay_of })}` }) : null),
        el("td", { text: `${d.region} #${d.sequence}` }),
        el("td", {}, el("span", { class: `status delivery-${d.status}`, text: t(`webhooks.status.${d.status}`) })),
        el("td", { text: String(d.attempts) }),
        el("td", { class: "error-text", text: error }),
        el("td", { text: when(d.finished_at || d.created_at) }),
        el("td", {}, el("button", {
          type: "button", class: "replay", text: t("webhooks.replay"),
          "aria-label": `${t("webhooks.replay")}: ${d.type} ${d.region} #${d.sequence}`,
          onclick: () => this.replay(endpoint, d),
        })));
    });
    const table = el("table", { class: "deliveries stacks" },
      el("caption", { class: "visually-hidden", text: `${t("webhooks.log")}: ${endpoint.url}` }),
      el("thead", {}, el("tr", {}, ...head)), el("tbody", {}, ...rows));
    labelColumns(table); // rendered again on a change of language
    return el("div", { class: "table-wrap" }, table);
  }
}
