"""The local outbox: where e-mails go when no SMTP server is configured (``make run``).

One ``.eml`` file per message under ``<data_dir>/outbox/``, named by the message key
(``AB:12:0:booked`` -> ``AB_12_0_booked.eml``), written atomically (temp file, fsync,
rename). Writing a key that is already there changes nothing, so the outbox is
exactly-once even across a crash between writing and recording. Admins read it through
``GET /api/admin/outbox`` (it holds patients' e-mail addresses: never log its contents).

With ``--redis`` the outbox is :class:`RedisOutbox`, one for every node: each region's notifier
runs on its owner, and the admin page of any node lists every message (``server.stores``).
"""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from persistence import redis_client
from persistence.durable_file import fsync_directory, write_atomically
from server.consumers.notify.messages import Mail

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}\.eml$")


def file_name(key: str) -> str:
    return key.replace(":", "_") + ".eml"


class Outbox:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def close(self) -> None:
        return

    def put(self, mail: Mail) -> bool:
        """Write the message; False if a message with its key is already there."""
        return self.put_many([mail]) == 1

    def put_many(self, mails: list[Mail]) -> int:
        """Write every message whose key is not there yet (each file fsynced, renamed into
        place, then the directory fsynced once: all are durable when this returns). Returns
        how many were written."""
        self.directory.mkdir(parents=True, exist_ok=True)
        written = 0
        for mail in mails:
            path = self.directory / file_name(mail.key)
            if path.exists():
                continue
            write_atomically(path, mail.data, mode=0o600, sync_directory=False)
            written += 1
        if written:
            fsync_directory(self.directory)
        return written

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(
            (p.name for p in self.directory.iterdir() if _NAME.match(p.name)),
            key=lambda n: (self.directory / n).stat().st_mtime_ns,
            reverse=True,
        )

    def summary(self, name: str) -> dict[str, Any] | None:
        message = self.read(name)
        if message is None:
            return None
        return {
            "name": name,
            "key": str(message.get("X-Tandtid-Key", "")),
            "to": str(message.get("To", "")),
            "subject": str(message.get("Subject", "")),
            "date": str(message.get("Date", "")),
            "message_id": str(message.get("Message-ID", "")),
        }

    def read(self, name: str) -> EmailMessage | None:
        """The parsed message, or None for a name that is not an outbox file."""
        if not _NAME.match(name):
            return None
        path = self.directory / name
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None
        message = BytesParser(policy=policy.default).parsebytes(data)
        assert isinstance(message, EmailMessage)
        return message

    def view(self, name: str) -> dict[str, Any] | None:
        """Headers, the text body and the attachments' names, for the admin page."""
        message = self.read(name)
        summary = self.summary(name)
        if message is None or summary is None:
            return None
        body = message.get_body(preferencelist=("plain",))
        summary["text"] = body.get_content() if body is not None else ""
        summary["attachments"] = [
            {"filename": part.get_filename() or "", "content_type": part.get_content_type()}
            for part in message.iter_attachments()
        ]
        return summary


# KEYS: messages, order; ARGV: name, message, name, message, ... Writes the names not there yet.
_PUT = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local written = 0
for i = 1, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('ZADD', KEYS[2], ms, ARGV[i])
    written = written + 1
  end
end
return written
"""
_MESSAGES = "tandtid:{outbox}:messages"  # hash: file name -> the message as sent (bytes)
_ORDER = "tandtid:{outbox}:order"  # sorted set: file name by when it was written (ms, server clock)


class RedisOutbox(Outbox):
    """The outbox in the Redis at ``url``, by the same file names (a name is written once: one
    script call writes a batch atomically). Thread-safe; call :meth:`close`."""

    def __init__(self, url: str) -> None:
        self._redis = redis_client.connect(url)
        self._put = self._redis.register_script(_PUT)

    def put_many(self, mails: list[Mail]) -> int:
        if not mails:
            return 0
        args: list[str | bytes] = []
        for mail in mails:
            args += [file_name(mail.key), mail.data]
        return int(self._put(keys=[_MESSAGES, _ORDER], args=args))

    def names(self) -> list[str]:
        return [n.decode() for n in self._redis.zrevrange(_ORDER, 0, -1)]

    def read(self, name: str) -> EmailMessage | None:
        if not _NAME.match(name):
            return None
        data = self._redis.hget(_MESSAGES, name)
        if data is None:
            return None
        message = BytesParser(policy=policy.default).parsebytes(data)
        assert isinstance(message, EmailMessage)
        return message

    def close(self) -> None:
        self._redis.close()
