// "Kliniker" on /admin: find a clinic among all of them (name, id, municipality), register a new one
// (POST /api/admin/clinics; the clinic is closed until it sets its hours and resources on /staff), and
// suspend or reinstate one (a suspended clinic takes no new bookings; its bookings stay).

import { ApiError, get, post } from "./api.js";
import { t } from "./i18n.js";
import { announce, el, labelColumns } from "./shell.js";

const $ = (id) => document.getElementById(id);
const SERVICES = ["checkup", "cleaning", "emergency", "filling", "child_checkup"];

export class ClinicsPanel {
  constructor() {
    this.clinics = [];
  }

  say(text, kind = "info") {
    announce($("clinics-message"), text, kind);
  }

  async start() {
    $("clinics-find").addEventListener("input", () => this.render());
    $("clinic-register-form").addEventListener("submit", (ev) => { ev.preventDefault(); this.register(); });
    await this.refresh();
  }

  async refresh() {
    this.clinics = await get("/api/admin/clinics");
    this.render();
  }

  render() {
    const needle = $("clinics-find").value.trim().toLowerCase();
    const found = this.clinics.filter((c) => !needle
      || [c.name, c.id, c.municipality_name, c.address].some((v) => String(v).toLowerCase().includes(needle)));
    $("clinics-list").replaceChildren(...found.slice(0, 50).map((c) => el("tr", { dataset: { clinic: c.id } },
      el("td", { text: c.name }), el("td", { text: c.id }), el("td", { text: c.municipality_name }),
      el("td", { text: String(c.resources ?? "") }),
      el("td", {},
        c.suspended ? el("span", { class: "badge suspended", text: t("clinics.suspended") }) : null,
        el("button", {
          type: "button", class: c.suspended ? "" : "danger",
          text: t(c.suspended ? "clinics.unsuspend" : "clinics.suspend"),
          "aria-label": `${t(c.suspended ? "clinics.unsuspend" : "clinics.suspend")}: ${c.name}`,
          onclick: () => this.suspend(c, !c.suspended),
        })))));
    labelColumns($("clinics-table"));
    $("clinics-count").textContent = t("clinics.count", { shown: Math.min(found.length, 50), total: found.length });
  }

  async suspend(clinic, suspended) {
    if (suspended && !window.confirm(t("clinics.suspend.confirm", { name: clinic.name }))) return;
    try {
      await post(`/api/admin/clinics/${encodeURIComponent(clinic.id)}/suspend`, { suspended });
      this.say(t(suspended ? "clinics.suspended.done" : "clinics.unsuspended.done", { name: clinic.name }), "ok");
      await this.refresh();
    } catch (err) {
      this.say(err instanceof ApiError ? err.describe() : String(err), "error");
    }
  }

  async register() {
    const body = {
      name: $("clinic-new-name").value,
      region: $("clinic-new-region").value.trim().toUpperCase(),
      municipality: $("clinic-new-municipality").value.trim(),
      municipality_name: $("clinic-new-municipality-name").value,
      address: $("clinic-new-address").value,
      lat: Number($("clinic-new-lat").value),
      lon: Number($("clinic-new-lon").value),
      kind: $("clinic-new-kind").value,
      services: SERVICES,
    };
    try {
      const { clinic } = await post("/api/admin/clinics", body);
      this.say(t("clinics.registered", { id: clinic.id }), "ok");
      $("clinic-register-form").reset();
      await this.refresh();
    } catch (err) {
      this.say(err instanceof ApiError ? `${err.describe()}${err.field ? ` (${err.field})` : ""}` : String(err), "error");
    }
  }
}
