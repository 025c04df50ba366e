"""The Locust users of a tandtid load test: patients, kiosks, clinic systems, a flash crowd.

- ``PatientUser``: opens the map (a region subscription), searches, opens a clinic (a clinic
  subscription), reads its free times, sometimes holds then confirms, sometimes books directly,
  sometimes cancels or moves one of its bookings.
- ``KioskUser``: one long-lived clinic subscription for today.
- ``ClinicSystemUser``: a clinic's API key; opens days, blocks and unblocks time, reads its day.
- ``FlashCrowd``: many patients watching one clinic race for the same few times the moment they
  are released (a clinic system blocks a free hour, then unblocks it: every crowd member sees the
  cells turn FREE in a diff and books one of them; exactly one wins each time).

Configuration comes from the environment (``loadtest.run`` sets it):
``TANDTID_LT_CLINIC_KEYS`` (``CLINIC=KEY,CLINIC=KEY``), ``TANDTID_LT_FLASH_CLINIC``,
``TANDTID_LT_REGIONS`` (default ``AB,O,M``), ``TANDTID_LT_ADMIN_EMAIL``/``_PASSWORD`` (the
invariant check's admin; default the demo admin that ``tandtid serve --seed`` creates).

Statistics: 409 ``SLOT_TAKEN`` and 410 ``HOLD_EXPIRED`` are the expected outcomes of a race and
count as successes; any other non-2xx is a failure. Every booking a user is told about goes to
``loadtest.invariants.LEDGER``. Users book from the day after tomorrow on, so a cancellation or a
move is never inside the clinics' 24-hour notice, and keep under the 3-bookings-per-clinic limit.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

import gevent
from gevent import GreenletExit
from gevent.lock import Semaphore
from gevent.queue import Empty, Queue
from locust import FastHttpUser, between, constant, task
from locust.exception import StopUser

from engine.calendar import day_of, iso
from engine.model import SERVICES_BY_ID
from loadtest.invariants import LEDGER, PendingBook, PendingCancel
from loadtest.ws_user import WebSocketUser

log = logging.getLogger("tandtid.loadtest")

TZ = ZoneInfo("Europe/Stockholm")
EXPECTED = frozenset({"SLOT_TAKEN", "HOLD_EXPIRED"})
SERVICES = ("checkup", "checkup", "checkup", "cleaning", "emergency", "filling", "child_checkup")
FREE = 1
FIRST_OFFSET = 2  # days ahead: beyond every clinic's 24 h cancellation notice
WINDOW_DAYS = 7
FLASH_SERVICE = "child_checkup"  # what the flash crowd books
MAX_PER_CLINIC = 3  # the clinics' default max_bookings_per_patient
DEMO_ADMIN = ("admin@demo.tandtid.se", "tandtid-demo")
REGISTRATIONS = Semaphore(2)


@dataclass
class LoadConfig:
    clinic_keys: dict[str, str] = field(default_factory=dict)
    flash_clinic: str | None = None
    regions: list[str] = field(default_factory=lambda: ["AB", "O", "M"])
    admin_email: str = DEMO_ADMIN[0]
    admin_password: str = DEMO_ADMIN[1]

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> LoadConfig:
        env = dict(os.environ) if env is None else env
        keys = {}
        for pair in env.get("TANDTID_LT_CLINIC_KEYS", "").split(","):
            if "=" in pair:
                clinic, key = pair.split("=", 1)
                keys[clinic.strip()] = key.strip()
        flash = env.get("TANDTID_LT_FLASH_CLINIC") or (next(iter(keys)) if keys else None)
        regions = [r.strip() for r in env.get("TANDTID_LT_REGIONS", "AB,O,M").split(",") if r.strip()]
        return cls(
            keys,
            flash,
            regions,
            env.get("TANDTID_LT_ADMIN_EMAIL", DEMO_ADMIN[0]),
            env.get("TANDTID_LT_ADMIN_PASSWORD", DEMO_ADMIN[1]),
        )


def config() -> LoadConfig:
    """Read once per user start, so ``loadtest.run`` can set the environment before the run."""
    return LoadConfig.from_env()


def today() -> dt.date:
    return dt.datetime.now(TZ).date()


def start_iso(date: dt.date, cell: int, cell_minutes: int) -> str:
    return iso(day_of(date), cell, cell_minutes)


def free_runs(cells: str, length: int) -> list[int]:
    """First cells of every run of ``length`` FREE cells (non-overlapping) in a day's cell string."""
    return [m.start() for m in re.finditer("1" * length, cells)]


# -- HTTP with Locust's bookkeeping ------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: Any
    code: str = ""


def call(
    user: FastHttpUser,
    method: str,
    path: str,
    *,
    name: str,
    token: str | None = None,
    json: Any = None,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request: 2xx and the expected race outcomes are successes, the rest failures."""
    if params:
        path = f"{path}?{urlencode(params)}"
    all_headers = dict(headers or {})
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    with user.client.request(
        method, path, name=name, json=json, headers=all_headers, catch_response=True
    ) as resp:
        status = resp.status_code or 0
        body: Any = None
        if resp.content:
            try:
                body = resp.json()
            except ValueError:
                body = None
        code = body.get("error", {}).get("code", "") if isinstance(body, dict) and status >= 400 else ""
        if 200 <= status < 300:
            resp.success()
        elif code in EXPECTED:
            resp.success()
            LEDGER.refused(code)
        elif status == 0:
            resp.failure(f"no answer: {getattr(resp, 'error', None)!r}")
        else:
            resp.failure(f"{status} {code or 'unexpected'}")
    return Reply(status, body, code)


class PatientSession:
    """A registered patient and the bookings the server told it about (kept in the ledger too)."""

    def __init__(self, user: FastHttpUser) -> None:
        self.user = user
        self.token = ""
        self.user_id = ""
        self.bookings: dict[str, dict[str, Any]] = {}
        self.clinic_cache: dict[str, dict[str, Any]] = {}

    def register(self) -> None:
        """Sign up (a fresh e-mail each time). At most ``REGISTRATIONS`` sign-ups are in flight: the
        server hashes one password per core at a time, and a crowd of users spawning at once would
        otherwise queue there past the client's timeout. An unanswered sign-up is tried again."""
        for _ in range(3):
            email = f"lt-{uuid.uuid4().hex}@load.test"
            with REGISTRATIONS:
                reply = call(
                    self.user,
                    "POST",
                    "/api/auth/register",
                    name="/api/auth/register",
                    json={"email": email, "password": uuid.uuid4().hex, "name": "Load Tester"},
                )
            if reply.status == 201:
                break
        else:
            raise StopUser()
        self.token = reply.body["token"]
        self.user_id = reply.body["user"]["id"]
        LEDGER.patient(self.user_id)

    def get(self, path: str, name: str, params: dict[str, Any] | None = None) -> Reply:
        return call(self.user, "GET", path, name=name, token=self.token, params=params)

    def clinic(self, clinic_id: str) -> dict[str, Any] | None:
        if clinic_id not in self.clinic_cache:
            reply = self.get(f"/api/clinics/{quote(clinic_id)}", "/api/clinics/[id]")
            if reply.status != 200:
                return None
            self.clinic_cache[clinic_id] = reply.body
        return self.clinic_cache[clinic_id]

    def availability(self, clinic_id: str, service: str, first: dt.date) -> list[dict[str, Any]]:
        reply = self.get(
            f"/api/clinics/{quote(clinic_id)}/availability",
            "/api/clinics/[id]/availability",
            {"service": service, "from": first.isoformat(), "days": WINDOW_DAYS},
        )
        if reply.status != 200:
            return []
        return [t for d in reply.body["days"] for t in d["times"]]

    def at_clinic(self, clinic_id: str) -> list[str]:
        return [b for b, view in self.bookings.items() if view["clinic"] == clinic_id]

    def hold(self, clinic_id: str, resource: str, service: str, start: str) -> dict[str, Any] | None:
        reply = call(
            self.user,
            "POST",
            "/api/holds",
            name="/api/holds",
            token=self.token,
            json={"clinic": clinic_id, "resource": resource, "service": service, "start": start},
        )
        return reply.body["hold"] if reply.status == 201 else None

    def release_hold(self, hold_id: str) -> None:
        call(self.user, "DELETE", f"/api/holds/{quote(hold_id)}", name="/api/holds/[id]", token=self.token)

    def book(self, body: dict[str, Any], name: str) -> dict[str, Any] | None:
        """Book; an unanswered attempt is retried with the same Idempotency-Key (safe: the server
        answers a repeat with the first booking). Returns the booking, or None if refused."""
        key = uuid.uuid4().hex
        pending = PendingBook(self.token, body, key)
        try:
            for _ in range(3):
                reply = call(
                    self.user,
                    "POST",
                    "/api/bookings",
                    name=name,
                    token=self.token,
                    json=body,
                    headers={"Idempotency-Key": key},
                )
                if reply.status == 201:
                    view: dict[str, Any] = reply.body["booking"]
                    LEDGER.booked(view)
                    self.bookings[view["id"]] = view
                    return view
                if reply.status not in (0, 502, 503, 504):
                    return None  # refused: nothing was booked
            LEDGER.pending_book(pending)
            return None
        except GreenletExit:
            LEDGER.pending_book(PendingBook(self.token, body, key, "interrupted"))  # the check settles it
            raise

    def cancel(self, booking_id: str) -> None:
        try:
            reply = call(
                self.user,
                "POST",
                f"/api/bookings/{quote(booking_id)}/cancel",
                name="/api/bookings/[id]/cancel",
                token=self.token,
            )
        except GreenletExit:
            LEDGER.pending_cancel(PendingCancel(booking_id))
            raise
        if reply.status == 200:
            LEDGER.cancelled_booking(reply.body["booking"])
            self.bookings.pop(booking_id, None)
        elif reply.status == 0:
            LEDGER.pending_cancel(PendingCancel(booking_id))
            self.bookings.pop(booking_id, None)

    def move(self, booking_id: str, resource: str, start: str) -> None:
        view = self.bookings[booking_id]
        LEDGER.touched(view["clinic"], start)  # so the check reads the target day too
        reply = call(
            self.user,
            "POST",
            f"/api/bookings/{quote(booking_id)}/reschedule",
            name="/api/bookings/[id]/reschedule",
            token=self.token,
            json={"resource": resource, "start": start},
        )
        if reply.status == 200:
            LEDGER.moved(reply.body["booking"])
            self.bookings[booking_id] = reply.body["booking"]


# -- patients ---------------------------------------------------------------------------------


class PatientUser(WebSocketUser):
    weight = 60
    wait_time = between(1, 3)

    def on_start(self) -> None:
        super().on_start()
        self.cfg = config()
        self.session = PatientSession(self)
        self.session.register()
        self.region = ""
        self.open_map(random.choice(self.cfg.regions))

    def open_map(self, region: str) -> None:
        if self.region:
            self.live.unsubscribe(f"region:{self.region}")
        self.region = region
        call(self, "GET", "/api/regions", name="/api/regions")
        self.live.subscribe(f"region:{region}", from_=today().isoformat(), days=14)

    @task(6)
    def search_and_book(self) -> None:
        if random.random() < 0.2:
            self.open_map(random.choice(self.cfg.regions))
        s = self.session
        service = random.choice(SERVICES)
        first = today() + dt.timedelta(days=FIRST_OFFSET + random.randint(0, 2))
        found = s.get(
            "/api/clinics",
            "/api/clinics?region&service",
            {
                "region": self.region,
                "service": service,
                "from": first.isoformat(),
                "days": WINDOW_DAYS,
                "has_free": "true",
                "sort": "earliest",
                "limit": 20,
            },
        )
        if found.status != 200 or not found.body:
            return
        clinic_id = random.choice(found.body[:5])["id"]  # most patients take the top of the list
        mine = s.at_clinic(clinic_id)
        if len(mine) >= MAX_PER_CLINIC:
            s.cancel(random.choice(mine))
            return
        topic = f"clinic:{clinic_id}"
        self.live.subscribe(topic, from_=first.isoformat(), days=WINDOW_DAYS)
        try:
            s.clinic(clinic_id)
            times = s.availability(clinic_id, service, first)
            if not times:
                return
            pick = random.choice(times[:8])
            if random.random() < 0.5:
                self.hold_then_confirm(clinic_id, pick["resource"], service, pick["start"])
            else:
                s.book(
                    {
                        "clinic": clinic_id,
                        "resource": pick["resource"],
                        "service": service,
                        "start": pick["start"],
                    },
                    "/api/bookings (direct)",
                )
        finally:
            self.live.unsubscribe(topic)

    def hold_then_confirm(self, clinic_id: str, resource: str, service: str, start: str) -> None:
        hold = self.session.hold(clinic_id, resource, service, start)
        if hold is None:
            return
        gevent.sleep(random.uniform(0.2, 1.0))  # reading the confirmation page
        if random.random() < 0.1:
            self.session.release_hold(hold["id"])  # changed their mind
            return
        self.session.book({"hold": hold["id"]}, "/api/bookings (hold)")

    @task(1)
    def cancel_one(self) -> None:
        if self.session.bookings:
            self.session.cancel(random.choice(list(self.session.bookings)))

    @task(1)
    def move_one(self) -> None:
        s = self.session
        if not s.bookings:
            return
        booking_id = random.choice(list(s.bookings))
        view = s.bookings[booking_id]
        first = today() + dt.timedelta(days=FIRST_OFFSET)
        times = [
            t for t in s.availability(view["clinic"], view["service"], first) if t["start"] != view["start"]
        ]
        if times:
            pick = random.choice(times[:8])
            s.move(booking_id, pick["resource"], pick["start"])

    @task(1)
    def my_bookings(self) -> None:
        self.session.get("/api/bookings", "/api/bookings")


# -- kiosks -----------------------------------------------------------------------------------


class KioskUser(WebSocketUser):
    """A waiting-room screen: one clinic's cells for today, kept live for the whole run."""

    weight = 10
    wait_time = constant(5)

    def on_start(self) -> None:
        super().on_start()
        cfg = config()
        clinic_id = cfg.flash_clinic if cfg.flash_clinic and random.random() < 0.3 else None
        if clinic_id is None:
            found = call(
                self,
                "GET",
                "/api/clinics",
                name="/api/clinics?region",
                params={
                    "region": random.choice(cfg.regions),
                    "has_free": "true",
                    "sort": "earliest",
                    "limit": 5,
                },
            )
            if found.status != 200 or not found.body:
                raise StopUser()
            clinic_id = random.choice(found.body)["id"]
        self.live.subscribe(f"clinic:{clinic_id}", from_=today().isoformat(), days=1)

    @task
    def keep_alive(self) -> None:
        self.live.ping()  # reconnects (and resubscribes) if the server dropped the screen


# -- clinic systems ---------------------------------------------------------------------------


def clinic_details(user: FastHttpUser, clinic_id: str) -> dict[str, Any]:
    reply = call(user, "GET", f"/api/clinics/{quote(clinic_id)}", name="/api/clinics/[id]")
    if reply.status != 200:
        raise StopUser()
    details: dict[str, Any] = reply.body
    return details


def clinic_day(user: FastHttpUser, key: str, date: dt.date, name: str) -> dict[str, Any] | None:
    reply = call(user, "GET", "/api/clinic/v1/day", name=name, token=key, params={"date": date.isoformat()})
    return reply.body if reply.status == 200 else None


class ClinicSystemUser(FastHttpUser):
    """A clinic's own booking system on its API key (skipped when no key is configured)."""

    weight = 5
    wait_time = between(1, 3)

    def on_start(self) -> None:
        cfg = config()
        own = [c for c in cfg.clinic_keys if c != cfg.flash_clinic] or list(cfg.clinic_keys)
        self.key: str | None = None
        if not own:  # the locustfile said so once when the run started; its first task stops it
            return
        self.clinic_id = random.choice(own)
        self.key = cfg.clinic_keys[self.clinic_id]
        details = clinic_details(self, self.clinic_id)
        self.cell_minutes = int(details["cell_minutes"])
        self.resources = [r["id"] for r in details["resources"]]
        self.blocked: list[dict[str, Any]] = []

    def on_stop(self) -> None:
        if getattr(self, "key", None):
            self.unblock_all()
        self.client.client.close()

    def unblock_all(self) -> None:
        while self.blocked:
            call(
                self,
                "POST",
                "/api/clinic/v1/unblock",
                name="/api/clinic/v1/unblock",
                token=self.key,
                json=self.blocked.pop(),
            )

    def key_or_stop(self) -> str:
        """The clinic's key; without one the user stops quietly (StopUser in on_start is logged as an error)."""
        if self.key is None:
            raise StopUser()
        return self.key

    @task(3)
    def read_day(self) -> None:
        key = self.key_or_stop()
        clinic_day(
            self, key, today() + dt.timedelta(days=random.randint(0, WINDOW_DAYS)), "/api/clinic/v1/day"
        )

    @task(2)
    def block_and_unblock(self) -> None:
        key = self.key_or_stop()
        if self.blocked:
            self.unblock_all()
            return
        date = today() + dt.timedelta(days=FIRST_OFFSET + random.randint(0, WINDOW_DAYS - 1))
        day = clinic_day(self, key, date, "/api/clinic/v1/day")
        if day is None:
            return
        resource = random.choice(day["resources"])
        starts = free_runs(resource["cells"], 2)
        if not starts:
            return
        body = {
            "resource": resource["id"],
            "start": start_iso(date, random.choice(starts), self.cell_minutes),
            "minutes": 2 * self.cell_minutes,
        }
        reply = call(self, "POST", "/api/clinic/v1/block", name="/api/clinic/v1/block", token=key, json=body)
        if reply.status == 200:
            self.blocked.append(body)

    @task(1)
    def open_days(self) -> None:
        key = self.key_or_stop()
        call(
            self,
            "POST",
            "/api/clinic/v1/open",
            name="/api/clinic/v1/open",
            token=key,
            json={
                "resource": random.choice(self.resources),
                "from": (today() + dt.timedelta(days=80)).isoformat(),
                "days": 10,
            },
        )


# -- the flash crowd --------------------------------------------------------------------------


class FlashRelease:
    """Paces the releases: at most one every ``interval_s`` across the whole crowd."""

    def __init__(self, interval_s: float = 2.0) -> None:
        self.interval_s = interval_s
        self.next_at = 0.0
        self.fallback_clinic: str | None = None

    def due(self) -> bool:
        now = time.monotonic()
        if now < self.next_at:
            return False
        self.next_at = now + self.interval_s
        return True


RELEASE = FlashRelease()


class FlashCrowd(WebSocketUser):
    weight = 25
    wait_time = constant(0.1)

    def on_start(self) -> None:
        super().on_start()
        self.cfg = config()
        self.session = PatientSession(self)
        self.session.register()
        self.clinic_id = self.cfg.flash_clinic or self.fallback_clinic()
        details = self.session.clinic(self.clinic_id)
        if details is None:
            raise StopUser()
        self.cell_minutes = int(details["cell_minutes"])
        self.first = today() + dt.timedelta(days=FIRST_OFFSET)
        self.released: Queue[tuple[str, str, int, int]] = Queue()
        self.live.subscribe(f"clinic:{self.clinic_id}", from_=self.first.isoformat(), days=WINDOW_DAYS)

    def fallback_clinic(self) -> str:
        """Without a clinic key, everybody races for the earliest times of one busy clinic."""
        if RELEASE.fallback_clinic is None:
            found = call(
                self,
                "GET",
                "/api/clinics",
                name="/api/clinics?region",
                params={"region": self.cfg.regions[0], "has_free": "true", "sort": "earliest", "limit": 1},
            )
            if found.status != 200 or not found.body:
                raise StopUser()
            RELEASE.fallback_clinic = found.body[0]["id"]
        return RELEASE.fallback_clinic

    def on_diff(self, topic: str, data: dict[str, Any]) -> None:
        last = (self.first + dt.timedelta(days=WINDOW_DAYS - 1)).isoformat()
        for resource, date, first_cell, n, state in data.get("cells", ()):
            if state == FREE and self.first.isoformat() <= date <= last:
                self.released.put((resource, date, first_cell, n))

    @task
    def race(self) -> None:
        key = self.cfg.clinic_keys.get(self.clinic_id)
        if key and RELEASE.due():
            self.release(key)
        mine = self.session.at_clinic(self.clinic_id)
        if len(mine) >= MAX_PER_CLINIC:
            self.session.cancel(mine[0])  # frees cells: the rest of the crowd races for them too
        try:
            released = self.released.get(timeout=3)
        except Empty:
            self.race_for_earliest()
            return
        while not self.released.empty():  # only the newest release matters
            released = self.released.get_nowait()
        resource, date, first_cell, n = released
        # a start the treatment fits in: the run's last cell may be followed by a closed one
        need = -(-SERVICES_BY_ID[FLASH_SERVICE].minutes // self.cell_minutes)
        if n < need:
            self.race_for_earliest()
            return
        cell = first_cell + random.randrange(n - need + 1)
        self.session.book(
            {
                "clinic": self.clinic_id,
                "resource": resource,
                "service": FLASH_SERVICE,
                "start": start_iso(dt.date.fromisoformat(date), cell, self.cell_minutes),
            },
            "/api/bookings (flash)",
        )

    def race_for_earliest(self) -> None:
        times = self.session.availability(self.clinic_id, FLASH_SERVICE, self.first)
        if times:
            pick = random.choice(times[:3])
            self.session.book(
                {
                    "clinic": self.clinic_id,
                    "resource": pick["resource"],
                    "service": FLASH_SERVICE,
                    "start": pick["start"],
                },
                "/api/bookings (flash)",
            )

    def release(self, key: str) -> None:
        """The clinic blocks a free hour and releases it a moment later: the crowd sees it turn FREE."""
        date = self.first + dt.timedelta(days=random.randint(0, WINDOW_DAYS - 1))
        day = clinic_day(self, key, date, "/api/clinic/v1/day (flash)")
        if day is None:
            return
        cells = 60 // self.cell_minutes
        candidates = [(r["id"], s) for r in day["resources"] for s in free_runs(r["cells"], cells)]
        if not candidates:
            return
        resource, first_cell = random.choice(candidates)
        body = {"resource": resource, "start": start_iso(date, first_cell, self.cell_minutes), "minutes": 60}
        blocked = call(
            self, "POST", "/api/clinic/v1/block", name="/api/clinic/v1/block (flash)", token=key, json=body
        )
        if blocked.status == 200:
            gevent.sleep(0.3)
            call(
                self,
                "POST",
                "/api/clinic/v1/unblock",
                name="/api/clinic/v1/unblock (flash)",
                token=key,
                json=body,
            )
