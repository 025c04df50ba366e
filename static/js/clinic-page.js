// /clinic/<id>: details, the live grid of free times, and the hold -> countdown -> confirm flow.

import { ApiError, del, get, idempotencyKey, post, query } from "./api.js";
import { applyTranslations, lang, onLangChange, t } from "./i18n.js";
import { LiveConnection } from "./live.js";
import { authForm, currentUser } from "./session.js";
import { announce, el, mountShell } from "./shell.js";
import { LiveSlotGrid, onAnyResource } from "./slotgrid.js";
import { formatDate, formatDateTime, formatTime, todayIso } from "./stockholm.js";

const live = new LiveConnection();
mountShell({ active: "", live });
live.start();

const clinicId = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const message = $("flow-message");

let clinic = null;
let services = [];
let service = null;
let grid = null;
let user = null;
let hold = null; // {id, start, end, expires_at, resource}
let countdownTimer = null;
let busy = false;
let signingIn = null; // the time chosen while signed out, booked once the patient has signed in

function serviceName(s) {
  return lang() === "en" && s.name_en ? s.name_en : s.name;
}

function renderDetails() {
  $("clinic-name").textContent = clinic.name;
  document.title = `${clinic.name} – Tandtid`;
  const details = $("clinic-details-list");
  const row = (key, value) => (value ? [el("dt", { "data-i18n": key }), el("dd", { text: value })] : []);
  const hours = hoursText(clinic.hours);
  details.replaceChildren(
    ...row("clinic.address", [clinic.address, clinic.municipality_name].filter(Boolean).join(", ")),
    ...row("clinic.phone", clinic.phone),
    ...row("clinic.hours", hours),
    ...row("clinic.rule", ruleText()),
    ...row("clinic.status", clinic.suspended ? t("clinic.suspended") : ""));
  applyTranslations(details);
}

const hm = (m) => `${String(Math.floor(m / 60)).padStart(2, "0")}:${String(m % 60).padStart(2, "0")}`;

/** {"1": [[480, 720], [780, 1020]], …} (ISO weekday -> minute ranges) as "mån 08:00–12:00, 13:00–17:00; …". */
function hoursText(hours) {
  if (!hours || typeof hours !== "object") return hours ? String(hours) : "";
  const weekday = new Intl.DateTimeFormat(lang() === "en" ? "en-GB" : "sv-SE", { weekday: "short", timeZone: "UTC" });
  return Object.entries(hours)
    .filter(([, ranges]) => Array.isArray(ranges) && ranges.length)
    .map(([d, ranges]) => {
      const name = weekday.format(new Date(Date.UTC(2024, 0, Number(d)))); // 2024-01-01 was a Monday
      return `${name} ${ranges.map(([a, b]) => `${hm(a)}–${hm(b)}`).join(", ")}`;
    })
    .join("; ");
}

function renderServiceSelect() {
  const select = $("service");
  const offered = services.filter((s) => !clinic.services || clinic.services.includes(s.id));
  select.replaceChildren(...offered.map((s) =>
    el("option", { value: s.id, selected: s.id === service.id }, `${serviceName(s)} (${t("minutes", { n: s.minutes })})`)));
}

function resourceName(rid) {
  const r = (clinic.resources || []).find((x) => x.id === rid);
  return r ? r.name : rid;
}

function clearHoldUi() {
  clearInterval(countdownTimer);
  hold = null;
  $("hold-panel").hidden = true;
}

function say(text, kind = "info") {
  announce(message, text, kind);
}

async function pick(time) {
  if (busy) return;
  say("");
  if (!user) {
    // The sign-in step opens where the patient is (on a phone the grid is far below it), naming the time.
    const chosen = t("clinic.signin_needed_for", { time: `${formatDate(time.start)} ${formatTime(time.start)}` });
    if (signingIn) {
      signingIn = time;
      say(chosen);
      message.scrollIntoView({ block: "start" });
      return;
    }
    signingIn = time;
    say(chosen);
    $("auth-area").hidden = false;
    const signedIn = authForm($("auth-area"), { idPrefix: "book-auth" });
    message.scrollIntoView({ block: "start" });
    $("book-auth-email")?.focus({ preventScroll: true });
    user = await signedIn;
    $("auth-area").hidden = true;
    time = signingIn;
    signingIn = null;
    say("");
  }
  busy = true;
  try {
    if (hold) {
      const old = hold;
      clearHoldUi();
      await del(`/api/holds/${encodeURIComponent(old.id)}`).catch(() => null);
    }
    showReserving(time);
    hold = await onAnyResource(time, async (resource) =>
      (await post("/api/holds", { clinic: clinic.id, resource, service: service.id, start: time.start })).hold);
    showHold();
  } catch (err) {
    clearHoldUi();
    if (err instanceof ApiError && err.code === "SLOT_TAKEN") {
      grid.markTaken(time.start);
      say(t("clinic.taken"), "error");
    } else {
      say(err instanceof ApiError ? err.describe() : String(err), "error");
    }
  } finally {
    busy = false;
  }
}

function showReserving(time) {
  const panel = $("hold-panel");
  panel.hidden = false;
  panel.dataset.state = "reserving";
  $("hold-when").textContent = `${formatDate(time.start)} ${formatTime(time.start)}`;
  showRule(time.start);
  $("hold-status").textContent = t("clinic.reserving");
  $("hold-countdown").textContent = "";
  $("confirm").disabled = true;
  $("release").disabled = true;
}

/** The cancellation rule, with the clinic's phone for later changes. */
function ruleText() {
  return t(clinic.phone ? "clinic.rule.text" : "clinic.rule.text.nophone", { hours: clinic.cancel_notice_hours, phone: clinic.phone });
}

/** A time inside the notice window can be booked but not cancelled or moved online afterwards. */
function insideNotice(start) {
  return Date.parse(start) - Date.now() < clinic.cancel_notice_hours * 3600 * 1000;
}

function showRule(start) {
  const rule = $("hold-rule");
  const late = insideNotice(start);
  rule.textContent = late ? t("clinic.rule.inside", { hours: clinic.cancel_notice_hours, phone: clinic.phone || "" }) : ruleText();
  rule.classList.toggle("warning", late);
  rule.dataset.inside = String(late);
}

function showHold() {
  const panel = $("hold-panel");
  panel.dataset.state = "held";
  showRule(hold.start);
  $("hold-when").textContent = `${formatDate(hold.start)} ${formatTime(hold.start)}–${formatTime(hold.end)}, ${resourceName(hold.resource)}`;
  $("confirm").disabled = false;
  $("release").disabled = false;
  $("hold-status").textContent = t("clinic.held");
  const expires = Date.parse(hold.expires_at);
  const tick = () => {
    const left = Math.max(0, Math.round((expires - Date.now()) / 1000));
    const text = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    $("hold-countdown").textContent = text;
    $("hold-countdown").setAttribute("datetime", `PT${left}S`);
    if (left <= 0) {
      clearHoldUi();
      say(t("clinic.expired"), "error");
    }
  };
  tick();
  clearInterval(countdownTimer);
  countdownTimer = setInterval(tick, 250);
  $("confirm").focus();
}

/** "Bevaka": join the clinic's wait-list for the chosen service, the next 14 days, in one tap. */
async function watch() {
  if (!user) {
    location.href = `/me${query({ clinic: clinic.id, service: service.id })}#notify-title`;
    return;
  }
  try {
    await post("/api/waitlist", { clinic: clinic.id, service: service.id, from: todayIso(), days: 14 });
    say(t("clinic.watch.saved"), "ok");
  } catch (err) {
    say(err instanceof ApiError ? err.describe() : String(err), "error");
  }
}

async function confirm() {
  if (!hold || busy) return;
  busy = true;
  $("confirm").disabled = true;
  $("hold-status").textContent = t("clinic.confirming");
  const holdId = hold.id;
  try {
    const data = await post("/api/bookings", { hold: holdId }, { "Idempotency-Key": idempotencyKey() });
    clearHoldUi();
    showConfirmation(data.booking);
  } catch (err) {
    clearHoldUi();
    if (err instanceof ApiError && err.code === "HOLD_EXPIRED") say(t("clinic.expired"), "error");
    else if (err instanceof ApiError && err.code === "SLOT_TAKEN") say(t("clinic.taken"), "error");
    else say(err instanceof ApiError ? err.describe() : String(err), "error");
  } finally {
    busy = false;
  }
}

async function release() {
  if (!hold) return;
  const old = hold;
  clearHoldUi();
  await del(`/api/holds/${encodeURIComponent(old.id)}`).catch(() => null);
}

function showConfirmation(booking) {
  const box = $("confirmation");
  const svc = services.find((s) => s.id === booking.service);
  const row = (key, value) => [el("dt", { "data-i18n": key }), el("dd", { text: value })];
  box.replaceChildren(
    el("h2", { id: "confirmation-title", "data-i18n": "clinic.booked.title", tabindex: "-1" }),
    el("dl", { class: "booking" },
      ...row("clinic.booking.id", booking.id),
      ...row("clinic.when", `${formatDateTime(booking.start)}–${formatTime(booking.end)}`),
      ...row("clinic.where", booking.clinic_name || clinic.name),
      ...row("clinic.what", svc ? serviceName(svc) : booking.service),
      ...row("clinic.with", resourceName(booking.resource))),
    el("p", { class: "actions" },
      el("a", { class: "button primary", id: "ics-link", href: `/api/bookings/${encodeURIComponent(booking.id)}/ics`, download: `${booking.id}.ics`, "data-i18n": "clinic.booked.ics" }),
      el("a", { class: "button", href: "/me", "data-i18n": "clinic.booked.me" }),
      el("button", { type: "button", "data-i18n": "clinic.booked.another", onclick: () => { box.hidden = true; $("times").hidden = false; } })));
  box.dataset.booking = booking.id;
  box.hidden = false;
  $("times").hidden = true;
  applyTranslations(box);
  $("confirmation-title").focus();
}

async function main() {
  $("confirm").addEventListener("click", confirm);
  $("watch").addEventListener("click", watch);
  $("release").addEventListener("click", release);
  try {
    [clinic, services] = await Promise.all([get(`/api/clinics/${encodeURIComponent(clinicId)}`), get("/api/services")]);
  } catch (err) {
    $("clinic-name").textContent = err instanceof ApiError && err.status === 404 ? t("clinic.notfound") : err.describe?.() || String(err);
    return;
  }
  service = services.find((s) => s.id === params.get("service")) || services.find((s) => s.id === "checkup") || services[0];
  if (clinic.services && !clinic.services.includes(service.id)) service = services.find((s) => clinic.services.includes(s.id)) || service;
  renderDetails();
  renderServiceSelect();
  $("times").hidden = false; // with the details, so nothing on screen moves down when they arrive
  $("service").addEventListener("change", (ev) => {
    service = services.find((s) => s.id === ev.target.value);
    grid.setService(service);
    const url = new URL(location.href);
    url.searchParams.set("service", service.id);
    history.replaceState(null, "", url);
  });
  onLangChange(() => { renderServiceSelect(); renderDetails(); });
  const days = Math.min(14, Math.max(1, Number(params.get("days")) || 7));
  grid = new LiveSlotGrid({
    container: $("grid"), live, clinic, service, from: params.get("from") || todayIso(), days, onPick: pick,
  });
  grid.start();
  user = await currentUser().catch(() => null);
}

main();
