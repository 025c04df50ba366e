// /me: sign in or register; upcoming and past bookings; cancel; move to another live time;
// "tell me when a time opens" for a clinic and date range; a private calendar feed URL.
// Live: the "me" topic brings booking events.

import { ApiError, del, get, post, query } from "./api.js";
import { BOOKED } from "./booking-status.js";
import { applyTranslations, lang, onLangChange, t } from "./i18n.js";
import { LiveConnection } from "./live.js";
import { feedControl } from "./feed-control.js";
import { authForm, currentUser, userBar } from "./session.js";
import { announce, el, mountShell } from "./shell.js";
import { LiveSlotGrid, onAnyResource } from "./slotgrid.js";
import { addDays, formatDate, formatDateTime, formatTime, todayIso } from "./stockholm.js";

const live = new LiveConnection();
mountShell({ active: "/me", live });
live.start();

const $ = (id) => document.getElementById(id);
let user = null;
let services = [];
let bookings = [];
let missingRegions = []; // regions that could not answer /api/bookings: their bookings are not in the list
let mover = null; // {booking, grid}
const clinicDetails = new Map(); // clinic id -> details from /api/clinics/{id} (phone, cancel_notice_hours)

function say(text, kind = "info") {
  announce($("me-message"), text, kind);
}

function serviceName(id) {
  const s = services.find((x) => x.id === id);
  if (!s) return id;
  return lang() === "en" && s.name_en ? s.name_en : s.name;
}

function describe(err) {
  return err instanceof ApiError ? err.describe() : String(err);
}

async function loadBookings() {
  const data = await get("/api/bookings");
  bookings = data.bookings || [];
  missingRegions = data.missing_regions || [];
  const wanted = [...new Set(bookings.filter((b) => b.status === BOOKED).map((b) => b.clinic))]
    .filter((id) => !clinicDetails.has(id));
  await Promise.all(wanted.map((id) => clinicOf(id).catch(() => null)));
  renderBookings();
}

async function clinicOf(id) {
  if (!clinicDetails.has(id)) clinicDetails.set(id, await get(`/api/clinics/${encodeURIComponent(id)}`));
  return clinicDetails.get(id);
}

/** The clinic's cancellation notice in ms (the server refuses a patient's change inside it). */
function noticeMs(clinic) {
  return (clinic?.cancel_notice_hours || 0) * 3600 * 1000;
}

/** Inside the notice window the booking can no longer be changed online: say so, with the clinic's phone. */
function tooLateText(clinic) {
  return clinic?.phone ? t("me.too_late.call", { phone: clinic.phone }) : t("error.TOO_LATE");
}

function bookingItem(b, upcoming) {
  const when = `${formatDateTime(b.start)}–${formatTime(b.end)}`;
  const statusKey = `me.status.${b.status}`;
  const status = t(statusKey) === statusKey ? b.status : t(statusKey);
  const clinic = clinicDetails.get(b.clinic);
  const locked = upcoming && b.status === BOOKED && clinic && Date.parse(b.start) - Date.now() < noticeMs(clinic);
  const actions = locked
    ? el("p", { class: "locked muted", text: tooLateText(clinic) })
    : upcoming && b.status === BOOKED
    ? el("p", { class: "actions" },
      el("button", { type: "button", class: "move", "aria-label": `${t("me.move")}: ${when}`, text: t("me.move"), onclick: () => openMover(b) }),
      el("button", { type: "button", class: "cancel danger", "aria-label": `${t("me.cancel")}: ${when}`, text: t("me.cancel"), onclick: () => cancel(b) }))
    : null;
  // A clinic's or support's cancellation says who cancelled, and why when they wrote a reason.
  const byOther = b.status === "cancelled" && (b.cancelled_by === "clinic" || b.cancelled_by === "admin");
  const cancelNote = byOther
    ? el("p", { class: "cancel-note" }, t(`me.cancelled_by.${b.cancelled_by}`),
      b.cancel_reason ? [" ", el("span", { class: "cancel-reason", text: t("me.cancel_reason", { reason: b.cancel_reason }) })] : null)
    : null;
  return el("li", { dataset: { booking: b.id, status: b.status } },
    el("p", {}, el("strong", { text: when }), " ", el("span", { class: "status", text: status })),
    cancelNote,
    el("p", {}, el("a", { href: `/clinic/${encodeURIComponent(b.clinic)}?service=${encodeURIComponent(b.service)}`, text: b.clinic_name || b.clinic }),
      ` · ${serviceName(b.service)}`),
    el("p", { class: "muted" }, `${t("clinic.booking.id")}: ${b.id} · `,
      el("a", { href: `/api/bookings/${encodeURIComponent(b.id)}/ics`, download: `${b.id}.ics`, text: t("clinic.booked.ics") })),
    actions);
}

function renderBookings() {
  const now = Date.now();
  const upcoming = bookings.filter((b) => Date.parse(b.end) > now && b.status === BOOKED)
    .sort((a, b) => Date.parse(a.start) - Date.parse(b.start));
  const past = bookings.filter((b) => !upcoming.includes(b)).sort((a, b) => Date.parse(b.start) - Date.parse(a.start));
  const fill = (id, list, isUpcoming) => {
    $(id).replaceChildren(...(list.length ? list.map((b) => bookingItem(b, isUpcoming)) : [el("li", { class: "muted", text: t("me.none") })]));
  };
  fill("upcoming", upcoming, true);
  fill("past", past, false);
  const missing = missingRegions.length ? t("me.missing", { regions: missingRegions.join(", ") }) : "";
  announce($("missing-regions"), missing, "error");
}

async function cancel(b) {
  if (!window.confirm(t("me.cancel.confirm", { time: formatDateTime(b.start) }))) return;
  try {
    await post(`/api/bookings/${encodeURIComponent(b.id)}/cancel`, {});
    say(t("me.cancelled"), "ok");
    await loadBookings();
  } catch (err) {
    await sayRefusal(b, err);
  }
}

async function sayRefusal(b, err) {
  if (err instanceof ApiError && err.code === "TOO_LATE") {
    say(tooLateText(await clinicOf(b.clinic).catch(() => null)), "error");
    await loadBookings().catch(() => null);
  } else {
    say(describe(err), "error");
  }
}

async function openMover(b) {
  closeMover();
  const clinic = await get(`/api/clinics/${encodeURIComponent(b.clinic)}`).catch((err) => { say(describe(err), "error"); return null; });
  if (!clinic) return;
  const panel = $("move-panel");
  const service = services.find((s) => s.id === b.service) || { id: b.service, minutes: Math.round((Date.parse(b.end) - Date.parse(b.start)) / 60000) };
  panel.hidden = false;
  $("move-what").textContent = `${clinic.name} · ${serviceName(b.service)} · ${formatDateTime(b.start)}`;
  $("move-rule").textContent = t("me.move.rule", { hours: clinic.cancel_notice_hours });
  const grid = new LiveSlotGrid({
    container: $("move-grid"), live, clinic, service, from: todayIso(), days: 7, idPrefix: "move",
    minLeadMs: noticeMs(clinic),
    onPick: (time) => reschedule(b, time),
  });
  mover = { booking: b, grid };
  grid.start();
  $("move-title").focus();
}

function closeMover() {
  if (mover) mover.grid.stop();
  mover = null;
  $("move-panel").hidden = true;
  $("move-grid").replaceChildren();
}

async function reschedule(b, time) {
  try {
    const data = await onAnyResource(time, (resource) =>
      post(`/api/bookings/${encodeURIComponent(b.id)}/reschedule`, { resource, start: time.start }));
    closeMover();
    say(t("me.moved", { time: formatDateTime(data.booking.start) }), "ok");
    await loadBookings();
  } catch (err) {
    if (err instanceof ApiError && err.code === "SLOT_TAKEN") {
      mover?.grid.markTaken(time.start);
      say(t("clinic.taken"), "error");
    } else {
      if (err instanceof ApiError && err.code === "TOO_LATE") closeMover();
      await sayRefusal(b, err);
    }
  }
}

// ---- wait-list offers: a time held for this patient alone, for the clinic's offer window ---------------

async function loadOffers() {
  const data = await get("/api/holds").catch(() => null);
  const offers = ((data && data.holds) || []).filter((h) => h.offer);
  $("offers").replaceChildren(...offers.map((h) => {
    const when = `${formatDateTime(h.start)}–${formatTime(h.end)}`;
    return el("li", { dataset: { hold: h.id } },
      el("p", {}, el("strong", { text: when }), ` · ${h.clinic_name || h.clinic} · ${serviceName(h.service)}`),
      el("p", { class: "muted", text: t("me.offer.until", { time: formatTime(h.expires_at) }) }),
      el("p", { class: "actions" }, el("button", {
        type: "button", class: "primary", "aria-label": `${t("me.offer.book")}: ${when}`, text: t("me.offer.book"),
        onclick: async () => {
          try {
            await post("/api/bookings", { hold: h.id });
            say(t("me.offer.booked", { time: when }), "ok");
          } catch (err) {
            say(describe(err), "error");
          }
          await Promise.all([loadBookings().catch(() => null), loadOffers(), loadWatches()]);
        },
      })));
  }));
  $("offers-wrap").hidden = offers.length === 0;
}

// ---- wait-list watches ---------------------------------------------------------------------------------

async function loadWatches() {
  const data = await get("/api/waitlist").catch(() => null);
  const list = (data && data.entries) || [];
  await Promise.all([...new Set(list.map((w) => w.clinic).filter(Boolean))].map((id) => clinicOf(id).catch(() => null)));
  const short = { weekday: "short", day: "numeric", month: "short" };
  $("watches").replaceChildren(...list.map((w) => el("li", { dataset: { watch: w.id, clinic: w.clinic || "" } },
    `${(w.clinic && clinicDetails.get(w.clinic)?.name) || w.clinic || w.municipality} · ${serviceName(w.service)}`
      + ` · ${formatDate(w.from, short)}–${formatDate(addDays(w.from, w.days - 1), short)}`
      + (w.from_time === "00:00" && w.to_time === "24:00" ? " " : ` · ${w.from_time}–${w.to_time} `),
    el("button", { type: "button", class: "link", text: t("me.notify.remove"), onclick: async () => {
      await del(`/api/waitlist/${encodeURIComponent(w.id)}`).catch((err) => say(describe(err), "error"));
      loadWatches();
    } }))));
  $("watches-wrap").hidden = list.length === 0;
}

function wireNotifyForm() {
  const form = $("notify-form");
  $("notify-service").replaceChildren(...services.map((s) => el("option", { value: s.id }, serviceName(s.id))));
  $("notify-from").value = todayIso();
  $("notify-to").value = addDays(todayIso(), 14);
  const params = new URLSearchParams(location.search);
  const clinicParam = params.get("clinic") || "";
  if (params.get("service")) $("notify-service").value = params.get("service");
  // a clinic is chosen by name within its region (ids begin with the region code: "AB-c1")
  const regionSelect = $("notify-region");
  get("/api/regions").then((regions) => {
    regionSelect.replaceChildren(...regions.map((r) => el("option", { value: r.code }, r.name)));
    if (clinicParam.includes("-")) regionSelect.value = clinicParam.split("-")[0];
    return fillClinics(clinicParam);
  }).catch((err) => announce($("notify-message"), describe(err), "error"));
  regionSelect.addEventListener("change", () => fillClinics(""));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const from = $("notify-from").value;
      const days = Math.round((Date.parse($("notify-to").value) - Date.parse(from)) / 86400000) + 1;
      await post("/api/waitlist", {
        clinic: $("notify-clinic").value, service: $("notify-service").value, from, days,
      });
      announce($("notify-message"), t("me.notify.saved"), "ok");
      loadWatches();
    } catch (err) {
      announce($("notify-message"), describe(err), "error");
    }
  });
}

async function fillClinics(selected) {
  const select = $("notify-clinic");
  const list = await get(`/api/clinics${query({ region: $("notify-region").value, sort: "name", limit: 5000 })}`);
  select.replaceChildren(...list.map((c) => el("option", { value: c.id, selected: c.id === selected },
    c.municipality_name ? `${c.name} (${c.municipality_name})` : c.name)));
}

// ---- live events ---------------------------------------------------------------------------------------

function toast(text) {
  const item = el("p", { class: "message", dataset: { kind: "ok" }, text });
  $("toasts").append(item);
  setTimeout(() => item.remove(), 8000);
}

live.onEvent("me", (msg) => {
  const { kind, booking, hold } = msg.data || {};
  const start = (booking && booking.start) || (hold && hold.start);
  const time = start ? formatDateTime(start) : "";
  toast(t(`me.event.${kind}`, { time }));
  loadBookings().catch(() => null);
  loadOffers();
});

async function signedIn(u, fresh = false) {
  user = u;
  // The server attaches "me" events to the socket of a signed-in user: reconnect with the new session.
  if (fresh) live.reconnect();
  $("signin").hidden = true;
  $("account").hidden = false;
  userBar($("userbar"), user, () => location.reload());
  wireNotifyForm();
  feedControl($("me-feed"), { tokenPath: "/api/me/ical-token", idPrefix: "me-feed", intro: "me.feed.intro" });
  await Promise.all([loadBookings().catch((err) => say(describe(err), "error")), loadWatches(), loadOffers()]);
}

async function main() {
  $("move-close").addEventListener("click", closeMover);
  services = await get("/api/services").catch(() => []);
  onLangChange(() => { renderBookings(); if (user) userBar($("userbar"), user, () => location.reload()); });
  const u = await currentUser().catch(() => null);
  if (u) {
    await signedIn(u);
  } else {
    $("signin").hidden = false;
    await signedIn(await authForm($("signin"), { idPrefix: "me-auth" }), true);
  }
  applyTranslations(document);
}

main();
