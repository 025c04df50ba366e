"""Benchmark of the pure slot engine: mixed commands per second on one core.

Builds a region (200 clinics x 3 resources x 30 open days by default), precomputes a
mixed stream of commands (place hold, book from hold, book direct, cancel by patient and
by clinic, block, unblock, refusals, ticks) by running it once on a planning copy, then
times ``state.apply(cmd, now)`` over the stream on a fresh copy, with one
``take_changes()`` per 256 commands. For scale it also times a bare loop doing only the
same bytearray slice updates (check the run, write it, record the change) with no
validation, events or records: the interpreter's limit for this work.

Usage: ``python -m loadtest.bench.engine [--clinics N] [--commands N] [--seed N]``.
Each figure is the best of ``--repeat`` runs. Prints and returns one JSON dict.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import date
from typing import Any

from engine.calendar import cell_epoch, day_of
from engine.cells import BOOKED, BUFFER, FREE, HELD
from engine.commands import (
    Block,
    Book,
    Cancel,
    Command,
    OpenDays,
    Party,
    PlaceHold,
    RegisterClinic,
    ReleaseHold,
    Tick,
    Unblock,
)
from engine.errors import Refused
from engine.events import Booked, HoldPlaced
from engine.model import Clinic, ClinicKind, Resource, ResourceKind
from engine.state import Change, RegionState

SERVICES = ("checkup", "cleaning", "emergency", "filling", "child_checkup")


def build_region(clinics: int, days: int, first_day: int, now: int) -> RegionState:
    state = RegionState("AB")
    for c in range(clinics):
        cid = f"AB-c{c}"
        clinic = Clinic(
            cid,
            f"Klinik {c}",
            "AB",
            "0180",
            "Stockholm",
            f"Gatan {c}",
            59.3,
            18.0,
            ClinicKind.PUBLIC,
            SERVICES,
            max_bookings_per_patient=1000,
        )
        resources = tuple(
            Resource(f"{cid}-r{r}", cid, ResourceKind.DENTIST, f"Tandläkare {r}", SERVICES) for r in range(3)
        )
        state.apply(RegisterClinic(clinic, resources), now)
        for res in resources:
            state.apply(OpenDays(res.id, first_day, days), now)
    state.take_changes()
    return state


def plan(
    state: RegionState,
    n: int,
    seed: int,
    first_day: int,
    days: int,
    now0: int,
) -> tuple[list[tuple[Command, int]], list[list[Change]]]:
    """The command stream (command, now) and, per command, the cell changes it made."""
    rng = random.Random(seed)
    clinic_ids = sorted(state.clinics)
    stream: list[tuple[Command, int]] = []
    effects: list[list[Change]] = []
    holds: list[tuple[str, str]] = []  # (hold id, patient)
    bookings: list[tuple[str, str, str]] = []  # (booking id, patient, clinic)
    blocks: list[Unblock] = []
    now = now0

    def pick_start() -> tuple[str, str, int, int]:
        clinic = rng.choice(clinic_ids)
        return (
            f"{clinic}-r{rng.randrange(3)}",
            rng.choice(SERVICES),
            first_day + rng.randrange(days),
            32 + rng.randrange(36),
        )

    for i in range(n):
        seq = i + 1
        patient = f"p{rng.randrange(50_000)}"
        roll = rng.random()
        cmd: Command
        if i % 256 == 255:
            now += 5
            cmd = Tick()
        elif roll < 0.30:
            res, svc, day, cell = pick_start()
            cmd = PlaceHold(f"AB-h{seq}", patient, res, svc, day, cell, ttl_s=120)
        elif roll < 0.50 and holds:
            hold_id, owner = holds.pop(rng.randrange(len(holds)))
            cmd = Book(f"AB-b{seq}", owner, hold_id=hold_id)
        elif roll < 0.68:
            res, svc, day, cell = pick_start()
            cmd = Book(f"AB-b{seq}", patient, res, svc, day, cell)
        elif roll < 0.80 and bookings:
            booking_id, owner, clinic = bookings.pop(rng.randrange(len(bookings)))
            cmd = (
                Cancel(booking_id, Party.PATIENT, owner)
                if rng.random() < 0.6
                else Cancel(booking_id, Party.CLINIC, clinic)
            )
        elif roll < 0.85:
            res, _, day, cell = pick_start()
            cmd = Block(res, day, cell, 1 + rng.randrange(4))
            blocks.append(Unblock(cmd.resource, cmd.day, cmd.cell, cmd.cells))
        elif roll < 0.90 and blocks:
            cmd = blocks.pop(rng.randrange(len(blocks)))
        elif roll < 0.95 and holds:
            hold_id, owner = holds[rng.randrange(len(holds))]
            cmd = ReleaseHold(hold_id, f"x{owner}")  # refusal: NOT_YOURS
        else:
            cmd = Book(f"AB-b{seq}", patient, "AB-nope", "checkup", first_day, 40)  # refusal: NOT_FOUND
        try:
            events = state.apply(cmd, now)
        except Refused:
            events = []
        for e in events:
            if isinstance(e, HoldPlaced):
                holds.append((e.hold_id, e.patient))
            elif isinstance(e, Booked):
                bookings.append((e.booking_id, e.patient, e.clinic))
        stream.append((cmd, now))
        effects.append(state.take_changes())
    return stream, effects


def time_engine(state: RegionState, stream: list[tuple[Command, int]]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, refused count) for applying the stream."""
    apply, take = state.apply, state.take_changes
    refused = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    for i, (cmd, now) in enumerate(stream):
        try:
            apply(cmd, now)
        except Refused:
            refused += 1
        if i & 255 == 255:
            take()
    take()
    return time.perf_counter() - t0, time.process_time() - c0, refused


def time_bare(state: RegionState, effects: list[list[Change]]) -> float:
    """Only the slice work: per change, look the row up, read the run, write it, record it."""
    rows = {rid: state.resource_row(rid) for rid in state.resources}
    runs = {v: [bytes([v]) * n for n in range(97)] for v in (FREE, HELD, BOOKED, BUFFER, 0, 4)}
    changes: list[Change] = []
    t0 = time.perf_counter()
    for i, effect in enumerate(effects):
        for ch in effect:
            row = rows[ch[1]]
            off = (ch[2] - row.first_day) * row.cpd + ch[3]
            run = runs[ch[5]][ch[4]]
            if row.buf[off : off + ch[4]] != run:
                row.buf[off : off + ch[4]] = run
            changes.append(ch)
        if i & 255 == 255:
            changes = []
    return time.perf_counter() - t0


def main(argv: list[str]) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="bench engine")
    p.add_argument("--clinics", type=int, default=200)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--commands", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repeat", type=int, default=3, help="best of N runs (the machine may be shared)")
    args = p.parse_args(argv)
    first_day = day_of(date(2026, 11, 23))
    now0 = cell_epoch(first_day - 2, 0, 15)
    planning = build_region(args.clinics, args.days, first_day, now0)
    initial = planning.to_snapshot()
    stream, effects = plan(planning, args.commands, args.seed, first_day, args.days, now0)
    final = planning.to_snapshot()
    elapsed = cpu = bare = float("inf")
    refused = 0
    for _ in range(max(1, args.repeat)):
        timed = RegionState.from_snapshot(initial)
        took, took_cpu, refused = time_engine(timed, stream)
        elapsed, cpu = min(elapsed, took), min(cpu, took_cpu)
        if timed.to_snapshot() != final:
            raise AssertionError("the timed run diverged from the planning run")
        bare = min(bare, time_bare(RegionState.from_snapshot(initial), effects))
    result = {
        "bench": "engine",
        "commands_per_s": round(len(stream) / elapsed),
        "bare_loop_per_s": round(len(stream) / bare),
        "ratio": round(bare / elapsed, 3),
        "commands": len(stream),
        "cpu_commands_per_s": round(len(stream) / cpu),
        "refused": refused,
        "changes": sum(len(e) for e in effects),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
