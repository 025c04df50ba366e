"""Cancelling a task for good.

On Python 3.11 ``asyncio.wait_for`` (inside redis-py, aiosmtplib, ...) returns normally when a
cancel arrives just as its inner future completes: the task goes on as if it had never been
cancelled (only ``Task.cancelling()`` still says it was). Whoever cancels a task once and then
awaits it may wait for ever: a lease hand-back that unfollowed a region's consumers did (the
node kept writing regions whose leases it had already handed back).
"""

from __future__ import annotations

import asyncio
from typing import Any

AGAIN_EVERY_S = 0.1


async def cancel_until_done(task: asyncio.Future[Any], *, every_s: float = AGAIN_EVERY_S) -> None:
    """Cancel ``task`` again every ``every_s`` seconds until it has ended (however it ends:
    the caller reads its outcome if it cares)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every_s)
