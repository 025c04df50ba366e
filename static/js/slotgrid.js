// A live grid of free start times per day for one clinic and service. It subscribes to the clinic topic,
// keeps the cell strings current from diffs and updates the grid in place: a time that becomes free is
// added and briefly highlighted, a time that is taken disappears (its day flashes so the change is seen).
// Used by the clinic page (book) and by my bookings (move a booking).

import { ApiError } from "./api.js";
import { applyTranslations, onLangChange, t } from "./i18n.js";
import { applyCellDiff, clinicCells, freeTimes } from "./freetimes.js";
import { addDays, formatDate, formatTime, todayIso } from "./stockholm.js";
import { el } from "./shell.js";

const HIGHLIGHT_MS = 1600;

/**
 * attempt(resource) on each of a picked time's free resources in turn while the server answers SLOT_TAKEN (one
 * taken a moment ago passes the patient's choice to the next): a time is only "taken" when every resource is.
 * Resolves with the first success; rejects with the last refusal, or at once with any other error.
 */
export async function onAnyResource(time, attempt) {
  const resources = time.resources && time.resources.length ? time.resources : [time.resource];
  for (let i = 0; ; i++) {
    try {
      return await attempt(resources[i]);
    } catch (err) {
      if (!(err instanceof ApiError && err.code === "SLOT_TAKEN") || i + 1 >= resources.length) throw err;
    }
  }
}

export class LiveSlotGrid {
  /**
   * container: element to render into; live: LiveConnection; clinic: details from /api/clinics/{id};
   * service: {id, minutes}; onPick({start, resource, date}) is called when a time is chosen.
   * minLeadMs: times starting sooner than this from now are left out (moving a booking never offers a time
   * inside the clinic's cancellation notice, where it could no longer be changed online).
   */
  constructor({ container, live, clinic, service, from = todayIso(), days = 7, onPick, idPrefix = "grid", minLeadMs = 0 }) {
    this.minLeadMs = minLeadMs;
    this.container = container;
    this.live = live;
    this.clinic = clinic;
    this.service = service;
    this.from = from;
    this.days = days;
    this.onPick = onPick;
    this.idPrefix = idPrefix;
    this.cells = null;
    this.topic = `clinic:${clinic.id}`;
    this.resourceNames = Object.fromEntries((clinic.resources || []).map((r) => [r.id, r.name]));
    this.taken = new Set(); // starts the server refused as taken, shown struck through until the next render
    this.refreshTimer = setInterval(() => this.render(false), 30000); // times in the past drop off
    onLangChange(() => this.render(false, true));
  }

  start() {
    this.container.setAttribute("aria-busy", "true");
    this.container.replaceChildren(el("p", { class: "muted", text: t("loading") }));
    this.live.subscribe(this.topic, { from: this.from, days: this.days }, (msg) => this.onMessage(msg));
  }

  stop() {
    this.live.unsubscribe(this.topic);
    clearInterval(this.refreshTimer);
  }

  setService(service) {
    this.service = service;
    this.taken.clear();
    this.render(false, true);
  }

  resourceIds() {
    return (this.clinic.resources || [])
      .filter((r) => !r.services || r.services.includes(this.service.id))
      .map((r) => r.id);
  }

  dates() {
    return Array.from({ length: this.days }, (_, i) => addDays(this.from, i));
  }

  onMessage(msg) {
    if (msg.type === "snapshot") {
      this.cells = clinicCells(msg.data);
      this.taken.clear();
      this.render(false, false);
    } else if (this.cells) {
      applyCellDiff(this.cells, msg.data.cells || []);
      this.render(true, false);
    }
  }

  /** The server said this start is taken: show it struck through until live data removes it. */
  markTaken(start) {
    this.taken.add(start);
    const button = this.container.querySelector(`button.slot[data-start="${CSS.escape(start)}"]`);
    if (button) {
      button.classList.add("taken");
      button.disabled = true;
    }
  }

  render(highlight, rebuild = false) {
    if (!this.cells) return;
    this.container.removeAttribute("aria-busy");
    const byDate = freeTimes(this.cells, {
      serviceMinutes: this.service.minutes, resourceIds: this.resourceIds(), dates: this.dates(),
    });
    if (rebuild || !this.container.querySelector(".days")) {
      this.container.replaceChildren(el("div", { class: "days" }));
    }
    const daysEl = this.container.querySelector(".days");
    const today = todayIso();
    for (const date of this.dates()) {
      let dayEl = daysEl.querySelector(`section.day[data-date="${date}"]`);
      if (!dayEl) {
        const headingId = `${this.idPrefix}-day-${date}`;
        const label = date === today ? `${t("today")}, ${formatDate(date)}` : formatDate(date);
        dayEl = el("section", { class: "day", dataset: { date }, "aria-labelledby": headingId },
          el("h3", { id: headingId, text: label }),
          el("ul", { class: "times" }),
          el("p", { class: "none muted", text: t("clinic.times.none") }));
        daysEl.append(dayEl);
      }
      const earliest = Date.now() + this.minLeadMs;
      const times = (byDate.get(date) || []).filter((x) => !this.minLeadMs || x.millis >= earliest);
      this.renderDay(dayEl, times, highlight);
    }
    applyTranslations(this.container);
  }

  renderDay(dayEl, times, highlight) {
    const list = dayEl.querySelector("ul.times");
    const existing = new Map([...list.querySelectorAll("button.slot")].map((b) => [b.dataset.start, b]));
    const wanted = new Set(times.map((x) => x.start));
    let removed = 0;
    for (const [start, button] of existing) {
      if (wanted.has(start)) continue;
      // Live data now agrees the time is gone (the "taken" strike-through has done its job).
      this.taken.delete(start);
      button.closest("li").remove();
      existing.delete(start);
      removed += 1;
    }
    let previous = null;
    for (const time of times) {
      let button = existing.get(time.start);
      const label = t("clinic.time.label", {
        time: formatTime(time.millis), date: formatDate(time.date), resource: this.resourceNames[time.resource] || "",
      });
      if (!button) {
        button = el("button", {
          type: "button", class: "slot", dataset: { start: time.start, resource: time.resource, date: time.date },
          onclick: () => this.onPick({
            start: button.dataset.start, resource: button.dataset.resource, date: time.date,
            resources: (button.dataset.resources || button.dataset.resource).split(" "),
          }),
        });
        const item = el("li", {}, button);
        if (previous) previous.closest("li").after(item);
        else list.prepend(item);
        if (highlight) this.flash(button, "fresh");
      } else if (button.dataset.resource !== time.resource) {
        button.dataset.resource = time.resource;
      }
      button.dataset.resources = time.resources.join(" "); // every resource free then, tried in turn
      const taken = this.taken.has(time.start);
      button.classList.toggle("taken", taken);
      button.disabled = taken;
      button.textContent = formatTime(time.millis);
      button.setAttribute("aria-label", label);
      previous = button;
    }
    dayEl.classList.toggle("empty", list.children.length === 0);
    if (highlight && removed) this.flash(dayEl, "changed");
  }

  flash(node, cls) {
    node.classList.add(cls);
    setTimeout(() => node.classList.remove(cls), HIGHLIGHT_MS);
  }
}
