"""Integration: two real ``tandtid serve --node`` processes on one real redis-server (and one real
SMTP server both send to): what must happen once per region happens once, with its owner."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from server.consumers.notify.messages import KEY_HEADER
from server.identity.accounts import Role
from server.stores import open_webhooks
from tests.server.conftest import assert_error_shape
from tests.server.test_webhooks import Receiver
from tests.support.cluster import Cluster, free_times, metric
from tests.support.redis_server import RedisServer
from tests.support.served import ServedProcess
from tests.support.smtp import smtp_server
from tests.support.waiting import eventually_sync, scaled

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def book(url: str, token: str, time: dict[str, str], *, key: str = "") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if key:
        headers["Idempotency-Key"] = key
    return httpx.post(
        f"{url}/api/bookings",
        headers=headers,
        json={**time, "service": "checkup"},
        timeout=30,
    )


def test_each_booking_is_told_once_by_its_regions_owner(tmp_path: Path, redis_server: RedisServer) -> None:
    with smtp_server() as (inbox, port):
        cluster = Cluster(
            tmp_path,
            redis_server.url,
            ("node-a", "node-b"),
            patients=2,
            env={"TANDTID_SMTP_HOST": "127.0.0.1", "TANDTID_SMTP_PORT": str(port), "TANDTID_REMINDERS": ""},
        )
        try:
            cluster.start()
            a, b = cluster.nodes["node-a"], cluster.nodes["node-b"]
            booked: list[tuple[str, str]] = []  # (region, booking id)
            for served, token in ((a, cluster.tokens[0]), (b, cluster.tokens[1])):
                region = cluster.region_owned_by(served)
                (time,) = free_times(served.url, region, 1)
                r = book(served.url, token, time)
                assert r.status_code == 201, r.text
                booked.append((region, r.json()["booking"]["id"]))

            def booked_keys() -> list[str]:
                return [k for k in inbox.keys() if k.endswith(":booked")]  # noqa: SIM118 - a method

            eventually_sync(lambda: len(set(booked_keys())) == 2, what="an e-mail for each booking")
            # Each region's notifier runs on its owner only: the other node never read those
            # entries (its notifier's position in the region stays 0), so it sent nothing.
            for (region, _), owner, other in ((booked[0], a, b), (booked[1], b, a)):
                eventually_sync(
                    lambda o=owner, r=region: metric(
                        o, "tandtid_consumer_position", consumer="notifier", region=r
                    ),
                    what="the owner's notifier to move past the booking",
                )
                assert not metric(other, "tandtid_consumer_position", consumer="notifier", region=region)
            assert sorted(booked_keys()) == sorted(set(booked_keys())), "a booking was told twice"
            for message in inbox.messages:
                assert str(message[KEY_HEADER]).split(":")[0] in {region for region, _ in booked}
        finally:
            cluster.stop()


def test_any_node_answers_for_any_region_by_forwarding_to_its_owner(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    cluster = Cluster(
        tmp_path, redis_server.url, ("node-a", "node-b"), patients=2, env={"TANDTID_FORWARD_TIMEOUT_S": "1"}
    )
    try:
        cluster.start()
        owner = cluster.owner("AB")
        other = cluster.other_than(owner)
        owner_name = cluster.owners()["AB"]

        # A read of AB on the node that does not own it comes from its replica; a command for AB
        # sent there is forwarded: the owner answers.
        r = httpx.get(f"{other.url}/api/regions/AB/summary", timeout=30)
        assert r.status_code == 200 and "x-tandtid-forwarded-to" not in r.headers, r.text
        (time,) = free_times(other.url, "AB", 1)
        r = book(other.url, cluster.tokens[0], time)
        assert r.status_code == 201 and r.headers["x-tandtid-forwarded-to"] == owner_name, r.text
        booking = r.json()["booking"]
        mine = httpx.get(
            f"{owner.url}/api/bookings/{booking['id']}",
            headers={"Authorization": f"Bearer {cluster.tokens[0]}"},
            timeout=30,
        )
        assert mine.status_code == 200 and mine.json()["booking"]["start"] == time["start"]
        # A refusal comes back as the owner gave it: same status, same error code.
        again = book(other.url, cluster.tokens[1], time)
        assert_error_shape(again, 409, "SLOT_TAKEN")
        assert again.headers["x-tandtid-forwarded-to"] == owner_name
        # The request id is one on both nodes.
        assert again.json()["error"]["request_id"] == again.headers["x-request-id"]

        # The owner freezes: a command forwarded to it is answered 503 with Retry-After once the
        # owner does not answer (TANDTID_FORWARD_TIMEOUT_S=1, inside the 5 s lease), never hangs;
        # then the lease moves and the same command is made by the other node itself.
        (later,) = [t for t in free_times(other.url, "AB", 2) if t != time][:1]
        assert owner.process is not None
        os.kill(owner.process.pid, signal.SIGSTOP)
        try:
            r = book(other.url, cluster.tokens[1], later)
            assert_error_shape(r, 503, "UNAVAILABLE")
            assert r.headers["retry-after"] == "1"
            eventually_sync(
                lambda: "AB" in httpx.get(f"{other.url}/ready", timeout=30).json()["regions_owned"],
                timeout=30,
                what="the other node to own AB",
            )
            r = book(other.url, cluster.tokens[1], later)
            assert r.status_code == 201 and "x-tandtid-forwarded-to" not in r.headers, r.text
        finally:
            os.kill(owner.process.pid, signal.SIGCONT)
    finally:
        cluster.stop()


async def test_every_node_serves_reads_and_live_topics_from_its_replica_across_an_owner_change(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    cluster = Cluster(tmp_path, redis_server.url, ("node-a", "node-b"), patients=2)
    try:
        await asyncio.to_thread(cluster.start)
        owner = cluster.owner("AB")
        other = cluster.other_than(owner)
        # Two times at one clinic that do not overlap: another resource, or the eighth time on.
        found = await asyncio.to_thread(free_times, owner.url, "AB", 8, per_clinic=8)
        first = found[0]
        second = next((t for t in found if t["resource"] != first["resource"]), found[-1])
        assert second["clinic"] == first["clinic"] and second != first
        clinic = first["clinic"]
        ws_url = other.url.replace("http://", "ws://") + "/ws"
        async with connect(ws_url) as ws:
            await ws.send(
                orjson.dumps(
                    {"op": "subscribe", "topic": f"clinic:{clinic}", "from": first["start"][:10], "days": 14}
                )
            )
            snapshot = await receive(ws)
            assert snapshot["type"] == "snapshot", snapshot
            seq = snapshot["seq"]

            # Booked on the owner: the other node's subscriber gets the diff, from its replica.
            r = await asyncio.to_thread(book, owner.url, cluster.tokens[0], first)
            assert r.status_code == 201, r.text
            diff = await receive(ws)
            assert diff["type"] == "diff" and diff["seq"] == seq + 1, diff

            # Reads of AB on the other node come from its replica (not forwarded) and show it.
            def taken() -> bool:
                avail = httpx.get(
                    f"{other.url}/api/clinics/{clinic}/availability",
                    params={"service": "checkup", "days": 14},
                    timeout=30,
                )
                assert "x-tandtid-forwarded-to" not in avail.headers
                times = {(t["resource"], t["start"]) for day in avail.json()["days"] for t in day["times"]}
                return (first["resource"], first["start"]) not in times

            await asyncio.to_thread(eventually_sync, taken, what="the replica to show the booking")

            # The owner leaves; the other node promotes its replica and writes AB itself. The
            # subscriber's next diff follows on with the next sequence number, no resync.
            await asyncio.to_thread(owner.stop)
            await asyncio.to_thread(
                eventually_sync,
                lambda: "AB" in httpx.get(f"{other.url}/ready", timeout=30).json()["regions_owned"],
                what="the other node to own AB",
            )
            r = await asyncio.to_thread(book, other.url, cluster.tokens[1], second)
            assert r.status_code == 201 and "x-tandtid-forwarded-to" not in r.headers, r.text
            diff = await receive(ws)
            assert diff["type"] == "diff" and diff["seq"] == seq + 2, diff
    finally:
        await asyncio.to_thread(cluster.stop)


async def receive(ws: ClientConnection) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), scaled(10))
    message: dict[str, Any] = orjson.loads(raw)
    return message


async def test_a_subscriber_on_a_replica_gets_the_owners_commit_time_not_its_own_apply_time(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    cluster = Cluster(tmp_path, redis_server.url, ("node-a", "node-b"), patients=1)
    try:
        await asyncio.to_thread(cluster.start)
        owner = cluster.owner("AB")
        replica = cluster.other_than(owner)
        (slot,) = await asyncio.to_thread(free_times, owner.url, "AB", 1)
        subscribe = orjson.dumps(
            {"op": "subscribe", "topic": f"clinic:{slot['clinic']}", "from": slot["start"][:10], "days": 14}
        )
        async with (
            connect(owner.url.replace("http://", "ws://") + "/ws") as on_owner,
            connect(replica.url.replace("http://", "ws://") + "/ws") as on_replica,
        ):
            for ws in (on_owner, on_replica):
                await ws.send(subscribe)
                assert (await receive(ws))["type"] == "snapshot"
            # The replica is frozen while the owner commits: it applies the entry only after the
            # booking was answered, so a time it stamped itself would be later than the answer.
            assert replica.process is not None
            os.kill(replica.process.pid, signal.SIGSTOP)
            try:
                sent_ms = time.time() * 1000
                r = await asyncio.to_thread(book, owner.url, cluster.tokens[0], slot)
                assert r.status_code == 201, r.text
                answered_ms = time.time() * 1000
                from_owner = await receive(on_owner)
                await asyncio.to_thread(
                    eventually_sync, lambda: time.time() * 1000 > answered_ms + 5, what="the clock to move on"
                )
            finally:
                os.kill(replica.process.pid, signal.SIGCONT)
            raw = await asyncio.wait_for(on_replica.recv(), scaled(30))
            from_replica: dict[str, Any] = orjson.loads(raw)
        assert from_owner["type"] == from_replica["type"] == "diff", (from_owner, from_replica)
        assert from_replica["data"] == from_owner["data"]
        # The owner's commit time (the journal's clock when it wrote the booking), on both nodes.
        assert from_replica["committed_at"] == from_owner["committed_at"]
        assert sent_ms - 1 <= from_replica["committed_at"] <= answered_ms
        # A diff is cells only: nothing of the patient.
        text = raw if isinstance(raw, str) else raw.decode()
        assert r.json()["booking"]["id"] not in text
        assert "Klusterpatient" not in text and "example.test" not in text
    finally:
        await asyncio.to_thread(cluster.stop)


def test_each_webhook_delivery_is_posted_once_by_the_owner_of_its_region(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # A slow endpoint (each answer held 1.5 s, past the senders' 1 s poll): a delivery is pending
    # in the shared queue while its POST is under way, in view of every node's sender.
    receiver = Receiver(delay_s=1.5)
    receiver.start()
    cluster = Cluster(
        tmp_path, redis_server.url, ("node-a", "node-b"), patients=3, env={"TANDTID_WEBHOOK_ALLOW_HTTP": "1"}
    )
    try:
        cluster.start()
        owner = cluster.owner("AB")
        other = cluster.other_than(owner)
        found = free_times(owner.url, "AB", 200, per_clinic=200)
        clinic = found[0]["clinic"]
        by_day = {t["start"][:10]: t for t in reversed(found) if t["clinic"] == clinic}  # one a day: apart
        times = sorted(by_day.values(), key=lambda t: t["start"])[:3]
        assert len(times) == 3, found
        store = open_webhooks(tmp_path, redis_server.url)
        try:
            _, receiver.secret = store.create_endpoint(clinic, receiver.url, ["booking.created"], 0.0)
        finally:
            store.close()
        for n, (time_, served) in enumerate(zip(times, (owner, other, owner), strict=False)):
            r = book(served.url, cluster.tokens[n], time_)
            assert r.status_code == 201, r.text
        eventually_sync(
            lambda: len(set(receiver.delivery_ids)) == len(times) and not receiver.handling,
            timeout=30,
            what="every delivery posted and answered",
        )
        assert sorted(receiver.delivery_ids) == sorted(set(receiver.delivery_ids)), receiver.delivery_ids
    finally:
        cluster.stop()
        receiver.stop()


def test_a_read_right_after_a_forwarded_write_on_the_same_node_shows_it(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    cluster = Cluster(tmp_path, redis_server.url, ("node-a", "node-b"), patients=5)
    try:
        cluster.start()
        owner = cluster.owner("AB")
        other = cluster.other_than(owner)
        for n, time_ in enumerate(free_times(other.url, "AB", 5)):
            token = cluster.tokens[n]
            r = book(other.url, token, time_)
            assert r.status_code == 201 and "x-tandtid-forwarded-to" in r.headers, r.text
            assert r.headers["x-tandtid-position"].isdigit()  # the owner's committed position then
            booking = r.json()["booking"]
            # At once, no waiting: the relay came after this node's replica applied that position.
            mine = httpx.get(
                f"{other.url}/api/bookings/{booking['id']}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert mine.status_code == 200 and mine.json()["booking"]["status"] == "booked", mine.text
            avail = httpx.get(
                f"{other.url}/api/clinics/{time_['clinic']}/availability",
                params={"service": "checkup", "days": 14},
                timeout=30,
            ).json()
            offered = {(t["resource"], t["start"]) for day in avail["days"] for t in day["times"]}
            assert (time_["resource"], time_["start"]) not in offered
    finally:
        cluster.stop()


def test_the_outbox_is_every_nodes_and_a_reminder_fires_once_after_its_owner_died(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # The appointment: 10:00 on the next weekday (every demo clinic is open then). The lead puts
    # the reminder due about LEAD_SLACK_S after the test starts: after the booking, and after the
    # owner is killed, so the node that takes the region over is the one to send it.
    zone = ZoneInfo("Europe/Stockholm")
    day = datetime.now(zone).date() + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    appointment = datetime.combine(day, dtime(10, 0), zone)
    lead_m = int((appointment.timestamp() - time.time() - scaled(REMINDER_SLACK_S)) // 60)
    due = appointment.timestamp() - lead_m * 60
    cluster = Cluster(
        tmp_path,
        redis_server.url,
        ("node-a", "node-b"),
        patients=2,
        env={"TANDTID_REMINDERS": f"{lead_m}m"},  # no SMTP host: the outbox (in Redis)
        lease_ttl_ms=2_000,
    )
    admin = cluster.session(Role.ADMIN)
    try:
        cluster.start()
        owner = cluster.owner("AB")
        other = cluster.other_than(owner)
        ours = cluster.region_owned_by(other)
        slot = _free_at(owner.url, "AB", appointment)
        r = book(owner.url, cluster.tokens[0], slot)
        assert r.status_code == 201, r.text
        assert time.time() < due, "the reminder fell due before the booking: raise REMINDER_SLACK_S"
        booking = r.json()["booking"]["id"]
        (elsewhere,) = free_times(other.url, ours, 1)
        assert book(other.url, cluster.tokens[1], elsewhere).status_code == 201

        # Each node's notifier writes its regions' e-mails; the admin page of either node lists both.
        for served in (owner, other):
            eventually_sync(
                lambda s=served: len([k for k in _outbox_keys(s, admin) if k.endswith(":booked")]) == 2,
                what=f"both confirmations in the outbox as {served.url} shows it",
            )

        # The owner of AB dies before the reminder is due: the other node takes AB over, and the
        # reminder goes out once, from there.
        assert owner.process is not None
        owner.kill()
        eventually_sync(lambda: "AB" in cluster.writes(other), timeout=30, what="the other node to write AB")
        eventually_sync(
            lambda: any(k.startswith(booking + ".") for k in _outbox_keys(other, admin)),
            timeout=REMINDER_SLACK_S + 60,
            what="the reminder",
        )
        keys = _outbox_keys(other, admin)
        assert len([k for k in keys if k.startswith(booking + ".")]) == 1, keys  # AB-b7.740000.36:r…m
        assert len([k for k in keys if k.endswith(":booked")]) == 2, keys
    finally:
        cluster.stop()


REMINDER_SLACK_S = 100.0  # test start -> reminder due: covers starting two nodes and booking


def _free_at(base: str, region: str, at: datetime) -> dict[str, str]:
    """A bookable check-up starting at ``at`` in ``region``."""
    clinics = httpx.get(
        f"{base}/api/clinics",
        params={"region": region, "service": "checkup", "has_free": "true", "limit": 50},
        timeout=30,
    ).json()
    for clinic in clinics:
        avail = httpx.get(
            f"{base}/api/clinics/{clinic['id']}/availability",
            params={"service": "checkup", "days": 7},
            timeout=30,
        ).json()
        for day in avail["days"]:
            for t in day["times"]:
                if datetime.fromisoformat(t["start"]) == at:
                    return {"clinic": clinic["id"], "resource": t["resource"], "start": t["start"]}
    raise AssertionError(f"no free check-up at {at.isoformat()} in {region}")


def _outbox_keys(served: ServedProcess, token: str) -> list[str]:
    r = httpx.get(
        f"{served.url}/api/admin/outbox",
        params={"limit": 500},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return [m["key"] for m in r.json()["messages"]]
