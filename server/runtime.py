"""Process-level tuning for a server that keeps a large, long-lived heap.

The slot tables, bookings and indexes are millions of long-lived objects. CPython's cyclic
garbage collector would otherwise walk all of them on every full collection, stalling every
region actor for tens of milliseconds (seen as p99 spikes in ``python -m loadtest.bench actor``).
After recovery we move everything alive into the permanent generation (``gc.freeze``) and
collect the young generation less often; reference counting still frees almost everything.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Iterator

_paused = 0  # nesting depth of gc_paused()
_was_enabled = True


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic GC off while the block runs, and while any other ``gc_paused`` block that
    started before it still runs (concurrent recoveries, a server's whole start): it is turned
    back on (if it was on) only when the last one ends. One event loop only (not thread-safe)."""
    global _paused, _was_enabled
    if _paused == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
    _paused += 1
    try:
        yield
    finally:
        _paused -= 1
        if _paused == 0 and _was_enabled:
            gc.enable()


def tune_gc() -> None:
    """Call ONCE, after everything long-lived is loaded (regions recovered, consumers started):
    one full collection, everything alive moved to the permanent generation, then young
    collections less often. The one GC policy of a server's start."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    release_free_memory()


@contextlib.contextmanager
def long_lived_made() -> Iterator[None]:
    """Around the making of a start's later long-lived objects (the notifier's first plan of
    reminders: a reminder and a heap entry per lead for every booking in the next 36 hours,
    hundreds of thousands for Sweden at 30%): no collections meanwhile (``gc_paused``), then
    what is alive is moved to the permanent generation too (``gc.freeze``, no collection). Made
    after ``tune_gc`` with the collector on, they set off a young collection every ~50,000 (12 of
    14-36 ms each in the 2.5 s after /ready in a bench mix run, the loop held through each), and
    were left for later collections to walk. What became garbage in a cycle meanwhile stays."""
    with gc_paused():
        yield
        # frozen before the collector is back on: the first allocation after it would otherwise
        # set off one young collection of all of it (140-210 ms in four bench mix runs)
        gc.freeze()


# How often a thread waiting for the GIL takes it from the event loop while the loop runs a long
# job of its own (CPython's default: 5 ms).
LONG_JOB_SWITCH_S = 0.0005


_served_often = 0  # nesting depth of threads_served_often()
_switch_before = 0.005


@contextlib.contextmanager
def threads_served_often() -> Iterator[None]:
    """A worker thread waiting for the GIL gets it within ``LONG_JOB_SWITCH_S``, not CPython's 5 ms,
    while any such block runs: around a long job on the event loop's thread (the notifier's first
    plan, ~1 s for Sweden at 30%), and while a request waits for a worker thread that makes many
    calls letting the GIL go (a sign-up or sign-in: argon2, then SQLite; each call waits to take
    the GIL back while the loop is busy). The loop yields to other coroutines between a job's
    chunks but never lets go of the GIL: the first two sign-ups after /ready took ~800 ms where
    they take ~30. Not for the whole run: more switches cost the loop throughput (bench http at
    1 ms booked fewer per second). One event loop only (not thread-safe)."""
    global _served_often, _switch_before
    if _served_often == 0:
        _switch_before = sys.getswitchinterval()
        sys.setswitchinterval(min(_switch_before, LONG_JOB_SWITCH_S))
    _served_often += 1
    try:
        yield
    finally:
        _served_often -= 1
        if _served_often == 0:
            sys.setswitchinterval(_switch_before)


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system (glibc ``malloc_trim``; elsewhere nothing).
    Loading snapshots and packing them frees hundreds of MB of short-lived buffers that glibc
    otherwise keeps as resident memory. Blocking for a few ms on a large heap: call it once
    after a start, or in a worker thread."""
    if _libc is not None:
        _libc.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    return libc


_libc = _glibc()
