"""A child process for crash tests: books through a real RegionActor on a FileJournal and
prints ``ACK <booking id>`` for every booking whose future resolved, flushing each line.
The parent kills it with SIGKILL mid-load.

    python -m tests.support.booking_child DATA_DIR
"""

from __future__ import annotations

import asyncio
import sys

from engine.commands import Book
from engine.errors import Refused
from persistence.file_journal import FileJournal
from server.regions.actor import RegionActor
from tests.support.catalog import CELL_0900, FIRST_DAY, NOW, setup_commands

CLINICS, RESOURCES, DAYS = 10, 3, 5


async def main(directory: str) -> None:
    journal = FileJournal(directory)
    await journal.open()
    actor = RegionActor("AB", journal, clock=lambda: NOW)
    await actor.start()
    if not actor.state.clinics:
        await asyncio.gather(*(actor.submit(c) for c in setup_commands("AB", CLINICS, RESOURCES, DAYS)))
        print("READY", flush=True)
    out = sys.stdout

    async def one(n: int, booking_id: str, resource: str, day: int, cell: int) -> None:
        try:
            await actor.submit(Book(booking_id, f"p{n}", resource, "child_checkup", day, cell))
        except Refused:
            return
        out.write(f"ACK {booking_id}\n")
        out.flush()

    n = 0
    tasks = set()
    for day in range(FIRST_DAY, FIRST_DAY + DAYS):
        for cell in range(CELL_0900 - 4, CELL_0900 + 12):
            for c in range(1, CLINICS + 1):
                for r in range(1, RESOURCES + 1):
                    n += 1
                    task = asyncio.create_task(one(n, f"AB-b{n}", f"AB-c{c}-r{r}", day, cell))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    if len(tasks) >= 200:
                        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    print("DONE", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
