"""Parts of the process that are down while the rest serves: what ``/ready`` reports as degraded.

A part is named by what it is (``notifier``, ``webhooks``, ``region``) and the region it works
for (``AB``, or ``*`` for a part that serves every region). Whoever runs a part calls
``down(part, region, why)`` when it stops and ``up(part, region)`` once it works again;
``note`` records a trouble that stays until the process restarts (history found trimmed: the
facts in it are gone for good, an operator should know). ``why`` is a kind and a position,
never personal data: it is served on ``/ready``.

    Health.degraded() -> [{"part": "notifier", "region": "AB", "why": "JournalUnavailable",
                           "since": 1764600000.0, "restarts": 3, "sticky": False}, ...]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(slots=True)
class Trouble:
    part: str
    region: str
    why: str
    since: float  # epoch seconds of the first failure of this spell
    restarts: int = 0  # failures in this spell (each one a restart of the part)
    sticky: bool = False  # stays until the process restarts (see ``Health.note``)


class Health:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._troubles: dict[tuple[str, str], Trouble] = {}
        self._notes: dict[tuple[str, str], Trouble] = {}

    def down(self, part: str, region: str, why: str) -> None:
        """``part`` of ``region`` stopped (again): it is restarting, or waiting to."""
        trouble = self._troubles.get((part, region))
        if trouble is None:
            self._troubles[(part, region)] = Trouble(part, region, why, self._clock(), 1)
        else:
            trouble.why = why
            trouble.restarts += 1

    def up(self, part: str, region: str) -> None:
        self._troubles.pop((part, region), None)

    def note(self, part: str, region: str, why: str) -> None:
        """A trouble that does not heal by a restart of the part; the last ``why`` wins."""
        self._notes[(part, region)] = Trouble(part, region, why, self._clock(), 0, sticky=True)

    def is_down(self, part: str, region: str) -> bool:
        return (part, region) in self._troubles

    def degraded(self) -> list[dict[str, object]]:
        troubles = [*self._troubles.values(), *self._notes.values()]
        return [asdict(t) for t in sorted(troubles, key=lambda t: (t.part, t.region, t.sticky))]
