"""Where the shared state lives: SQLite files in the data directory (the embedded default), or
Redis when the settings name one (``tandtid serve --redis URL``), so that several nodes share
accounts, sessions, clinic keys, feed tokens, idempotency records, consumer cursors and
webhook state, and the local e-mail outbox. One ``open_*`` per concept; each returns the concept's interface, and the
caller closes what it opened.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from argon2 import PasswordHasher
from redis.exceptions import RedisError

from server.consumers.notify.ledger import Ledger, LedgerStore, RedisLedger
from server.consumers.notify.outbox import Outbox, RedisOutbox
from server.consumers.webhooks.store import Webhooks, WebhookStore
from server.http.idempotency import InFlight, LocalInFlight, RedisInFlight
from server.identity.accounts import Accounts, AccountStore
from server.identity.calendar_tokens import FeedTokens, FeedTokenStore, RedisFeedTokens

ACCOUNTS_FILE = "accounts.sqlite3"
NOTIFY_FILE = "notify.sqlite3"
WEBHOOKS_FILE = "webhooks.sqlite3"
# What a store raises when its storage fails (a full disk, Redis unreachable): worth a retry.
STORE_ERRORS = (sqlite3.Error, RedisError, OSError)


def open_accounts(data_dir: Path, redis_url: str | None, *, hasher: PasswordHasher | None = None) -> Accounts:
    if redis_url:
        from server.identity.redis_accounts import RedisAccountStore

        return RedisAccountStore(redis_url, hasher=hasher)
    return AccountStore(data_dir / ACCOUNTS_FILE, hasher=hasher)


def open_feed_tokens(data_dir: Path, redis_url: str | None) -> FeedTokenStore:
    return RedisFeedTokens(redis_url) if redis_url else FeedTokens(data_dir / ACCOUNTS_FILE)


def open_in_flight(redis_url: str | None) -> InFlight:
    """The "in progress" marks of keyed bookings (the decided keys live in the journal)."""
    return RedisInFlight(redis_url) if redis_url else LocalInFlight()


def open_ledger(data_dir: Path, redis_url: str | None) -> LedgerStore:
    """The notifier's cursors and sent-message keys."""
    return RedisLedger(redis_url) if redis_url else Ledger(data_dir / NOTIFY_FILE)


def open_outbox(data_dir: Path, redis_url: str | None) -> Outbox:
    """Where e-mails go without an SMTP server: ``<data_dir>/outbox``, or Redis (every node's)."""
    return RedisOutbox(redis_url) if redis_url else Outbox(data_dir / "outbox")


def open_webhooks(data_dir: Path, redis_url: str | None) -> Webhooks:
    """Webhook endpoints, deliveries and the dispatcher's cursors."""
    if redis_url:
        from server.consumers.webhooks.redis_store import RedisWebhookStore

        return RedisWebhookStore(redis_url)
    return WebhookStore(data_dir / WEBHOOKS_FILE)
