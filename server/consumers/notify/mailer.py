"""Where e-mails go: an SMTP server (a real client, aiosmtplib) or the local outbox.

Configuration from the environment (the README's settings table)::

    TANDTID_SMTP_HOST       unset: write to <data_dir>/outbox instead of sending
    TANDTID_SMTP_PORT       default 25 (587 with starttls, 465 with tls)
    TANDTID_SMTP_TLS        none | starttls | tls            (default none)
    TANDTID_SMTP_USER / TANDTID_SMTP_PASSWORD                 (optional)
    TANDTID_MAIL_FROM       default "Tandtid <no-reply@tandtid.se>"

``Mailer.send`` returns the channel used ("smtp" / "outbox"). It raises ``Rejected`` when
the server refused the message for good (5xx: retrying would not help) and ``MailUnavailable``
when it could not be handed over now (connection, timeout, 4xx): the caller retries later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import aiosmtplib
from redis.exceptions import RedisError

from engine.errors import TandtidError
from server.consumers.notify.messages import Mail
from server.consumers.notify.outbox import Outbox
from server.consumers.workers import in_consumer_thread

TlsMode = Literal["none", "starttls", "tls"]


class MailUnavailable(TandtidError):
    """The message was not handed over; try again later."""


class Rejected(TandtidError):
    """The SMTP server refused the message permanently (5xx)."""


@dataclass(frozen=True)
class MailConfig:
    host: str | None = None
    port: int = 25
    tls: TlsMode = "none"
    username: str | None = None
    password: str | None = None
    sender: str = "Tandtid <no-reply@tandtid.se>"
    timeout_s: float = 15.0

    @classmethod
    def from_env(cls, env: dict[str, str]) -> MailConfig:
        tls = env.get("TANDTID_SMTP_TLS", "none") or "none"
        if tls not in ("none", "starttls", "tls"):
            raise ValueError("TANDTID_SMTP_TLS must be none, starttls or tls")
        default_port = {"none": 25, "starttls": 587, "tls": 465}[tls]
        return cls(
            host=env.get("TANDTID_SMTP_HOST") or None,
            port=int(env.get("TANDTID_SMTP_PORT") or default_port),
            tls=tls,  # type: ignore[arg-type]
            username=env.get("TANDTID_SMTP_USER") or None,
            password=env.get("TANDTID_SMTP_PASSWORD") or None,
            sender=env.get("TANDTID_MAIL_FROM") or cls.sender,
        )


class Mailer(Protocol):
    channel: str
    keyed: bool  # a message handed over under its key is its own record (sending it again changes nothing)

    async def send(self, mail: Mail) -> str: ...

    async def send_many(self, mails: list[Mail]) -> str:
        """Hand every message over (all or MailUnavailable); the channel used."""
        ...


class SmtpMailer:
    channel = "smtp"
    keyed = False  # a message accepted by the server is gone: record each one right after it

    def __init__(self, config: MailConfig) -> None:
        assert config.host is not None
        self.config = config

    async def send(self, mail: Mail) -> str:
        c = self.config
        key = mail.key
        try:
            await aiosmtplib.send(
                mail.data,  # as it is: composed bytes need no flattening
                sender=mail.sender,
                recipients=[mail.to],
                hostname=c.host,
                port=c.port,
                username=c.username,
                password=c.password,
                use_tls=c.tls == "tls",
                start_tls=c.tls == "starttls",
                timeout=c.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            if all(e.code >= 500 for e in exc.recipients):
                raise Rejected(f"message {key}: every recipient refused") from None
            raise MailUnavailable(f"message {key}: recipient deferred") from None
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                raise Rejected(f"message {key}: refused with {exc.code}") from None
            raise MailUnavailable(f"message {key}: deferred with {exc.code}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise MailUnavailable(f"message {key}: {exc.__class__.__name__}") from None
        return self.channel

    async def send_many(self, mails: list[Mail]) -> str:
        for mail in mails:
            await self.send(mail)
        return self.channel


class OutboxMailer:
    channel = "outbox"
    keyed = True  # the outbox writes a key once: its record is the record

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def send(self, mail: Mail) -> str:
        return await self.send_many([mail])

    async def send_many(self, mails: list[Mail]) -> str:
        """One worker-thread call for all of them (one write and one fsync)."""
        try:
            await in_consumer_thread(self.outbox.put_many, mails)
        except OSError as exc:
            raise MailUnavailable(
                f"{len(mails)} messages: outbox write failed ({exc.strerror or exc})"
            ) from None
        except RedisError as exc:
            raise MailUnavailable(
                f"{len(mails)} messages: outbox write failed ({exc.__class__.__name__})"
            ) from None
        return self.channel


def mailer_for(config: MailConfig, outbox: Callable[[], Outbox]) -> Mailer:
    """SMTP when a host is configured, else the outbox ``outbox()`` opens (server.stores)."""
    if config.host:
        return SmtpMailer(config)
    return OutboxMailer(outbox())
