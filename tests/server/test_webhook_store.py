"""Contract tests for the webhook stores (server.consumers.webhooks.store and .redis_store): every
test runs against a real SQLite file and a real redis-server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.consumers.webhooks.dispatcher import FreshSubscriptions
from server.consumers.webhooks.redis_store import RedisWebhookStore
from server.consumers.webhooks.store import CANCELLED, DELIVERED, FAILED, PENDING, Endpoint, Webhooks
from server.stores import open_webhooks
from tests.support.redis_server import RedisServer
from tests.support.stores import StoreBackend

CREATED, UPDATED = "booking.created", "booking.cancelled"


@pytest.fixture
def store(backend: StoreBackend) -> Iterator[Webhooks]:
    s = open_webhooks(backend.data_dir, backend.redis_url)
    yield s
    s.close()


def body(n: int) -> bytes:
    return b'{"id":"evt_%d","data":{"name":"\xc3\x85sa"}}' % n  # JSON, UTF-8 as the dispatcher sends


def test_endpoints_per_clinic_oldest_first_and_deleted_ones_gone(store: Webhooks) -> None:
    a, secret = store.create_endpoint("AB-c1", "https://a.example/hook", [UPDATED, CREATED, CREATED], 10.0)
    assert (
        secret.startswith("whsec_") and a.events == (UPDATED, CREATED) or a.events == tuple(sorted(a.events))
    )
    b, _ = store.create_endpoint("AB-c1", "https://b.example/hook", [CREATED], 20.0)
    other, _ = store.create_endpoint("M-c1", "https://m.example/hook", [CREATED], 5.0)
    assert [e.id for e in store.endpoints("AB-c1")] == [a.id, b.id]
    assert store.endpoints("AB-c1")[0] == a
    assert store.endpoint("AB-c1", other.id) is None  # another clinic's endpoint is not found
    assert store.endpoint("M-c1", other.id) == other
    assert store.subscribers("AB-c1", UPDATED, 30.0) == [a.id]
    assert store.subscribers("AB-c1", CREATED, 15.0) == [a.id]  # b did not exist yet at 15
    assert store.subscribers("AB-c1", CREATED, 30.0) == [a.id, b.id]
    assert store.delete_endpoint("M-c1", a.id, 40.0) is False  # not M's
    assert store.delete_endpoint("AB-c1", a.id, 40.0) is True
    assert store.delete_endpoint("AB-c1", a.id, 41.0) is False
    assert [e.id for e in store.endpoints("AB-c1")] == [b.id]


def test_queue_in_journal_order_one_head_per_endpoint(store: Webhooks) -> None:
    a, _ = store.create_endpoint("AB-c1", "https://a.example/hook", [CREATED], 0.0)
    b, secret_b = store.create_endpoint("AB-c1", "https://b.example/hook", [CREATED], 0.0)
    assert store.cursors() == {}
    store.enqueue("AB", 7, [(a.id, "evt_1", CREATED, body(1)), (b.id, "evt_1", CREATED, body(1))], 100.0)
    store.enqueue("AB", 9, [(a.id, "evt_2", CREATED, body(2))], 101.0)
    store.advance("AB", 8)  # a stale writer: the cursor never moves backwards
    store.advance("M", 3)
    assert store.cursors() == {"AB": 9, "M": 3}
    heads = {h.delivery.endpoint: h for h in store.heads()}
    assert set(heads) == {a.id, b.id}
    first = heads[a.id].delivery
    assert (first.event_id, first.position, first.region, first.status, first.body) == (
        "evt_1",
        7,
        "AB",
        PENDING,
        body(1),
    )
    assert (heads[b.id].url, heads[b.id].secret) == ("https://b.example/hook", secret_b)
    # a failed attempt keeps the head (later deliveries wait), with its next time
    store.attempt_failed(first.id, 102.0, "HTTP 500", 500, 110.0)
    again = next(h.delivery for h in store.heads() if h.delivery.endpoint == a.id)
    assert (again.id, again.attempts, again.next_attempt_at, again.last_error, again.last_status) == (
        first.id,
        1,
        110.0,
        "HTTP 500",
        500,
    )
    store.delivered(first.id, 111.0, 204)
    store.delivered(first.id, 112.0, 204)  # recorded once: a second outcome changes nothing
    second = next(h.delivery for h in store.heads() if h.delivery.endpoint == a.id)
    assert second.event_id == "evt_2"
    store.attempt_failed(second.id, 113.0, "ConnectTimeout", 0, None)  # given up
    store.delivered(heads[b.id].delivery.id, 114.0, 200)
    assert store.heads() == []
    log = store.deliveries(a.id)
    assert [(d.event_id, d.status, d.attempts) for d in log] == [
        ("evt_2", FAILED, 1),
        ("evt_1", DELIVERED, 2),
    ]
    assert log[1].finished_at == 111.0 and log[1].last_status == 204 and log[1].last_error == ""


def test_delivery_log_pages_filters_and_replays(store: Webhooks) -> None:
    a, _ = store.create_endpoint("AB-c1", "https://a.example/hook", [CREATED], 0.0)
    for n in range(1, 8):
        store.enqueue("AB", n, [(a.id, f"evt_{n}", CREATED, body(n))], float(n))
    heads = store.heads()
    store.delivered(heads[0].delivery.id, 10.0, 200)
    log = store.deliveries(a.id)
    assert [d.event_id for d in log] == [f"evt_{n}" for n in range(7, 0, -1)]
    assert [d.event_id for d in store.deliveries(a.id, limit=3)] == ["evt_7", "evt_6", "evt_5"]
    assert [d.event_id for d in store.deliveries(a.id, limit=2, before=log[2].id)] == ["evt_4", "evt_3"]
    assert [d.event_id for d in store.deliveries(a.id, status=DELIVERED)] == ["evt_1"]
    assert len(store.deliveries(a.id, status=PENDING, limit=4)) == 4
    copy = store.replay(a.id, log[-1].id, 20.0)
    assert copy is not None
    assert (copy.event_id, copy.body, copy.status, copy.replay_of, copy.attempts) == (
        "evt_1",
        body(1),
        PENDING,
        log[-1].id,
        0,
    )
    assert copy.id > log[0].id  # at the end of the queue
    twice = store.replay(a.id, copy.id, 21.0)
    assert twice is not None and twice.replay_of == log[-1].id  # names the original
    assert store.replay(a.id, 999_999, 22.0) is None
    assert store.replay("we_other", log[-1].id, 22.0) is None
    # deleting the endpoint cancels what is pending; the log stays readable
    assert store.delete_endpoint("AB-c1", a.id, 30.0)
    assert store.heads() == []
    statuses = {d.status for d in store.deliveries(a.id)}
    assert statuses == {DELIVERED, CANCELLED}
    assert {d.last_error for d in store.deliveries(a.id, status=CANCELLED)} == {"endpoint deleted"}


def test_survives_reopen(backend: StoreBackend) -> None:
    s = open_webhooks(backend.data_dir, backend.redis_url)
    a, _ = s.create_endpoint("AB-c1", "https://a.example/hook", [CREATED], 0.0)
    s.enqueue("AB", 4, [(a.id, "evt_1", CREATED, body(1))], 1.0)
    s.close()
    again = open_webhooks(backend.data_dir, backend.redis_url)
    try:
        assert again.cursors() == {"AB": 4}
        assert [h.delivery.event_id for h in again.heads()] == ["evt_1"]
    finally:
        again.close()


def test_every_node_sees_endpoint_changes_at_once(module_redis: RedisServer, tmp_path: Path) -> None:
    """Redis: the dispatcher's endpoints from memory (subscriptions) on node B follow what node A
    creates and deletes, from the next call on (a version bumped in the same step)."""
    backend = StoreBackend("redis", tmp_path, module_redis.url)
    backend.flush()
    a, b = RedisWebhookStore(module_redis.url), RedisWebhookStore(module_redis.url)
    try:
        assert b.subscriptions() == {}
        made, _ = a.create_endpoint("AB-c1", "https://a.example/hook", [CREATED], 1.0)
        other, _ = a.create_endpoint("M-c1", "https://m.example/hook", [UPDATED], 2.0)
        assert b.subscriptions() == {"AB-c1": [made], "M-c1": [other]}
        assert b.subscriptions() is b.subscriptions()  # unchanged: from memory
        assert a.delete_endpoint("AB-c1", made.id, 3.0)
        assert b.subscriptions() == {"M-c1": [other]}
        names = " ".join(backend.key_names())
        assert "example" not in names
    finally:
        a.close()
        b.close()


async def test_the_dispatcher_reads_endpoints_made_before_it_asked_once_for_all_who_asked_meanwhile(
    module_redis: RedisServer, tmp_path: Path
) -> None:
    """FreshSubscriptions (the dispatcher's read of ``subscriptions()``, off the event loop): an
    asker that comes while a read is under way is answered by a read begun after it asked (it sees
    an endpoint node A made just before), and one read serves every asker that came meanwhile."""
    StoreBackend("redis", tmp_path, module_redis.url).flush()
    a, b = RedisWebhookStore(module_redis.url), RedisWebhookStore(module_redis.url)
    inside, release = threading.Event(), threading.Event()
    first = [True]

    def read() -> dict[str, list[Endpoint]]:
        found = b.subscriptions()
        if first[0]:  # the first read holds until the test lets it go
            first[0] = False
            inside.set()
            release.wait(30)
        return found

    fresh = FreshSubscriptions(read)
    try:
        early = asyncio.create_task(fresh.get())
        await asyncio.to_thread(inside.wait, 30)  # the first read has read: no endpoint then
        made, _ = await asyncio.to_thread(
            a.create_endpoint, "AB-c1", "https://a.example/hook", [CREATED], 1.0
        )
        late = [asyncio.create_task(fresh.get()) for _ in range(5)]
        await asyncio.sleep(0)
        release.set()
        assert await early == {}
        assert await asyncio.gather(*late) == [{"AB-c1": [made]}] * 5
        assert fresh.reads == 2  # the early one's, then one for the five that came during it
    finally:
        release.set()
        a.close()
        b.close()
