// The clinic's own setup on /staff ("Klinik"): details, resources (add, retire), weekly hours and one
// day's own hours (a holiday, a late evening). Every change goes through /api/clinic/v1/…; the engine
// opens the days ahead from the hours. A change that would strand bookings comes back 409 HAS_BOOKINGS
// with their ids: the panel lists them and offers to cancel them (the patients are told) and apply.
// The hours forms are for the clinic or, chosen in "Tider för", one resource: "Samma som kliniken"
// (it follows the clinic's week) or its own week, and its own days (leave, a late evening).

import { ApiError, get, post } from "./api.js";
import { onLangChange, t } from "./i18n.js";
import { announce, el } from "./shell.js";

const $ = (id) => document.getElementById(id);
const KINDS = ["dentist", "hygienist", "chair"];
const WEEKDAYS = [1, 2, 3, 4, 5, 6, 7];

export class ClinicPanel {
  constructor(services) {
    this.services = services; // [{id, name, name_en}]
    this.setup = null;
    this.pending = null; // {path, body, bookings}
    this.owner = ""; // whose hours the hours forms show: "" the clinic's, else a resource id
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
    $("setup-hours-for").addEventListener("change", () => { this.owner = $("setup-hours-for").value; this.renderHours(); });
    for (const id of ["setup-own-same", "setup-own-own"]) {
      $(id).addEventListener("change", () => this.renderWeekInputs());
    }
    onLangChange(() => this.renderResources());
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
    this.renderResources();
    this.renderHours();
  }

  /** The resource list and the "Tider för" choice (their words only: no input is touched). */
  renderResources() {
    const c = this.setup;
    if (!c) return;
    $("setup-resources").replaceChildren(...c.resources.map((r) => el("li", { class: r.retired ? "retired" : "" },
      el("span", { text: `${r.name} · ${t(`setup.kind.${r.kind}`)} · ${r.services.join(", ")}` }),
      r.retired ? el("span", { class: "muted", text: ` (${t("setup.retired")})` }) : el("span", { class: "muted",
        text: ` · ${t(r.week ? "setup.own.own" : "setup.own.same")}${r.exceptions.length ? ` + ${t("setup.own.days", { n: r.exceptions.length })}` : ""} ` }),
      r.retired ? null : el("span", { class: "actions" },
        el("button", { type: "button", text: t("setup.hours.edit"), "aria-label": t("setup.hours.edit.for", { name: r.name }),
          onclick: () => this.editHoursOf(r.id) }),
        el("button", { type: "button", text: t("setup.retire"),
          onclick: () => this.send(`/api/clinic/v1/resources/${encodeURIComponent(r.id)}/retire`, {}) })))));
    const live = c.resources.filter((r) => !r.retired);
    if (!live.some((r) => r.id === this.owner)) this.owner = "";
    $("setup-hours-for").replaceChildren(el("option", { value: "", text: t("setup.hours.clinic") }),
      ...live.map((r) => el("option", { value: r.id, text: `${r.name} (${t(`setup.kind.${r.kind}`)})` })));
    $("setup-hours-for").value = this.owner;
    $("setup-day-hours-label").textContent = t(this.owner ? "setup.day.hours.resource" : "setup.day.hours");
  }

  /** The resource whose hours the forms show, or null for the clinic's. */
  resource() {
    return this.owner ? this.setup.resources.find((r) => r.id === this.owner) || null : null;
  }

  editHoursOf(rid) {
    this.owner = rid;
    $("setup-hours-for").value = rid;
    this.renderHours();
    $("setup-hours-for").scrollIntoView({ block: "start" });
    $("setup-hours-for").focus();
  }

  renderHours() {
    const c = this.setup;
    const r = this.resource();
    $("setup-own").hidden = !r;
    if (r) {
      $("setup-own-same").checked = !r.week;
      $("setup-own-own").checked = !!r.week;
    }
    this.renderWeekInputs();
    const days = r ? r.exceptions : c.exceptions;
    $("setup-exceptions").replaceChildren(...days.map((x) => el("li", {
      text: `${x.date}: ${x.hours.length ? x.hours.map((iv) => `${iv.from}-${iv.to}`).join(", ") : t("setup.closed")}`,
    })));
    $("setup-day-hours-label").textContent = t(r ? "setup.day.hours.resource" : "setup.day.hours");
  }

  /** The weekday inputs: the clinic's week, or the resource's own (its own, or the clinic's to start
   * from and read-only while it follows the clinic's). */
  renderWeekInputs() {
    const c = this.setup;
    const r = this.resource();
    const same = !!r && $("setup-own-same").checked;
    const week = r && r.week ? r.week : c.week;
    for (const d of WEEKDAYS) {
      const input = $(`setup-day-${d}`);
      input.value = (week[String(d)] || []).map((iv) => `${iv.from}-${iv.to}`).join(", ");
      input.disabled = same;
    }
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

  /** Where the hours of the chosen owner are sent: the clinic's, or ".../resources/{id}/" + what. */
  hoursPath(what) {
    return this.owner ? `/api/clinic/v1/resources/${encodeURIComponent(this.owner)}/${what}` : `/api/clinic/v1/${what}`;
  }

  saveHours() {
    if (this.owner && $("setup-own-same").checked) return this.send(this.hoursPath("hours"), { week: null });
    const week = {};
    try {
      for (const d of WEEKDAYS) week[String(d)] = this.intervals($(`setup-day-${d}`).value);
    } catch (err) {
      this.say(err.message, "error");
      return null;
    }
    return this.send(this.hoursPath("hours"), { week });
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
    return this.send(this.hoursPath("day-hours"), { date, hours });
  }
}
