"""tandtid's Locust entry point: ``locust -f loadtest/locustfile.py --host http://127.0.0.1:8000``.

Opens the web UI (http://localhost:8089) where you pick the number of users; the user classes
and their mix are in ``loadtest/users.py``. Run it single-process (no ``--processes``): the
end-of-run invariant check reads the bookings every user was told about from this process.

Nothing needs setting against a server started with ``tandtid serve --seed`` (rate limit off:
``TANDTID_RATE_PER_S=0``). When the run starts without ``TANDTID_LT_CLINIC_KEYS``, keys for three
busy clinics are created through the admin API (``loadtest/clinic_keys.py``) for the clinic
systems and the flash crowd's releases; if that fails, one warning says what is skipped. When a
run stops, the invariant check (``loadtest/invariants.py``) signs in as the same admin and
compares the server's bookings with what the users were told; its result is logged as one JSON
line and a failure sets Locust's exit code to 1. ``python -m loadtest.run`` does all of this
headless, with a server of its own.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run by path (locust -f loadtest/locustfile.py): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from locust import events
from locust.env import Environment

from loadtest import invariants
from loadtest.clinic_keys import NoClinicKeys, keys_through_api
from loadtest.users import ClinicSystemUser, FlashCrowd, KioskUser, PatientUser, config

__all__ = ["ClinicSystemUser", "FlashCrowd", "KioskUser", "PatientUser"]

log = logging.getLogger("tandtid.loadtest")
LAST_REPORT: dict[str, Any] = {}
CLINIC_KEYS = 3  # created when none are given; the first is the flash crowd's clinic


@events.test_start.add_listener  # type: ignore[untyped-decorator]  # unannotated in locust
def _reset_ledger(environment: Environment, **_: Any) -> None:
    invariants.LEDGER.reset()


@events.test_start.add_listener  # type: ignore[untyped-decorator]  # unannotated in locust
def _create_clinic_keys(environment: Environment, **_: Any) -> None:
    if environment.host is None or "TANDTID_LT_CLINIC_KEYS" in os.environ:
        return
    cfg = config()
    try:
        keys = keys_through_api(
            environment.host.rstrip("/"),
            cfg.regions[0],
            CLINIC_KEYS,
            admin_email=cfg.admin_email,
            admin_password=cfg.admin_password,
        )
    except NoClinicKeys as exc:
        log.warning("clinic systems and the flash crowd's releases are skipped: %s", exc)
        keys = {}
    else:
        log.info("clinic keys created through the admin API for %s", ", ".join(keys))
    os.environ["TANDTID_LT_CLINIC_KEYS"] = ",".join(f"{c}={k}" for c, k in keys.items())
    os.environ["TANDTID_LT_FLASH_CLINIC"] = next(iter(keys), "")


@events.test_stop.add_listener  # type: ignore[untyped-decorator]  # unannotated in locust
def _check_invariant(environment: Environment, **_: Any) -> None:
    if environment.host is None or os.environ.get("TANDTID_LT_SKIP_CHECK"):
        return
    cfg = config()
    report = invariants.check(
        environment.host, invariants.LEDGER, admin_email=cfg.admin_email, admin_password=cfg.admin_password
    )
    LAST_REPORT.clear()
    LAST_REPORT.update(report.as_dict())
    log.info("invariant %s", json.dumps(LAST_REPORT))
    if not report.ok:
        environment.process_exit_code = 1
