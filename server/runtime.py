"""Process-level tuning for a server that keeps a large, long-lived heap.

The slot tables, bookings and indexes are millions of long-lived objects. CPython's cyclic
garbage collector would otherwise walk all of them on every full collection, stalling every
region actor for tens of milliseconds (seen as p99 spikes in ``python -m loadtest.bench actor``).
After recovery we move everything alive into the permanent generation (``gc.freeze``) and
collect the young generation less often; reference counting still frees almost everything.
"""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """Call once state is loaded (after recovery or seeding)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
