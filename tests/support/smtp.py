"""A real SMTP server (aiosmtpd, in this process) that keeps every message it accepts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from server.consumers.notify.messages import KEY_HEADER
from tests.support import free_port

HOLD_S = 30.0


class Inbox:
    """aiosmtpd handler: keeps every accepted message. With ``hold_after`` set, the message
    after that many is held unanswered until ``release`` (then refused with 451). While
    ``answer`` is clear, a message is kept and its 250 held back until ``answer`` is set."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str], bytes]] = []  # MAIL FROM, RCPT TOs, DATA as received
        self.hold_after: int | None = None
        self.holding = threading.Event()
        self.release = threading.Event()
        self.answer = threading.Event()
        self.answer.set()
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.hold_after is not None and len(self.messages) >= self.hold_after:
            self.holding.set()
            await asyncio.to_thread(self.release.wait, HOLD_S)
            return "451 4.3.0 try again later"
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        if not self.answer.is_set():
            await asyncio.to_thread(self.answer.wait, HOLD_S)
        return "250 OK"

    def keys(self) -> list[str]:
        with self._lock:
            return [str(m[KEY_HEADER]) for m in self.messages]


@contextmanager
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    """A running SMTP server on 127.0.0.1: its inbox and port."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        inbox.release.set()
        controller.stop()
