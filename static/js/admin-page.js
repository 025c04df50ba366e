// /admin: the operations dashboard. Samples /metrics (Prometheus text) and draws rates
// from counter deltas with uPlot (one sample a second, three minutes kept); /api/admin/state gives each region's readiness and the hottest clinics.

import uPlot from "../vendor/uplot/uPlot.esm.js";
import { ApiError, get } from "./api.js";
import { ClinicsPanel } from "./admin-clinics.js";
import { applyTranslations, onLangChange, t } from "./i18n.js";
import { authForm, currentUser, userBar } from "./session.js";
import { announce, el, labelColumns, mountShell } from "./shell.js";

mountShell({ active: "/admin" });

const $ = (id) => document.getElementById(id);
const SAMPLE_MS = 1000;
const KEEP = 180; // samples: three minutes

/** Parse Prometheus text exposition into [{name, labels, value}]. */
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[2]) for (const lm of m[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[lm[1]] = lm[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** Sum a metric's samples grouped by one label (or all together when by is null). */
function sumBy(samples, name, by) {
  const out = {};
  for (const s of samples) {
    if (s.name !== name) continue;
    const key = by ? s.labels[by] ?? "" : "all";
    out[key] = (out[key] || 0) + s.value;
  }
  return out;
}

function colour(i, n) {
  return `hsl(${Math.round((360 * i) / Math.max(n, 1))}, 65%, 38%)`;
}

/** A time-series chart whose series appear as they are first seen. */
class LiveChart {
  constructor(container, title) {
    this.container = container;
    this.title = title;
    this.times = [];
    this.series = new Map(); // name -> array of values (null for gaps)
    this.plot = null;
    this.names = [];
  }

  push(time, values) {
    this.times.push(time);
    for (const name of Object.keys(values)) {
      if (!this.series.has(name)) this.series.set(name, Array(this.times.length - 1).fill(null));
    }
    for (const [name, arr] of this.series) arr.push(values[name] ?? null);
    if (this.times.length > KEEP) {
      this.times.shift();
      for (const arr of this.series.values()) arr.shift();
    }
    this.container.dataset.samples = String(this.times.length);
    this.draw();
  }

  draw() {
    const names = [...this.series.keys()].sort();
    const data = [this.times, ...names.map((n) => this.series.get(n))];
    const width = Math.max(260, this.container.clientWidth - 16);
    if (!this.plot || names.join() !== this.names.join()) {
      if (this.plot) this.plot.destroy();
      this.names = names;
      this.container.querySelector(".plot")?.remove();
      const holder = el("div", { class: "plot", "aria-hidden": "true" });
      this.container.append(holder);
      this.plot = new uPlot({
        width, height: 200,
        series: [{}, ...names.map((n, i) => ({ label: n, stroke: colour(i, names.length), width: 1.5, spanGaps: true }))],
        axes: [{}, { size: 55 }],
        legend: { show: names.length <= 24 },
      }, data, holder);
    } else {
      this.plot.setData(data);
      if (Math.abs(this.plot.width - width) > 4) this.plot.setSize({ width, height: 200 });
    }
    // The text twin of the chart (screen readers, small screens): the largest current values.
    const current = names.map((n) => [n, this.series.get(n).at(-1) ?? 0]).sort((a, b) => b[1] - a[1]);
    const shown = current.filter(([, v]) => v > 0).slice(0, 6);
    const latest = (shown.length ? shown : current.slice(0, 1)).map(([n, v]) => `${n}: ${format(v)}`).join(", ");
    this.container.querySelector(".summary").textContent = latest || t("admin.nodata");
  }
}

function format(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2);
}

const CHARTS = [
  ["commands", "admin.commands"], ["refusals", "admin.refusals"], ["batch", "admin.batch"],
  ["journal", "admin.journal"], ["queues", "admin.queues"], ["ws", "admin.ws"], ["slow", "admin.slow"],
];
const charts = {};
let previous = null;

function buildCharts() {
  const wrap = $("charts");
  wrap.replaceChildren();
  for (const [id, key] of CHARTS) {
    const section = el("section", { class: "chart", id: `chart-${id}`, "aria-labelledby": `chart-${id}-title` },
      el("h2", { id: `chart-${id}-title`, "data-i18n": key }),
      el("p", { class: "summary muted" }));
    wrap.append(section);
    charts[id] = new LiveChart(section, key);
  }
  applyTranslations(wrap);
}

function rates(now, prev, dt) {
  const out = {};
  for (const [k, v] of Object.entries(now)) out[k] = Math.max(0, (v - (prev[k] ?? v)) / dt);
  return out;
}

async function sampleMetrics() {
  const response = await fetch("/metrics", { credentials: "same-origin" });
  if (!response.ok) throw new ApiError(response.status, `HTTP_${response.status}`);
  const samples = parseMetrics(await response.text());
  const now = Date.now() / 1000;
  const cur = {
    commands: sumBy(samples, "tandtid_commands_total", "region"),
    refusals: sumBy(samples, "tandtid_refusals_total", "code"),
    batchSum: sumBy(samples, "tandtid_batch_size_sum", null).all || 0,
    batchCount: sumBy(samples, "tandtid_batch_size_count", null).all || 0,
    journalSum: sumBy(samples, "tandtid_journal_append_seconds_sum", null).all || 0,
    journalCount: sumBy(samples, "tandtid_journal_append_seconds_count", null).all || 0,
    queues: sumBy(samples, "tandtid_actor_queue_depth", "region"),
    connections: sumBy(samples, "tandtid_ws_connections", null).all || 0,
    frames: sumBy(samples, "tandtid_ws_frames_sent_total", null).all || 0,
    slow: sumBy(samples, "tandtid_ws_slow_consumers_total", "action"),
    time: now,
  };
  if (previous) {
    const dt = Math.max(0.001, now - previous.time);
    charts.commands.push(now, rates(cur.commands, previous.commands, dt));
    charts.refusals.push(now, rates(cur.refusals, previous.refusals, dt));
    const batches = cur.batchCount - previous.batchCount;
    charts.batch.push(now, { [t("admin.batch")]: batches > 0 ? (cur.batchSum - previous.batchSum) / batches : 0 });
    const appends = cur.journalCount - previous.journalCount;
    charts.journal.push(now, { ms: appends > 0 ? ((cur.journalSum - previous.journalSum) / appends) * 1000 : 0 });
    charts.queues.push(now, cur.queues);
    charts.ws.push(now, { [t("admin.connections")]: cur.connections, "frames/s": Math.max(0, (cur.frames - previous.frames) / dt) });
    charts.slow.push(now, rates(cur.slow, previous.slow, dt));
  }
  previous = cur;
}

async function sampleState() {
  const state = await get("/api/admin/state");
  const regions = state.regions || [];
  $("regions").replaceChildren(...regions.map((r) => el("li", { dataset: { region: r.code, ready: String(Boolean(r.ready)) } },
    el("strong", { text: `${r.code} ` }),
    el("span", { class: r.ready ? "ready-yes" : "ready-no", text: r.ready ? t("admin.ready") : t("admin.notready") }),
    el("br"),
    `${t("admin.queue")}: ${r.queue_depth ?? "–"} · ${t("admin.bookings")}: ${r.bookings ?? "–"} · ${t("admin.holds")}: ${r.holds ?? "–"}`,
    el("br"),
    `${t("admin.position")}: ${r.position ?? "–"}`)));
  const hot = state.hot_clinics || [];
  $("hot").replaceChildren(...(hot.length ? hot.map((h) => {
    const id = Array.isArray(h) ? h[0] : h.clinic ?? h.id;
    const name = Array.isArray(h) ? h[0] : h.name ?? id;
    const n = Array.isArray(h) ? h[1] : h.bookings_today ?? h.commands ?? h.count ?? "";
    return el("tr", {}, el("td", {}, el("a", { href: `/clinic/${encodeURIComponent(id)}`, text: name })), el("td", { text: String(n) }));
  }) : [el("tr", {}, el("td", { colspan: "2", class: "muted", text: t("admin.nodata") }))]));
  const connections = typeof state.connections === "object" && state.connections !== null
    ? Object.entries(state.connections).map(([k, v]) => `${k}: ${v}`).join(" · ") : String(state.connections ?? "–");
  $("connections").textContent = `${t("admin.connections")}: ${connections}`;
}

async function showMessage(name) {
  const m = await get(`/api/admin/outbox/${encodeURIComponent(name)}`);
  const files = (m.attachments || []).map((a) => a.filename).join(", ");
  const box = $("outbox-message");
  box.textContent = `${m.subject}\n${m.to} · ${m.date}\n\n${m.text}${files ? `\n\n📎 ${files}` : ""}`;
  box.hidden = false;
  box.focus();
}

async function sampleOutbox() {
  const data = await get("/api/admin/outbox?limit=20");
  $("outbox-total").textContent = t("admin.outbox.total", { n: data.total });
  $("outbox").replaceChildren(...(data.messages.length ? data.messages.map((m) => el("tr", {},
    el("td", {}, el("button", { type: "button", class: "link", text: m.subject || m.name,
      onclick: () => showMessage(m.name).catch((err) => announce($("admin-message"),
        err instanceof ApiError ? err.describe() : t("error.network"), "error")) })),
    el("td", { text: m.to }), el("td", { text: m.date }))) : [el("tr", {}, el("td", { colspan: "3", class: "muted", text: t("admin.nodata") }))]));
  labelColumns($("outbox-table"));
}

async function loop() {
  try {
    await Promise.all([sampleMetrics(), sampleState(), sampleOutbox()]);
    announce($("admin-message"), "");
  } catch (err) {
    announce($("admin-message"), err instanceof ApiError ? err.describe() : t("error.network"), "error");
  }
  setTimeout(loop, SAMPLE_MS);
}

async function signedIn(user) {
  userBar($("userbar"), user, () => location.reload());
  if (user.role !== "admin") {
    announce($("admin-message"), t("admin.notadmin"), "error");
    return;
  }
  $("dashboard").hidden = false;
  buildCharts();
  loop();
  new ClinicsPanel().start().catch((err) => announce($("clinics-message"), err instanceof ApiError ? err.describe() : String(err), "error"));
}

async function main() {
  onLangChange(() => {
    applyTranslations(document);
    for (const id of ["outbox-table", "clinics-table"]) labelColumns($(id));
  });
  const user = await currentUser().catch(() => null);
  if (user) await signedIn(user);
  else {
    announce($("admin-message"), t("admin.notadmin"));
    await signedIn(await authForm($("signin"), { allowRegister: false, idPrefix: "admin-auth" }));
  }
}

main();
