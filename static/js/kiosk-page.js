// /kiosk/<clinic>: a full-screen waiting-room display. Today's free times in large type, a clock, a QR code
// to book on a phone. No sign-in. Runs for days: it follows the date at midnight, keeps reconnecting
// (a server restart is just a longer reconnect), and every reconnect brings a fresh snapshot.
// ?service=<id> picks the service (default: check-up); ?date= pins the day.

import qrcode from "../vendor/qrcode-generator/qrcode.mjs";
import { get } from "./api.js";
import { applyTranslations, lang, onLangChange, t } from "./i18n.js";
import { LiveConnection } from "./live.js";
import { el, mountShell } from "./shell.js";
import { applyCellDiff, clinicCells, freeTimes } from "./freetimes.js";
import { clockText, formatDate, formatTime, todayIso } from "./stockholm.js";

const live = new LiveConnection();
mountShell({ live, nav: false });
live.start();

const $ = (id) => document.getElementById(id);
const clinicId = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
const params = new URLSearchParams(location.search);

let clinic = null;
let service = null;
let services = [];
let cells = null;
// ?date=YYYY-MM-DD pins the display to one day (previews, tests); otherwise it follows today.
const pinnedDay = /^\d{4}-\d{2}-\d{2}$/.test(params.get("date") || "") ? params.get("date") : null;
let day = pinnedDay || todayIso();

function resourceIds() {
  return (clinic.resources || []).filter((r) => !r.services || r.services.includes(service.id)).map((r) => r.id);
}

function renderTimes(highlight) {
  if (!cells) return;
  const times = freeTimes(cells, { serviceMinutes: service.minutes, resourceIds: resourceIds(), dates: [day] }).get(day) || [];
  const list = $("kiosk-times");
  const existing = new Map([...list.children].map((li) => [li.dataset.start, li]));
  const wanted = new Set(times.map((x) => x.start));
  for (const [start, li] of existing) if (!wanted.has(start)) li.remove();
  let previous = null;
  for (const time of times) {
    let li = existing.get(time.start);
    if (!li) {
      li = el("li", { dataset: { start: time.start }, text: formatTime(time.millis) });
      if (previous) previous.after(li);
      else list.prepend(li);
      if (highlight) {
        li.classList.add("fresh");
        setTimeout(() => li.classList.remove("fresh"), 1600);
      }
    }
    previous = li;
  }
  $("kiosk-none").hidden = times.length > 0;
  $("kiosk-count").textContent = t("kiosk.count", { n: times.length });
}

function subscribe() {
  live.subscribe(`clinic:${clinicId}`, { from: day, days: 1 }, (msg) => {
    if (msg.type === "snapshot") {
      cells = clinicCells(msg.data);
      $("kiosk-times").replaceChildren();
      renderTimes(false);
    } else if (cells) {
      applyCellDiff(cells, msg.data.cells || []);
      renderTimes(true);
    }
  });
}

function tick() {
  $("clock").textContent = clockText();
  const today = pinnedDay || todayIso();
  if (today !== day) {
    day = today;
    cells = null;
    renderHeading();
    subscribe();
  } else {
    renderTimes(false); // times that have just passed drop off
  }
}

function renderHeading() {
  $("today").textContent = formatDate(day);
  $("kiosk-title").textContent = day === todayIso() ? t("kiosk.title") : t("kiosk.title.day");
  if (service) $("service-name").textContent = lang() === "en" && service.name_en ? service.name_en : service.name;
}

function renderQr() {
  const url = `${location.origin}/clinic/${encodeURIComponent(clinicId)}?service=${encodeURIComponent(service.id)}`;
  const qr = qrcode(0, "M");
  qr.addData(url);
  qr.make();
  const img = $("qr-img");
  img.src = qr.createDataURL(8, 2);
  img.alt = t("kiosk.qr.alt");
  $("qr-url").textContent = url.replace(/^https?:\/\//, "");
}

async function main() {
  setInterval(tick, 1000);
  tick();
  // A kiosk must come up even if the server is still starting: keep asking until the details arrive.
  for (let wait = 1000; !clinic; wait = Math.min(wait * 2, 15000)) {
    try {
      [clinic, services] = await Promise.all([get(`/api/clinics/${encodeURIComponent(clinicId)}`), get("/api/services")]);
    } catch {
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
  service = services.find((s) => s.id === params.get("service")) || services.find((s) => s.id === "checkup") || services[0];
  $("clinic-name").textContent = clinic.name;
  $("clinic-name").title = clinic.name; // the heading is one line: a long name ends in "…"
  document.title = `${clinic.name} – Tandtid`;
  renderHeading();
  renderQr();
  subscribe();
  onLangChange(() => { renderHeading(); renderTimes(false); applyTranslations(document); });
}

main();
