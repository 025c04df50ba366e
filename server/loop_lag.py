"""Event-loop lag: how late a timer fires, as a Prometheus histogram (``tandtid_event_loop_lag_seconds``),
and where the loop was when it stalled.

A task sleeps ``interval`` seconds again and again and observes how much later than asked it
woke up. Anything that holds the loop (a long query, a snapshot on the actor, a GC pause)
shows up as lag, so the histogram's tail is the stall every request on the loop could meet.

With ``stall_ms`` > 0 a watchdog thread also looks at the loop every ``stall_ms / 2``: when the
timer task has not run for ``stall_ms``, it takes the loop thread's stack (code locations only:
file, line, function; never a local variable, so no personal data) and logs it once per stall as
a warning on ``tandtid.stall``, counting ``tandtid_event_loop_stalls_total``; when the loop runs
again, a second warning says how long the stall held it in all (with the same stack). A stack
taken in the middle of a stall shows what holds the loop, which the histogram cannot.

Start one per process (``LoopLag(...).start()``, in the app's lifespan) and ``await stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import threading
import time
import traceback

from server import metrics

log = logging.getLogger("tandtid.stall")

STACK_FRAMES = 12  # innermost frames logged per stall


class LoopLag:
    def __init__(self, interval: float = 0.02, stall_ms: int = 0) -> None:
        self.interval = interval
        self.stall_s = stall_ms / 1000
        self._task: asyncio.Task[None] | None = None
        self._watchdog: threading.Thread | None = None
        self._stopping = threading.Event()
        self._beat = time.perf_counter()
        self._gc_started = 0.0

    def start(self) -> None:
        if self.stall_s > 0 and self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)
        if self._task is None:
            self._beat = time.perf_counter()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="event-loop-lag")
        if self.stall_s > 0 and self._watchdog is None:
            self._stopping.clear()
            self._watchdog = threading.Thread(
                target=self._watch, args=(threading.get_ident(),), name="event-loop-stalls", daemon=True
            )
            self._watchdog.start()

    async def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._watchdog is not None:
            self._stopping.set()
            await asyncio.to_thread(self._watchdog.join)
            self._watchdog = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        observe, clock, interval = metrics.EVENT_LOOP_LAG.observe, time.perf_counter, self.interval
        while True:
            asked = clock() + interval
            await asyncio.sleep(interval)
            now = clock()
            self._beat = now
            observe(max(0.0, now - asked))

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        """A cyclic garbage collection holds the whole process (every thread waits for the GIL),
        and the watchdog cannot see it (it waits too, and the loop's timer runs first after it):
        one longer than ``stall_ms`` is logged with its generation and what it collected."""
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        held = time.perf_counter() - self._gc_started
        if held >= self.stall_s:
            metrics.EVENT_LOOP_STALLS.inc()
            log.warning(
                "event loop held for %d ms in all, at: garbage collection of generation %d (%d collected)",
                held * 1000,
                info.get("generation", -1),
                info.get("collected", 0),
            )

    def _watch(self, loop_thread: int) -> None:
        """The watchdog thread: one warning per stall, with the loop thread's stack mid-stall, and
        one more when the stall is over, saying how long it held the loop in all."""
        clock, limit = time.perf_counter, self.interval + self.stall_s
        stalled: tuple[float, str] | None = None  # the beat before the stall being reported, its stack
        while not self._stopping.wait(self.stall_s / 2):
            beat = self._beat
            if stalled is not None and beat != stalled[0]:
                held_ms = (beat - stalled[0] - self.interval) * 1000
                log.warning("event loop held for %d ms in all, at: %s", held_ms, stalled[1])
                stalled = None
            held = clock() - beat
            if held < limit or stalled is not None:
                continue
            frame = sys._current_frames().get(loop_thread)
            if frame is None:
                return
            metrics.EVENT_LOOP_STALLS.inc()
            stack = traceback.extract_stack(frame)[-STACK_FRAMES:]
            where = " <- ".join(f"{f.name} ({f.filename}:{f.lineno})" for f in reversed(stack))
            stalled = (beat, where)
            log.warning("event loop held for %d ms so far, at: %s", (held - self.interval) * 1000, where)
