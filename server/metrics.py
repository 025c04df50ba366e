"""Prometheus metrics, defined once for the process (default registry).

Labels carry regions, command types, refusal codes and route templates only: never
ids of patients, names, e-mail addresses or phone numbers.

The journal consumers' metrics are named ``tandtid_consumer_*``: when they run in their own
process, the server's ``/metrics`` takes exactly those families from it
(``server.consumers.process.merged_exposition``).
"""

from __future__ import annotations

from prometheus_client import Counter, Enum, Gauge, Histogram

COMMANDS = Counter("tandtid_commands_total", "Commands applied by region actors", ["type", "region"])
REFUSALS = Counter("tandtid_refusals_total", "Commands refused by the engine", ["code", "region"])
BATCH_SIZE = Histogram(
    "tandtid_batch_size",
    "Commands per actor batch (one journal write each)",
    ["region"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
)
JOURNAL_APPEND_SECONDS = Histogram(
    "tandtid_journal_append_seconds",
    "Latency of one durable journal append",
    ["region"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
JOURNAL_ROUNDS = Gauge(
    "tandtid_journal_rounds",
    "Durable journal writes so far (one write + fsync, or one Redis round trip), each carrying the "
    "appends of one or more regions (group commit)",
)
JOURNAL_WRITABLE = Gauge(
    "tandtid_journal_writable",
    "1 while durable writes succeed; 0 while the journal refuses them (a full disk: /ready says why)",
)
HORIZON_ROUNDS = Counter(
    "tandtid_horizon_rounds_total",
    "Daily rounds opening every clinic's days ahead (outcome done, or retry when a region did not take it)",
    ["outcome"],
)
JOURNAL_FAILURES = Counter("tandtid_journal_failures_total", "Journal appends that failed", ["region"])
QUEUE_DEPTH = Gauge("tandtid_actor_queue_depth", "Commands waiting in a region actor's inbox", ["region"])
OVERLOADED = Counter(
    "tandtid_actor_overloaded_total",
    "Commands and queries answered 503 at once: the inbox was full",
    ["region"],
)
REGION_READY = Gauge("tandtid_region_ready", "1 when the region is recovered and writable", ["region"])
REGION_LIFECYCLE = Enum(
    "tandtid_region_lifecycle",
    "A region actor's lifecycle (failed: an operator must act, see tandtid journal check)",
    ["region"],
    states=["recovering", "ready", "following", "fenced", "failed"],
)
ACTOR_FAILURES = Counter(
    "tandtid_actor_failures_total",
    "Actor turns answered 503 and reloaded (kind: journal, stale_epoch, unexpected)",
    ["region", "kind"],
)
EVENT_LOOP_LAG = Histogram(
    "tandtid_event_loop_lag_seconds",
    "How much later than asked a 20 ms timer on the event loop fires (server.loop_lag)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
EVENT_LOOP_STALLS = Counter(
    "tandtid_event_loop_stalls_total",
    "Stalls of the event loop longer than TANDTID_STALL_MS, each logged with the loop's stack (server.loop_lag)",
)
WS_CONNECTIONS = Gauge("tandtid_ws_connections", "Open WebSocket connections")
WS_FRAMES_SENT = Counter("tandtid_ws_frames_sent_total", "WebSocket frames sent", ["kind"])
WS_REFUSED = Counter(
    "tandtid_ws_refused_total", "WebSocket handshakes refused before the upgrade", ["reason"]
)
WS_SLOW_CONSUMERS = Counter("tandtid_ws_slow_consumers_total", "Slow WebSocket consumers", ["action"])
HTTP_REQUESTS = Counter("tandtid_http_requests_total", "HTTP requests", ["route", "method", "status"])
HTTP_LATENCY = Histogram(
    "tandtid_http_request_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CONSUMER_UP = Gauge(
    "tandtid_consumer_up", "1 while a journal consumer works for a region ('*': all)", ["consumer", "region"]
)
CONSUMER_RESTARTS = Counter(
    "tandtid_consumer_restarts_total",
    "Journal consumers stopped by an error and restarted (kind: journal, disk, unplaced, unexpected)",
    ["consumer", "region", "kind"],
)
CONSUMER_POSITION = Gauge(
    "tandtid_consumer_position", "Last journal position a consumer handled", ["consumer", "region"]
)
CONSUMER_LOST_ENTRIES = Counter(
    "tandtid_consumer_lost_entries_total",
    "Journal entries found trimmed before the consumers handled them (their facts are lost)",
    ["region"],
)
CONSUMER_SETUP_EVENTS = Counter(
    "tandtid_consumer_setup_events_total",
    "Clinic setup events the journal consumers read and passed over (nothing to tell anyone), by kind",
    ["kind"],
)
CONSUMER_INCOMPLETE = Counter(
    "tandtid_consumer_incomplete_facts_total",
    "Reschedules re-applied over a later snapshot, told without their previous time",
    ["region"],
)
