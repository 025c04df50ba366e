"""The consumers' own worker threads.

Consumers' blocking work (outbox and ledger writes, composing a run's e-mails, cursor flushes,
store reads) runs here, never on asyncio's default executor: that one serves the request path's
hops (a sign-up's password hash, an account look-up), which must not queue behind a run's
fsync'd writes. Two threads: one may wait on an fsync while the other composes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
CONSUMER_THREADS = 2
_workers = concurrent.futures.ThreadPoolExecutor(CONSUMER_THREADS, thread_name_prefix="consumer")


async def in_consumer_thread(work: Callable[..., T], /, *args: object, **kwargs: object) -> T:
    """``asyncio.to_thread`` for consumers: ``work(*args, **kwargs)`` on the consumers' own threads."""
    call = functools.partial(work, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_workers, call)
