// The clinic's own setup on /staff ("Klinik"): details, resources (add, retire), weekly hours and one
// day's own hours (a holiday, a late evening). Every change goes through /api/clinic/v1/…; the engine
// opens the days ahead from the hours. A change that would strand bookings comes back 409 HAS_BOOKINGS
// with their ids: the panel lists them and offers to cancel them (the patients are told) and apply.

import { ApiError, get, post } from "./api.js";
import { t } from "./i18n.js";
import { announce, el } from "./shell.js";

const $ = (id) => document.getElementById(id);
const KINDS = ["dentist", "hygienist", "chair"];
const WEEKDAYS = [1, 2, 3, 4, 5, 6, 7];

export class ClinicPanel {
  constructor(services) {
    this.services = services; // [{id, name, name_en}]
    this.setup = null;
    this.pending = null; // {path, body, bookings}
  }

  say(text, kind = "info") {
    announce($("setup-message"), text, kind);
  }

  async start() {
    $("setup-kind").replaceChildren(...KINDS.map((k) => el("option", { value: k, text: t(`setup.kind.${k}`) })));
    $("setup-services").replaceChildren(...this.services.map((s, i) => el("div", { class: "check" },
      el("input", { type: "checkbox", id: `setup-service-${i}`, value: s.id }),
      el("label", { for: `setup-service-${i}`, text: s.name }))));
    $("setup-week").replaceChildren(...WEEKDAYS.map((d) => el("div", { class: "field inline" },
      el("label", { for: `setup-day-${d}`, text: t(`setup.weekday.${d}`) }),
      el("input", { id: `setup-day-${d}`, type: "text", inputmode: "numeric", placeholder: "08:00-12:00, 13:00-17:00",
        autocomplete: "off", spellcheck: "false" }))));
    $("setup-details-form").addEventListener("submit", (ev) => { ev.preventDefault(); this.saveDetails(); });
    $("setup-resource-form").addEventListener("submit", (ev) => { ev.preventDefault(); this.addResource(); });
    $("setup-hours-form").addEventListener("submit", (ev) => { ev.preventDefault(); this.saveHours(); });
    $("setup-day-form").addEventListener("submit", (ev) => { ev.preventDefault(); this.saveDay(); });
    $("setup-confirm").addEventListener("click", () => this.confirm());
    this.setup = (await get("/api/clinic/v1/setup")).clinic;
    this.render();
    $("clinic-setup").dataset.ready = "true"; // the forms hold the clinic's values now
  }

  render() {
    const c = this.setup;
    if (!c) return;
    $("setup-name").value = c.name;
    $("setup-address").value = c.address;
    $("setup-phone").value = c.phone;
    $("setup-ahead").value = c.open_ahead_days;
    for (const d of WEEKDAYS) {
      $(`setup-day-${d}`).value = (c.week[String(d)] || []).map((iv) => `${iv.from}-${iv.to}`).join(", ");
    }
    $("setup-resources").replaceChildren(...c.resources.map((r) => el("li", { class: r.retired ? "retired" : "" },
      el("span", { text: `${r.name} · ${t(`setup.kind.${r.kind}`)} · ${r.services.join(", ")}` }),
      r.retired ? el("span", { class: "muted", text: ` (${t("setup.retired")})` })
        : el("button", { type: "button", text: t("setup.retire"),
          onclick: () => this.send(`/api/clinic/v1/resources/${encodeURIComponent(r.id)}/retire`, {}) }))));
    $("setup-exceptions").replaceChildren(...c.exceptions.map((x) => el("li", {
      text: `${x.date}: ${x.hours.length ? x.hours.map((iv) => `${iv.from}-${iv.to}`).join(", ") : t("setup.closed")}`,
    })));
  }

  /** "08:00-12:00, 13:00-17:00" -> [{from, to}]; throws on anything else. */
  intervals(text) {
    const parts = text.split(",").map((p) => p.trim()).filter(Boolean);
    return parts.map((p) => {
      const m = p.match(/^(\d{1,2}):?(\d{2})\s*[-–]\s*(\d{1,2}):?(\d{2})$/);
      if (!m) throw new Error(t("setup.hours.invalid"));
      const pad = (h, mm) => `${h.padStart(2, "0")}:${mm}`;
      return { from: pad(m[1], m[2]), to: pad(m[3], m[4]) };
    });
  }

  async send(path, body) {
    $("setup-conflict").hidden = true;
    try {
      this.setup = (await post(path, body)).clinic;
      this.render();
      this.say(t("setup.saved"), "ok");
      return true;
    } catch (err) {
      if (err instanceof ApiError && err.code === "HAS_BOOKINGS") {
        this.pending = { path, body, bookings: err.bookings || [] };
        $("setup-conflict-list").replaceChildren(...this.pending.bookings.map((b) => el("li", { text: b })));
        $("setup-conflict").hidden = false;
        this.say(t("setup.conflict"), "error");
      } else {
        this.say(err instanceof ApiError ? err.describe() + (err.message ? ` (${err.message})` : "") : String(err), "error");
      }
      return false;
    }
  }

  confirm() {
    const p = this.pending;
    if (!p) return;
    this.pending = null;
    this.send(p.path, { ...p.body, cancel: p.bookings });
  }

  saveDetails() {
    return this.send("/api/clinic/v1/setup/details", {
      name: $("setup-name").value,
      address: $("setup-address").value,
      phone: $("setup-phone").value.trim(),
      open_ahead_days: Number($("setup-ahead").value),
    });
  }

  async addResource() {
    const services = [...$("setup-services").querySelectorAll("input:checked")].map((i) => i.value);
    if (await this.send("/api/clinic/v1/resources", { kind: $("setup-kind").value, name: $("setup-rname").value, services })) {
      $("setup-rname").value = "";
    }
  }

  saveHours() {
    const week = {};
    try {
      for (const d of WEEKDAYS) week[String(d)] = this.intervals($(`setup-day-${d}`).value);
    } catch (err) {
      this.say(err.message, "error");
      return null;
    }
    return this.send("/api/clinic/v1/hours", { week });
  }

  saveDay() {
    const date = $("setup-day-date").value;
    const text = $("setup-day-hours").value.trim();
    let hours;
    try {
      hours = $("setup-day-closed").checked ? [] : text ? this.intervals(text) : null;
    } catch (err) {
      this.say(err.message, "error");
      return null;
    }
    return this.send("/api/clinic/v1/day-hours", { date, hours });
  }
}
