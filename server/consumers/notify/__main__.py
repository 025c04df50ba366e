"""``python -m server.consumers.notify --data DIR [--redis URL] [--regions AB,M]``: the notifier on its own.

Reads the journal of ``DIR`` (or Redis), keeps its cursor in ``DIR/notify.sqlite3``, sends
by SMTP (``TANDTID_SMTP_*``) or into ``DIR/outbox``. Stops cleanly on SIGTERM/SIGINT; a
SIGKILL loses nothing either (it resumes from its cursor without repeats).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from persistence.journal import Journal
from server.consumers.notify.notifier import Notifier


async def run(data_dir: Path, redis_url: str | None, regions: list[str] | None) -> int:
    journal: Journal
    if redis_url:
        from persistence.redis_journal import RedisStreamJournal

        journal = RedisStreamJournal(redis_url)
    else:
        from persistence.file_journal import FileJournal

        journal = FileJournal(data_dir, read_only=True)
    await journal.open()
    notifier = Notifier.from_env(journal, data_dir, regions=regions, redis_url=redis_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await notifier.start()
        await notifier.wait_caught_up()
        print("notifier caught up", flush=True)
        await stop.wait()
    finally:
        await notifier.stop()
        await journal.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.consumers.notify", description=__doc__)
    parser.add_argument("--data", default=os.environ.get("TANDTID_DATA_DIR", "./data"))
    parser.add_argument("--redis", default=os.environ.get("TANDTID_REDIS_URL") or None)
    parser.add_argument("--regions", default=None, help="comma-separated region codes (default: all 21)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    regions = [r.strip() for r in args.regions.split(",") if r.strip()] if args.regions else None
    return asyncio.run(run(Path(args.data), args.redis, regions))


if __name__ == "__main__":
    sys.exit(main())
