// /staff: a clinic account sees its day. Resources by time, bookings with patient names (names appear only
// on this page, fetched from /api/clinic/v1/day, never from the live diffs), block and unblock time,
// cancel, mark no-show. The clinic topic tells the page when to fetch the day again (and the webhooks panel
// to look for new deliveries). Below the day: the clinic's calendar feed and its webhooks.

import { ApiError, get, post, query } from "./api.js";
import { BOOKED } from "./booking-status.js";
import { applyTranslations, lang, onLangChange, t } from "./i18n.js";
import { LiveConnection } from "./live.js";
import { feedControl } from "./feed-control.js";
import { authForm, currentUser, userBar } from "./session.js";
import { AccountsPanel } from "./clinic-accounts.js";
import { ClinicPanel } from "./staff-clinic.js";
import { WebhooksPanel } from "./staff-webhooks.js";
import { announce, el, mountShell } from "./shell.js";
import { formatTime, todayIso, wallClock } from "./stockholm.js";

const live = new LiveConnection();
mountShell({ active: "/staff", live });
live.start();

const $ = (id) => document.getElementById(id);
let user = null;
let day = null;
let services = [];
let reloadTimer = null;
let dayAsked = 0; // numbers each loadDay: only the latest one's answer is shown
let dayLoads = 0; // loads not yet answered: the bookings table is aria-busy meanwhile
const webhooks = new WebhooksPanel();

function say(text, kind = "info") {
  announce($("staff-message"), text, kind);
}

function serviceName(id) {
  const s = services.find((x) => x.id === id);
  if (!s) return id;
  return lang() === "en" && s.name_en ? s.name_en : s.name;
}

function minuteText(minute) {
  return `${String(Math.floor(minute / 60)).padStart(2, "0")}:${String(minute % 60).padStart(2, "0")}`;
}

function minuteOf(iso) {
  const m = /T(\d{2}):(\d{2})/.exec(iso);
  return m ? Number(m[1]) * 60 + Number(m[2]) : 0;
}

/**
 * Fetch and show the day the date field names. Loads overlap (a change of date, a live diff, an action), and
 * their answers can come in any order: an answer to an earlier load is dropped, so the day shown is always the
 * latest one asked for, never a date the staff have left.
 */
async function loadDay() {
  const date = $("staff-date").value || todayIso();
  const asked = ++dayAsked;
  setDayBusy(+1);
  try {
    const answer = await get(`/api/clinic/v1/day${query({ date })}`);
    if (asked === dayAsked) {
      day = answer;
      renderDay();
    }
  } catch (err) {
    if (asked === dayAsked) say(err instanceof ApiError ? err.describe() : String(err), "error");
  } finally {
    setDayBusy(-1);
  }
}

function setDayBusy(change) {
  dayLoads += change;
  $("bookings-table").setAttribute("aria-busy", String(dayLoads > 0));
}

function scheduleReload() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(loadDay, 250);
}

function renderDay() {
  if (!day) return;
  const cm = day.cell_minutes;
  const resources = day.resources || [];
  const open = resources.flatMap((r) => [...r.cells].map((c, i) => (c !== "0" ? i : -1)).filter((i) => i >= 0));
  const first = open.length ? Math.min(...open) : 0;
  const last = open.length ? Math.max(...open) : -1;
  const bookingAt = new Map();
  for (const b of day.bookings || []) bookingAt.set(`${b.resource}@${Math.floor(minuteOf(b.start) / cm)}`, b);
  const head = el("tr", {}, el("th", { scope: "col", text: t("staff.time") }),
    ...resources.map((r) => el("th", { scope: "col", text: r.name })));
  const rows = [];
  for (let i = first; i <= last; i++) {
    rows.push(el("tr", {}, el("th", { scope: "row", text: minuteText(i * cm) }),
      ...resources.map((r) => {
        const state = r.cells[i] || "0";
        const booking = bookingAt.get(`${r.id}@${i}`);
        const text = booking ? `${booking.patient_name || ""} · ${serviceName(booking.service)}` : t(`cell.${state}`);
        return el("td", { class: `cell s${state}`, dataset: { resource: r.id, cell: String(i), state }, text });
      })));
  }
  $("day-table").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
  $("block-resource").replaceChildren(...resources.map((r) => el("option", { value: r.id }, r.name)));
  $("block-minutes").step = String(cm);
  if (!$("block-minutes").value) $("block-minutes").value = String(cm * 4);

  const bookings = (day.bookings || []).slice().sort((a, b) => Date.parse(a.start) - Date.parse(b.start));
  const names = Object.fromEntries(resources.map((r) => [r.id, r.name]));
  $("bookings-body").replaceChildren(...(bookings.length ? bookings.map((b) => {
    const when = `${formatTime(b.start)}–${formatTime(b.end)}`;
    const active = b.status === BOOKED;
    const statusKey = `me.status.${b.status}`;
    // data-label names each cell's column where a phone shows the row as a card (table.stacks).
    const cell = (key, text) => el("td", { dataset: { label: t(key) }, text });
    return el("tr", { dataset: { booking: b.id } },
      cell("staff.time", when), cell("staff.resource", names[b.resource] || b.resource),
      cell("staff.service", serviceName(b.service)), cell("staff.patient", b.patient_name || ""),
      cell("staff.status", t(statusKey) === statusKey ? b.status : t(statusKey)),
      el("td", {}, active ? el("span", { class: "actions" },
        el("button", { type: "button", class: "danger", "aria-label": `${t("staff.cancel")} ${when}`, text: t("staff.cancel"),
          onclick: () => cancelBooking(b) }),
        el("button", { type: "button", "aria-label": `${t("staff.noshow")} ${when}`, text: t("staff.noshow"),
          onclick: () => markNoShow(b) })) : ""));
  }) : [el("tr", {}, el("td", { colspan: "6", class: "muted", text: t("staff.none") }))]));
}

async function act(path, body) {
  try {
    await post(path, body);
    say(t("staff.done"), "ok");
    await loadDay();
  } catch (err) {
    say(err instanceof ApiError ? err.describe() : String(err), "error");
  }
}

/**
 * Cancelling a patient's booking is asked first in a dialog naming the patient and the time (the patient is
 * told), with an optional reason that the patient sees in their e-mail and under "Mina bokningar".
 */
function cancelBooking(b) {
  const dialog = $("cancel-dialog");
  const when = `${formatTime(b.start)}–${formatTime(b.end)}`;
  $("cancel-what").textContent = t("staff.cancel.confirm", { patient: b.patient_name || "", time: when });
  $("cancel-reason").value = "";
  dialog.returnValue = "";
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "cancel") return;
    // One line, as the server takes it: line breaks and tabs become spaces.
    const reason = $("cancel-reason").value.replace(/\s+/g, " ").trim();
    await act(`/api/clinic/v1/bookings/${encodeURIComponent(b.id)}/cancel`, reason ? { reason } : {});
  }, { once: true });
  dialog.showModal();
  $("cancel-reason").focus();
}

/** Blocking over a booking is refused (SLOT_TAKEN): name the bookings in the way, from the day on screen. */
async function block() {
  const body = blockBody();
  try {
    await post("/api/clinic/v1/block", body);
    say(t("staff.done"), "ok");
    await loadDay();
  } catch (err) {
    if (err instanceof ApiError && err.code === "SLOT_TAKEN") {
      const from = Date.parse(body.start);
      const to = from + body.minutes * 60000;
      const inWay = ((day && day.bookings) || []).filter((b) => b.resource === body.resource
        && b.status === BOOKED && Date.parse(b.start) < to && Date.parse(b.end) > from);
      const named = inWay.map((b) => `${formatTime(b.start)}–${formatTime(b.end)} ${b.patient_name || ""} (${serviceName(b.service)})`);
      say(named.length ? t("staff.block.taken", { bookings: named.join(", ") }) : t("staff.block.taken.unknown"), "error");
    } else {
      say(err instanceof ApiError ? err.describe() : String(err), "error");
    }
  }
}

/** The server refuses a no-show (422 INVALID) before the appointment has started: say why, plainly. */
async function markNoShow(b) {
  try {
    await post(`/api/clinic/v1/bookings/${encodeURIComponent(b.id)}/no-show`, {});
    say(t("staff.noshow.done"), "ok");
    await loadDay();
  } catch (err) {
    if (err instanceof ApiError && err.code === "INVALID") {
      const early = Date.parse(b.start) > Date.now();
      say(early ? t("staff.noshow.early", { time: formatTime(b.start) }) : t("staff.noshow.notbooked"), "error");
    } else {
      say(err instanceof ApiError ? err.describe() : String(err), "error");
    }
  }
}

function blockBody() {
  const [h, m] = ($("block-start").value || "12:00").split(":").map(Number);
  return {
    resource: $("block-resource").value,
    start: wallClock($("staff-date").value || todayIso(), h * 60 + m).iso,
    minutes: Number($("block-minutes").value),
  };
}

function subscribeDay() {
  const date = $("staff-date").value || todayIso();
  live.subscribe(`clinic:${user.clinic}`, { from: date, days: 1 }, (msg) => {
    if (msg.type === "diff") {
      scheduleReload();
      webhooks.changed();
    }
  });
}

async function signedIn(u) {
  user = u;
  userBar($("userbar"), user, () => location.reload());
  if (!["staff", "clinic_admin"].includes(user.role) || !user.clinic) {
    say(t("staff.notstaff"), "error");
    return;
  }
  say("");
  $("staff-day").hidden = false;
  const clinic = await get(`/api/clinics/${encodeURIComponent(user.clinic)}`).catch(() => null);
  $("staff-clinic").textContent = clinic ? clinic.name : user.clinic;
  await loadDay();
  subscribeDay();
  feedControl($("staff-feed"), { tokenPath: "/api/clinic/v1/ical-token", idPrefix: "staff-feed", intro: "staff.feed.intro" });
  await webhooks.start();
  // The clinic's setup, accounts and key are its admin's; staff see a line saying so.
  $("clinic-setup").hidden = false;
  if (user.role !== "clinic_admin") {
    $("setup-staff-note").hidden = false;
    return;
  }
  $("setup-admin").hidden = false;
  await new ClinicPanel(services).start();
  await new AccountsPanel(user).start();
}

async function main() {
  $("staff-date").value = todayIso();
  $("staff-date").addEventListener("change", () => { loadDay(); subscribeDay(); });
  $("block").addEventListener("click", block);
  $("unblock").addEventListener("click", () => act("/api/clinic/v1/unblock", blockBody()));
  services = await get("/api/services").catch(() => []);
  onLangChange(() => { renderDay(); webhooks.render(); });
  const u = await currentUser().catch(() => null);
  if (u) await signedIn(u);
  else {
    say(t("staff.notstaff"));
    await signedIn(await authForm($("signin"), { allowRegister: false, idPrefix: "staff-auth" }));
  }
  applyTranslations(document);
}

main();
