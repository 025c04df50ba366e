// Europe/Stockholm wall-clock time. Cells are wall-clock, so a cell index becomes a local time of day,
// and the UTC offset of that moment (CET +01:00 or CEST +02:00) is looked up, not assumed.

import { locale } from "./i18n.js";

export const ZONE = "Europe/Stockholm";

const isoDateFormat = new Intl.DateTimeFormat("en-CA", {
  timeZone: ZONE, year: "numeric", month: "2-digit", day: "2-digit",
});
const partsFormat = new Intl.DateTimeFormat("en-GB", {
  timeZone: ZONE, year: "numeric", month: "2-digit", day: "2-digit",
  hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
});

/** Today's date in Stockholm as YYYY-MM-DD. */
export function todayIso(now = new Date()) {
  return isoDateFormat.format(now);
}

export function addDays(isoDate, n) {
  const d = new Date(`${isoDate}T12:00:00Z`);
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
}

function offsetMinutesAt(utcMillis) {
  const p = Object.fromEntries(partsFormat.formatToParts(new Date(utcMillis)).map((x) => [x.type, x.value]));
  const asUtc = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second);
  return Math.round((asUtc - utcMillis) / 60000);
}

/**
 * The instant of a Stockholm wall-clock time on a date, as epoch millis and an ISO string with offset.
 * A wall time that does not exist (the skipped hour in March) resolves to the later offset.
 */
export function wallClock(isoDate, minuteOfDay) {
  const [y, m, d] = isoDate.split("-").map(Number);
  const naive = Date.UTC(y, m - 1, d, 0, minuteOfDay);
  let offset = offsetMinutesAt(naive - 60 * 60000);
  offset = offsetMinutesAt(naive - offset * 60000);
  const millis = naive - offset * 60000;
  const sign = offset >= 0 ? "+" : "-";
  const abs = Math.abs(offset);
  const hh = String(Math.floor(minuteOfDay / 60)).padStart(2, "0");
  const mm = String(minuteOfDay % 60).padStart(2, "0");
  const off = `${sign}${String(Math.floor(abs / 60)).padStart(2, "0")}:${String(abs % 60).padStart(2, "0")}`;
  return { millis, iso: `${isoDate}T${hh}:${mm}:00${off}` };
}

// Making an Intl.DateTimeFormat costs far more than formatting with one (a list of 50 clinics made 100):
// one per language and options, made when first needed.
const formatters = new Map();

function formatter(opts) {
  const key = `${locale()} ${JSON.stringify(opts)}`;
  let found = formatters.get(key);
  if (!found) {
    found = new Intl.DateTimeFormat(locale(), { timeZone: ZONE, ...opts });
    formatters.set(key, found);
  }
  return found;
}

export function formatTime(value) {
  return formatter({ hour: "2-digit", minute: "2-digit" }).format(new Date(value));
}

export function formatDate(value, opts = { weekday: "long", day: "numeric", month: "long" }) {
  const d = typeof value === "string" && value.length === 10 ? new Date(`${value}T12:00:00Z`) : new Date(value);
  return formatter(opts).format(d);
}

export function formatDateTime(value) {
  return `${formatDate(value, { weekday: "short", day: "numeric", month: "short" })} ${formatTime(value)}`;
}

/** "12:34:56" in Stockholm, for clocks. */
export function clockText(now = new Date()) {
  return formatter({ hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" }).format(now);
}
