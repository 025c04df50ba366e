// /: the map of Sweden with every clinic coloured by the times its chosen treatment can be booked (the
// region topics' "starts": bookable start times per clinic per day, counted by the engine), the search
// panel, and the list beside the map (the keyboard and screen-reader path to the same clinics).
// The base map is a street map (OpenStreetMap tiles, or the server's TANDTID_TILE_URL, named in the page's
// <meta name="tandtid-tiles">) when its tiles load; until they do, and for good when they fail (offline, a
// blocked tile server), the county geography shipped in static/geo is the map. #map's data-base says which:
// "tiles-pending", "tiles" or "outline".
//
// At national size (4,430 clinics) the work is cut into tasks of CHUNK_MS, each followed by a yield to the
// main thread: markers, the cluster tree and the county shapes are built over many short tasks, none of them
// a long task (50 ms) even on a phone four times slower than a laptop. The region topics are subscribed
// before the clinic lists are fetched, so markers are made with their counts and are not redrawn at once.

import { ApiError, get, query } from "./api.js";
import { applyTranslations, lang, onLangChange, t } from "./i18n.js";
import { LiveConnection } from "./live.js";
import { announce, el, mountShell } from "./shell.js";
import { addDays, formatDateTime, todayIso } from "./stockholm.js";

const L = window.L;
const live = new LiveConnection();
mountShell({ active: "/", live });
live.start();

const $ = (id) => document.getElementById(id);
const SWEDEN = [[55.2, 10.9], [69.1, 24.2]];
// the API's maximum per request (above the largest region's clinic count): the map asks once per region
const CLINIC_LIMIT = 5000;
// the list renders this many rows at a time, more as it is scrolled to its end: the DOM stays small at any size
const LIST_PAGE = 50;
// work done before yielding to the main thread: well under the 50 ms of a long task, also 4x slower
const CHUNK_MS = 8;

const state = {
  services: [], regions: [], service: "checkup", from: todayIso(), days: 7, region: "", municipality: "",
  near: null, sort: "earliest", hasFree: false,
};
const clinics = new Map(); // id -> clinic from /api/clinics
const markers = new Map(); // id -> L.Marker
const counts = new Map(); // id -> Map(date -> bookable start times of countsService)
let countsService = ""; // the service the region subscriptions count
const rows = new Map(); // id -> the list's <li> (only rows rendered so far)
const pending = new Set(); // ids whose counts changed since the last frame
let frameAsked = false;
let listed = []; // the search's clinics in list order
let listShown = 0; // how many of them have rows
let subscribedRegions = new Set();
let searchToken = 0;
let placing = Promise.resolve(); // the newest search's markers, made and clustered
let clustersLoaded = null; // resolves the cluster group's chunked loading under way
let windowKey = ""; // state.from/state.days of windowList
let windowList = []; // the dates of the search's period
const freeLabels = new Map(); // n -> "n bokningsbara tider för …" in the current language and service (cleared on change)

// A plain task, not scheduler.yield(): its continuations run ahead of rendering, and a chain of them held
// back the page's first paint by two seconds in some Lighthouse runs.
function yieldToMain() {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Call fn on each item, yielding to the main thread every CHUNK_MS. False when alive() turned false. */
async function eachInChunks(items, fn, alive = () => true) {
  let until = performance.now() + CHUNK_MS;
  for (const item of items) {
    fn(item);
    if (performance.now() >= until) {
      await yieldToMain();
      if (!alive()) return false;
      until = performance.now() + CHUNK_MS;
    }
  }
  return true;
}

function freeLabel(n) {
  let label = freeLabels.get(n);
  if (label === undefined) {
    const service = state.services.find((s) => s.id === state.service);
    label = t("map.free.label", { n, service: service ? serviceName(service).toLowerCase() : state.service });
    freeLabels.set(n, label);
  }
  return label;
}

// ---- the map ------------------------------------------------------------------------------------------

const map = L.map("map", { zoomSnap: 0.5, minZoom: 4, maxZoom: 17, preferCanvas: false });
map.fitBounds(SWEDEN);
const shownSweden = map.getBounds();
map.attributionControl.setPrefix(false);
map.attributionControl.addAttribution(
  "Kommun- och länsdata bygger på SCB:s öppna data (CC0 1.0) · Koordinater © <a href=\"https://www.geonames.org/\">GeoNames</a> (CC BY 4.0) · <a href=\"https://leafletjs.com\">Leaflet</a>");
map.getContainer().setAttribute("aria-label", t("map.aria"));

const COUNTY_FILL = { color: "#0b5c7a", weight: 1, fillColor: "#f4f1e8", fillOpacity: 1 };
const regionsLayer = L.geoJSON(null, { style: () => regionsLayer.countyStyle, interactive: false });
regionsLayer.countyStyle = COUNTY_FILL;
const outlineLayer = L.geoJSON(null, { style: { color: "#06384a", weight: 1.5, fill: false }, interactive: false });
regionsLayer.addTo(map);
outlineLayer.addTo(map);
const layerControl = L.control.layers(null, {}, { collapsed: true }).addTo(map);
const tileUrl = document.querySelector("meta[name='tandtid-tiles']")?.content || "off";
const tiles = tileUrl === "off" ? null : L.tileLayer(tileUrl, {
  maxZoom: 19, attribution: "© <a href=\"https://www.openstreetmap.org/copyright\">OpenStreetMap</a> contributors",
});
setBase(tiles ? "tiles-pending" : "outline");
if (tiles) {
  // One tile decides (Sweden's at zoom 4): if it loads, the street map becomes the base (the counties turn into
  // thin lines over it); if not (offline, a blocked tile server), the outline stays the map, after one failed
  // request rather than a screenful of them.
  const probe = new Image();
  probe.onload = () => {
    tiles.once("tileload", () => {
      regionsLayer.countyStyle = { ...COUNTY_FILL, fillOpacity: 0, weight: 1 };
      regionsLayer.setStyle(regionsLayer.countyStyle);
      setBase("tiles");
    });
    tiles.addTo(map);
    layerControl.addOverlay(tiles, t("map.layer.tiles"));
  };
  probe.onerror = () => setBase("outline");
  probe.src = L.Util.template(tileUrl, { z: 4, x: 8, y: 4, s: "a", r: "" });
}

function setBase(base) {
  map.getContainer().dataset.base = base;
}

function badgeClass(n) {
  return n >= 10 ? "many" : n > 0 ? "few" : "none";
}

function badgeHtml(id, n) {
  // Shape and number carry the meaning too: circle = many, diamond = some, square with 0 = none.
  return `<span class="free-badge ${badgeClass(n)}" data-clinic="${id}" data-free="${n}"><span>${n}</span></span>`;
}

const clusters = L.markerClusterGroup({
  disableClusteringAtZoom: 11,
  showCoverageOnHover: false,
  // the cluster tree is built in chunks of this many ms (the library's default, 200, makes long tasks)
  chunkedLoading: true,
  chunkInterval: CHUNK_MS,
  chunkDelay: 0,
  chunkProgress(processed, total) {
    if (processed === total && clustersLoaded) clustersLoaded();
  },
  // A cluster counts clinics, not times: a labelled pill ("12 kliniker"), never a badge's shape or colours.
  iconCreateFunction(cluster) {
    const children = cluster.getAllChildMarkers();
    const withFree = children.filter((m) => m.options.free > 0).length;
    const label = t("map.cluster", { n: children.length, free: withFree });
    const width = children.length < 100 ? 56 : children.length < 1000 ? 64 : 72;
    return L.divIcon({
      className: "cluster-marker",
      html: `<span class="cluster-bubble ${withFree ? "" : "none"}" aria-label="${label}" title="${label}"><b>${children.length}</b><small>${t("map.cluster.unit")}</small></span>`,
      iconSize: [width, 40],
    });
  },
});
clusters.addTo(map);

// One popup for every marker, filled when opened (a popup bound to each of 4,430 markers costs their start-up).
const popup = L.popup();
function openPopup(marker) {
  const c = clinics.get(marker.options.clinic);
  if (!c) return;
  popup.setLatLng(marker.getLatLng()).setContent(popupContent(c)).openOn(map);
}
clusters.on("click", (e) => openPopup(e.layer));
// Enter or Space on a focused marker opens its popup too (markers are keyboard-focusable buttons).
map.getContainer().addEventListener("keydown", (ev) => {
  if (ev.key !== "Enter" && ev.key !== " ") return;
  const id = ev.target.classList?.contains("clinic-marker") && ev.target.querySelector(".free-badge")?.dataset.clinic;
  const marker = id && markers.get(id);
  if (!marker) return;
  ev.preventDefault();
  openPopup(marker);
});

async function loadGeography() {
  try {
    const [counties, outline] = await Promise.all([
      fetch("/static/geo/se_counties.geojson").then((r) => r.json()),
      fetch("/static/geo/se_outline.geojson").then((r) => r.json()),
    ]);
    // one county per task: projecting all 21 shapes at once is a long task on a phone
    for (const feature of counties.features) {
      regionsLayer.addData(feature);
      await yieldToMain();
    }
    outlineLayer.addData(outline);
    layerControl.addOverlay(regionsLayer, t("map.layer.regions"));
  } catch {
    // the markers still work without the outline
  }
}

// ---- counts from the region summary topics ------------------------------------------------------------

function dayList(from, days) {
  return Array.from({ length: days }, (_, i) => addDays(from, i));
}

/** The search's dates, computed once per period (not once per clinic). */
function dates() {
  const key = `${state.from}/${state.days}`;
  if (key !== windowKey) {
    windowKey = key;
    windowList = dayList(state.from, state.days);
  }
  return windowList;
}

function freeCount(id) {
  const perDay = counts.get(id);
  if (!perDay) return 0;
  let sum = 0;
  for (const date of dates()) sum += perDay.get(date) || 0;
  return sum;
}

function onRegionMessage(msg) {
  if (msg.type === "snapshot") {
    const { from, service, starts: byClinic } = msg.data;
    if (service !== state.service) return; // a snapshot for the search before; the new one follows
    let days = [];
    for (const [id, perDay] of Object.entries(byClinic || {})) {
      if (days.length < perDay.length) days = dayList(from, perDay.length);
      const m = new Map();
      perDay.forEach((n, i) => m.set(days[i], n));
      counts.set(id, m);
      pending.add(id);
    }
  } else {
    // [clinic, date, free cells, {service: bookable times}]: every service the clinic offers
    for (const [id, date, , starts] of msg.data.counts || []) {
      if (!starts) continue;
      if (!counts.has(id)) counts.set(id, new Map());
      counts.get(id).set(date, starts[state.service] || 0);
      pending.add(id);
    }
  }
  askFrame();
}

// Messages only note which clinics changed; one animation frame applies them all (by id, no DOM search).
function askFrame() {
  if (frameAsked || !pending.size) return;
  frameAsked = true;
  requestAnimationFrame(() => {
    frameAsked = false;
    const changed = [];
    for (const id of pending) {
      const marker = refreshClinic(id);
      if (marker) changed.push(marker);
    }
    pending.clear();
    // only the clusters above changed markers get new icons
    if (changed.length) clusters.refreshClusters(changed);
  });
}

function subscribeRegions(codes) {
  const wanted = new Set(codes);
  for (const code of subscribedRegions) if (!wanted.has(code)) live.unsubscribe(`region:${code}`);
  for (const code of wanted) {
    live.subscribe(`region:${code}`, { from: state.from, days: state.days, service: state.service }, onRegionMessage);
  }
  subscribedRegions = wanted;
}

// ---- markers and list ---------------------------------------------------------------------------------

function clinicUrl(c) {
  return `/clinic/${encodeURIComponent(c.id)}${query({ service: state.service, from: state.from, days: Math.min(state.days, 14) })}`;
}

function nextFreeText(c) {
  return c.next_free ? t("map.next_free", { time: formatDateTime(c.next_free) }) : t("map.next_free.none");
}

function popupContent(c) {
  const n = freeCount(c.id);
  return el("div", { class: "popup" },
    el("h3", { text: c.name }),
    el("p", { text: `${c.municipality_name || ""} · ${freeLabel(n)}` }),
    el("p", { text: nextFreeText(c) }),
    c.suspended ? el("p", { class: "suspended", text: t("clinic.suspended") }) : null,
    el("a", { class: "button primary", href: clinicUrl(c), text: t("map.book") }));
}

function makeMarker(c) {
  const n = freeCount(c.id);
  return L.marker([c.lat, c.lon], {
    icon: L.divIcon({ className: "clinic-marker", html: badgeHtml(c.id, n), iconSize: [34, 34] }),
    title: `${c.name}: ${freeLabel(n)}`,
    free: n,
    clinic: c.id,
    riseOnHover: true,
  });
}

/** Bring a clinic's marker and row to its current count; returns the marker if it changed. */
function refreshClinic(id) {
  const n = freeCount(id);
  const c = clinics.get(id);
  const marker = markers.get(id);
  let markerChanged = null;
  if (marker && marker.options.free !== n) {
    markerChanged = marker;
    marker.options.free = n;
    marker.options.title = `${c.name}: ${freeLabel(n)}`;
    marker.setIcon(L.divIcon({ className: "clinic-marker", html: badgeHtml(id, n), iconSize: [34, 34] }));
    if (marker.getElement()) marker.getElement().title = marker.options.title;
  }
  const item = rows.get(id);
  if (item) {
    const badge = item.firstElementChild;
    if (badge.dataset.free !== String(n)) {
      badge.className = `free-badge ${badgeClass(n)}`;
      badge.dataset.free = String(n);
      badge.firstElementChild.textContent = String(n);
      badge.setAttribute("aria-label", freeLabel(n));
    }
  }
  return markerChanged;
}

function renderList(list) {
  listed = list;
  listShown = 0;
  rows.clear();
  $("results").replaceChildren();
  $("results-count").textContent = list.length ? t("map.results.count", { n: list.length }) : t("map.results.none");
  showMore();
}

// The next LIST_PAGE rows; the "more" button after them is also watched, so scrolling to it shows more.
function showMore() {
  const ol = $("results");
  const next = listed.slice(listShown, listShown + LIST_PAGE);
  listShown += next.length;
  const fragment = document.createDocumentFragment();
  for (const c of next) {
    const row = clinicRow(c);
    rows.set(c.id, row);
    fragment.append(row);
  }
  ol.append(fragment);
  const more = $("results-more");
  const left = listed.length - listShown;
  more.hidden = left <= 0;
  more.textContent = t("map.results.more", { n: Math.min(LIST_PAGE, left), left });
  if (left > 0) {
    // observing anew reports the button's current intersection, so a short page keeps filling
    moreObserver.unobserve(more);
    moreObserver.observe(more);
  }
}

const moreObserver = new IntersectionObserver((entries) => {
  if (entries.some((e) => e.isIntersecting) && listShown < listed.length) showMore();
}, { rootMargin: "400px" });

function clinicRow(c) {
  const n = freeCount(c.id);
  const details = [c.municipality_name, c.distance_km != null ? t("map.distance", { km: c.distance_km.toFixed(1) }) : null]
    .filter(Boolean).join(" · ");
  return el("li", { class: "clinic", dataset: { clinic: c.id } },
    el("span", { class: `free-badge ${badgeClass(n)}`, dataset: { free: String(n) }, role: "img", "aria-label": freeLabel(n) },
      el("span", { "aria-hidden": "true", text: String(n) })),
    el("div", {},
      el("h3", {}, el("a", { href: clinicUrl(c), text: c.name })),
      el("p", { class: "muted", text: details }),
      el("p", { class: "next-free", text: nextFreeText(c) })),
    el("p", { class: "actions" },
      el("button", { type: "button", class: "show-on-map", text: t("map.show"), "aria-label": `${t("map.show")}: ${c.name}`, onclick: () => showOnMap(c.id) })));
}

async function showOnMap(id) {
  // a search started meanwhile replaces every marker: wait for the newest one's
  for (let current = null; current !== placing;) {
    current = placing;
    await current;
  }
  const marker = markers.get(id);
  if (!marker || !clusters.hasLayer(marker)) return;
  clusters.zoomToShowLayer(marker, () => openPopup(marker));
  $("map").scrollIntoView({ block: "nearest" });
}

// ---- search -------------------------------------------------------------------------------------------

async function fetchClinics() {
  const base = {
    service: state.service, from: state.from, days: state.days, municipality: state.municipality,
    near: state.near ? `${state.near.lat.toFixed(4)},${state.near.lon.toFixed(4)}` : "",
    sort: state.near && state.sort === "distance" ? "distance" : "earliest",
    has_free: state.hasFree ? "true" : "", limit: CLINIC_LIMIT,
  };
  const parts = await Promise.all(searchedRegions().map((region) => get(`/api/clinics${query({ ...base, region })}`)));
  const list = parts.flat();
  if (base.sort === "distance") list.sort((a, b) => (a.distance_km ?? 1e9) - (b.distance_km ?? 1e9));
  else {
    const at = new Map(list.map((c) => [c, c.next_free ? Date.parse(c.next_free) : Infinity]));
    list.sort((a, b) => at.get(a) - at.get(b));
  }
  return list;
}

function searchedRegions() {
  return state.region ? [state.region] : state.regions.map((r) => r.code);
}

async function search() {
  const token = ++searchToken;
  const message = $("search-message");
  // "loading" goes where the count will be: a message above the list would push it down twice (layout shift)
  $("results-count").textContent = t("loading");
  $("results").setAttribute("aria-busy", "true");
  if (state.service !== countsService) { // another treatment: other times to count, other labels
    countsService = state.service;
    counts.clear();
    freeLabels.clear();
  }
  // the counts travel while the lists are fetched: markers are then made with their colour once
  subscribeRegions(searchedRegions());
  let list;
  try {
    list = await fetchClinics();
  } catch (err) {
    announce(message, err instanceof ApiError ? err.describe() : String(err), "error");
    return;
  } finally {
    $("results").removeAttribute("aria-busy");
  }
  if (token !== searchToken) return;
  await placing; // the markers of a search before must be loaded before the layers are cleared
  if (token !== searchToken) return;
  announce(message, "");
  clinics.clear();
  for (const c of list) clinics.set(c.id, c);
  clusters.clearLayers();
  markers.clear();
  renderList(list);
  if (state.region && list.length) map.fitBounds(boundsOf(list), { maxZoom: 10, padding: [20, 20] });
  else if (state.near) map.setView([state.near.lat, state.near.lon], 10);
  else if (!map.getBounds().equals(shownSweden)) map.fitBounds(SWEDEN); // a new view redraws every shape
  placing = placeMarkers(list, token);
  await placing;
}

/** Make the search's markers in chunks, then hand them to the cluster group (which loads in chunks too). */
async function placeMarkers(list, token) {
  const layerList = [];
  const placed = await eachInChunks(list, (c) => {
    if (typeof c.lat !== "number" || typeof c.lon !== "number") return;
    const marker = makeMarker(c);
    markers.set(c.id, marker);
    layerList.push(marker);
  }, () => token === searchToken);
  if (!placed) return;
  await new Promise((resolve) => {
    clustersLoaded = resolve;
    clusters.addLayers(layerList);
  });
  clustersLoaded = null;
}

function boundsOf(list) {
  return L.latLngBounds(list.filter((c) => typeof c.lat === "number").map((c) => [c.lat, c.lon]));
}

function serviceName(s) {
  return lang() === "en" && s.name_en ? s.name_en : s.name;
}

function renderSelects() {
  $("service").replaceChildren(...state.services.map((s) =>
    el("option", { value: s.id, selected: s.id === state.service }, `${serviceName(s)} (${t("minutes", { n: s.minutes })})`)));
  $("region").replaceChildren(el("option", { value: "" }, t("map.region.all")),
    ...state.regions.map((r) => el("option", { value: r.code, selected: r.code === state.region }, r.name)));
}

async function loadMunicipalities() {
  const select = $("municipality");
  select.replaceChildren(el("option", { value: "" }, t("map.municipality.all")));
  select.disabled = !state.region;
  if (!state.region) return;
  const list = await get(`/api/municipalities${query({ region: state.region })}`).catch(() => []);
  select.append(...list.map((m) => el("option", { value: m.code }, m.name)));
}

function readForm() {
  state.service = $("service").value;
  state.from = $("from").value || todayIso();
  state.days = Math.min(14, Math.max(1, Number($("days").value) || 7));
  state.municipality = $("municipality").value;
}

function wireForm() {
  $("from").value = state.from;
  $("from").min = todayIso();
  $("days").value = String(state.days);
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    readForm();
    state.hasFree = false;
    search();
  });
  $("region").addEventListener("change", async () => {
    state.region = $("region").value;
    state.municipality = "";
    await loadMunicipalities();
  });
  $("earliest").addEventListener("click", () => {
    readForm();
    state.sort = "earliest";
    state.hasFree = true;
    search();
  });
  $("near").addEventListener("click", () => {
    const message = $("search-message");
    if (!navigator.geolocation) {
      announce(message, t("map.near.denied"), "error");
      return;
    }
    navigator.geolocation.getCurrentPosition((pos) => {
      readForm();
      state.near = { lat: pos.coords.latitude, lon: pos.coords.longitude };
      state.sort = "distance";
      state.region = "";
      $("region").value = "";
      search();
    }, () => announce(message, t("map.near.denied"), "error"), { timeout: 10000, maximumAge: 600000 });
  });
}

async function main() {
  $("results-more").addEventListener("click", showMore);
  loadGeography();
  wireForm();
  try {
    [state.services, state.regions] = await Promise.all([get("/api/services"), get("/api/regions")]);
  } catch (err) {
    announce($("search-message"), err instanceof ApiError ? err.describe() : String(err), "error");
    return;
  }
  const params = new URLSearchParams(location.search);
  if (params.get("service")) state.service = params.get("service");
  if (params.get("region")) state.region = params.get("region");
  renderSelects();
  await loadMunicipalities();
  onLangChange(() => {
    freeLabels.clear();
    renderSelects();
    renderList(listed);
    map.getContainer().setAttribute("aria-label", t("map.aria"));
    clusters.refreshClusters();
  });
  await search();
}

main();
applyTranslations(document);
