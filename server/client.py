"""A small terminal client for testing and demonstration: ``tandtid watch`` and ``tandtid book``."""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import datetime

import httpx
import websockets


async def watch(url: str, topic: str, from_: str | None, days: int, count: int) -> int:
    """Subscribe to ``topic`` and print every message (snapshot summarised, diffs in full)."""
    message: dict[str, object] = {"op": "subscribe", "topic": topic, "days": days}
    if from_:
        message["from"] = from_
    seen = 0
    async with websockets.connect(url, max_size=16 * 1024 * 1024) as ws:
        await ws.send(json.dumps(message))
        async for raw in ws:
            msg = json.loads(raw)
            if msg.get("type") == "snapshot":
                data = msg.get("data", {})
                size = len(data.get("clinics", data.get("resources", {})))
                print(
                    json.dumps(
                        {
                            "type": "snapshot",
                            "topic": msg.get("topic"),
                            "seq": msg.get("seq"),
                            "entries": size,
                        }
                    ),
                    flush=True,
                )
            else:
                print(json.dumps(msg, ensure_ascii=False), flush=True)
            seen += 1
            if count and seen >= count:
                break
    return 0


async def book(
    base_url: str, email: str, password: str, clinic: str, service: str, days: int, late: bool = False
) -> int:
    """Sign in, find the clinic's earliest free time for ``service`` and book it.

    Times inside the clinic's cancellation notice (``cancel_notice_hours``) could not be cancelled or moved
    online once booked: they are passed over, and the command says so, unless ``late`` asks for them."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        login = await client.post("/api/auth/login", json={"email": email, "password": password})
        if login.status_code != 200:
            print(f"sign-in failed: {login.status_code} {login.text}", file=sys.stderr)
            return 1
        headers = {"Authorization": f"Bearer {login.json()['token']}"}
        avail = await client.get(
            f"/api/clinics/{clinic}/availability", params={"service": service, "days": days}
        )
        if avail.status_code != 200:
            print(f"availability failed: {avail.status_code} {avail.text}", file=sys.stderr)
            return 1
        times = [t for day in avail.json()["days"] for t in day["times"]]
        details = await client.get(f"/api/clinics/{clinic}")
        notice_h = int(details.json().get("cancel_notice_hours", 0)) if details.status_code == 200 else 0
        if not late and notice_h:
            cutoff = time.time() + notice_h * 3600
            kept = [t for t in times if datetime.fromisoformat(t["start"]).timestamp() >= cutoff]
            if len(kept) < len(times):
                print(
                    f"passed over {len(times) - len(kept)} free times within the clinic's {notice_h} h "
                    "cancellation notice (they could not be cancelled online); --late books them",
                    file=sys.stderr,
                )
            times = kept
        for slot in times:
            body = {
                "clinic": clinic,
                "resource": slot["resource"],
                "service": service,
                "start": slot["start"],
            }
            resp = await client.post(
                "/api/bookings", json=body, headers={**headers, "Idempotency-Key": str(uuid.uuid4())}
            )
            if resp.status_code == 201:
                print(json.dumps(resp.json()["booking"], ensure_ascii=False))
                return 0
            if resp.status_code != 409:
                print(f"booking failed: {resp.status_code} {resp.text}", file=sys.stderr)
                return 1
        print("no free time in range", file=sys.stderr)
        return 1
