"""``python -m loadtest.bench mail``: what one confirmation e-mail costs the notifier, in CPU time of
its thread (``time.thread_time``: user + system, whatever else the machine runs).

Composes ``--messages`` e-mails (every kind in turn: booked, cancelled with a long reason, moved,
offer, reminder; a patient, clinic and address with Swedish letters) with the notifier's own
``compose``, whose result is the finished bytes (there is no separate serialising step), then
writes them to a fresh local outbox (``<tmp>/outbox``, the channel without an SMTP host, as
``make run`` and ``bench http`` have it) in batches of ``--batch``, as the notifier does.

Prints one JSON line: ``compose_cpu_us`` and ``outbox_cpu_us`` / ``outbox_wall_us`` per message
(the median of ``--repeat`` rounds), the bytes of a message and the 1-minute load average.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.calendar import day_of
from engine.model import ClinicKind
from engine.records import Booking, BookingStatus
from loadtest.bench.catalog import FIRST_DATE, bench_catalog, bench_now
from loadtest.bench.memory import loadavg
from server.consumers.notify.messages import Mail, compose
from server.consumers.notify.outbox import Outbox

REASON = (
    "Tandläkaren är sjuk hela veckan och vi har tyvärr inte kunnat hitta någon ersättare; ring oss "
    "så hittar vi en ny tid åt dig så snart som möjligt. Vi ber om ursäkt för besväret!"
)


def messages(count: int) -> list[Mail]:
    first_day = day_of(FIRST_DATE)
    now = bench_now(first_day)
    clinic = replace(  # the benches' first Stockholm clinic, with Swedish letters to encode
        bench_catalog("AB", 1, 1, days=1)[0][0][0],
        name="Folktandvården Södermalm Åsögatan",
        address="Åsögatan 133, 116 24 Stockholm",
        kind=ClinicKind.PUBLIC,
        phone="08-123 456 78",
    )
    booking = Booking(
        "AB-b1", "p1", "AB-c1", "AB-c1-r1", "checkup", first_day + 3, 36, 2, BookingStatus.BOOKED, now
    )
    cancelled = replace(
        booking, status=BookingStatus.CANCELLED, cancelled_at=now, cancelled_by="clinic", cancel_reason=REASON
    )
    kinds: list[tuple[str, dict[str, Any]]] = [
        ("booked", {"booking": booking}),
        ("cancelled", {"booking": cancelled, "by": "clinic"}),
        ("rescheduled", {"booking": booking, "previous": replace(booking, day=first_day + 1)}),
        ("offer", {"booking": booking}),
        ("reminder", {"booking": booking, "lead_s": 24 * 3600}),
    ]
    out = []
    for i in range(count):
        kind, arguments = kinds[i % len(kinds)]
        out.append(
            compose(
                kind,
                f"AB:{i + 1}:0:{kind}",
                clinic=clinic,
                to_name="Åsa Öberg-Lindqvist",
                to_email="asa.oberg@example.test",
                sender="Tandtid <no-reply@tandtid.se>",
                now_s=now,
                **arguments,
            )
        )
    return out


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench mail")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=20, help="messages per outbox write (one worker call)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    messages(50)  # warm up: imports, time zone, caches
    compose_us, outbox_us, outbox_wall_us = [], [], []
    size = 0
    for _ in range(args.repeat):
        started = time.thread_time()
        mails = messages(args.messages)
        compose_us.append((time.thread_time() - started) / args.messages * 1e6)
        size = round(statistics.mean(len(m.data) for m in mails))
        with tempfile.TemporaryDirectory() as tmp:
            outbox = Outbox(Path(tmp) / "outbox")
            started, wall = time.thread_time(), time.perf_counter()
            for i in range(0, len(mails), args.batch):
                outbox.put_many(mails[i : i + args.batch])
            outbox_us.append((time.thread_time() - started) / args.messages * 1e6)
            outbox_wall_us.append((time.perf_counter() - wall) / args.messages * 1e6)
    result = {
        "bench": "mail",
        "messages": args.messages,
        "compose_cpu_us": round(statistics.median(compose_us), 1),
        "outbox_cpu_us": round(statistics.median(outbox_us), 1),
        "outbox_wall_us": round(statistics.median(outbox_wall_us), 1),
        "batch": args.batch,
        "bytes_per_message": size,
        "loadavg_1m": loadavg(),
    }
    print(json.dumps(result))
    return result
