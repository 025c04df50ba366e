// Free start times computed in the browser from a clinic topic's cell strings, so a grid stays live:
// apply each diff to the strings and compute again. A start is free when k consecutive cells are FREE
// on a resource that performs the service (k = service minutes / cell minutes) and it lies in the future.

import { wallClock } from "./stockholm.js";

export const CELL = { CLOSED: 0, FREE: 1, HELD: 2, BOOKED: 3, BLOCKED: 4, BUFFER: 5 };

/** Mutable copy of a clinic snapshot's data: {cellMinutes, resources: {rid: {date: "0111…"}}}. */
export function clinicCells(snapshotData) {
  const resources = {};
  for (const [rid, days] of Object.entries(snapshotData.resources || {})) resources[rid] = { ...days };
  return { from: snapshotData.from, days: snapshotData.days, cellMinutes: snapshotData.cell_minutes, resources };
}

/** Apply a diff's [resource, date, first, count, state] runs; runs outside the subscribed range are ignored. */
export function applyCellDiff(cells, runs) {
  const touched = [];
  for (const [rid, date, first, count, state] of runs) {
    const days = cells.resources[rid];
    if (!days || days[date] === undefined) continue;
    const row = days[date];
    const end = Math.min(row.length, first + count);
    if (first >= end) continue;
    days[date] = row.slice(0, first) + String(state).repeat(end - first) + row.slice(end);
    touched.push({ rid, date, first, count: end - first, state });
  }
  return touched;
}

/**
 * Free start times per date: Map(date -> [{start, millis, minute, resource, resources}]) sorted by time, one
 * entry per start time (a time is a time to the patient): `resources` are all that can take it, in resource
 * order (how many patients still can), `resource` the first of them.
 */
export function freeTimes(cells, { serviceMinutes, resourceIds, nowMillis = Date.now(), dates = null }) {
  const k = Math.max(1, Math.ceil(serviceMinutes / cells.cellMinutes));
  const byDate = new Map();
  const wanted = resourceIds.filter((rid) => cells.resources[rid]);
  const allDates = new Set();
  for (const rid of wanted) for (const date of Object.keys(cells.resources[rid])) allDates.add(date);
  for (const date of [...allDates].sort()) {
    if (dates && !dates.includes(date)) continue;
    const starts = new Map();
    for (const rid of wanted) {
      const row = cells.resources[rid][date];
      if (!row) continue;
      let run = 0;
      for (let i = 0; i < row.length; i++) {
        run = row.charCodeAt(i) === 49 /* "1" */ ? run + 1 : 0;
        if (run < k) continue;
        const first = i - k + 1;
        const minute = first * cells.cellMinutes;
        const known = starts.get(minute);
        if (known) {
          known.resources.push(rid);
          continue;
        }
        const { millis, iso } = wallClock(date, minute);
        if (millis <= nowMillis) continue;
        starts.set(minute, { start: iso, millis, minute, resource: rid, resources: [rid], date });
      }
    }
    byDate.set(date, [...starts.values()].sort((a, b) => a.minute - b.minute));
  }
  return byDate;
}
