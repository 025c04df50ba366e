"""The local outbox: where e-mails go when no SMTP server is configured (``make run``).

One append-only log, ``<data_dir>/outbox/messages.log``: each batch of messages the notifier
hands over is ONE write + ONE fsync (a file per message, fsynced and renamed into place, cost
~380 us of CPU per message, more than composing the message and booking the time together).
A message is named by its key (``AB:12:0:booked`` -> ``AB_12_0_booked.eml``) and written once:
a batch skips the names already in the log, so the outbox is exactly-once even across a crash
between writing and recording. Admins read it through ``GET /api/admin/outbox`` (it holds
patients' e-mail addresses: never log its contents).

Record: magic ``TTO1``, crc32 of the rest, name length, message length, when it was written
(ns since the epoch), the name, the message as sent. Writers (the notifier's threads, and a
notifier running as its own process) hold an exclusive ``flock`` on the log while they catch
up with it and append; readers hold a shared one. Bytes past the last whole record can only
be a write cut by a crash (its batch was never recorded as sent: it is written again): the
next writer cuts them and logs that it did. A damaged record with whole records after it is
an error (``OutboxDamaged``), never skipped. An outbox of ``.eml`` files (before the log) is
moved into the log by the first writer.

With ``--redis`` the outbox is :class:`RedisOutbox`, one for every node: each region's notifier
runs on its owner, and the admin page of any node lists every message (``server.stores``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from persistence import redis_client
from persistence.durable_file import fsync_directory, write_all
from server.consumers.notify.messages import Mail

log = logging.getLogger("tandtid.outbox")

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}\.eml$")
LOG = "messages.log"
MAGIC = b"TTO1"
HEADER = struct.Struct("<4sIHIQ")  # magic, crc32 of the rest, name length, message length, written ns


class OutboxDamaged(OSError):
    """A record of the outbox log that is not whole, with whole records after it."""


def file_name(key: str) -> str:
    return key.replace(":", "_") + ".eml"


def encode(name: str, data: bytes, written_ns: int) -> bytes:
    raw = name.encode()
    rest = HEADER.pack(MAGIC, 0, len(raw), len(data), written_ns)[8:] + raw + data
    return MAGIC + struct.pack("<I", zlib.crc32(rest)) + rest


class Outbox:
    """The outbox log in ``directory``. Thread-safe, and safe beside other processes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / LOG
        self._lock = threading.Lock()  # the index and the scan position, between this process's threads
        self._index: dict[
            str, tuple[int, int, int]
        ] = {}  # name -> (offset of the message, length, written ns)
        self._scanned = 0  # bytes of the log read into the index
        self._moved = False  # the .eml files of an older outbox moved into the log

    def close(self) -> None:
        return

    def put(self, mail: Mail) -> bool:
        """Write the message; False if a message with its name is already there."""
        return self.put_many([mail]) == 1

    def put_many(self, mails: list[Mail]) -> int:
        """Append every message whose name is not there yet, in one write and one fsync: all are
        durable when this returns. Returns how many were written."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._locked(fcntl.LOCK_EX) as fd:
            self._move_eml_files(fd)
            now = time.time_ns()
            records, seen = [], set()
            for mail in mails:
                name = file_name(mail.key)
                if name in self._index or name in seen:
                    continue
                seen.add(name)
                records.append((name, mail.data))
            if records:
                self._append(fd, records, now)
            return len(records)

    def names(self) -> list[str]:
        """Every message's name, newest first."""
        if not self.path.exists():
            return []
        with self._locked(fcntl.LOCK_SH):
            entries = sorted(self._index.items(), key=lambda item: (item[1][2], item[1][0]), reverse=True)
        return [name for name, _ in entries]

    def read(self, name: str) -> EmailMessage | None:
        """The parsed message, or None for a name that is not in the outbox."""
        if not _NAME.match(name) or not self.path.exists():
            return None
        with self._locked(fcntl.LOCK_SH) as fd:
            where = self._index.get(name)
            data = os.pread(fd, where[1], where[0]) if where else None
        if data is None:
            return None
        message = BytesParser(policy=policy.default).parsebytes(data)
        assert isinstance(message, EmailMessage)
        return message

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

    # -- the log ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, how: int) -> Iterator[int]:
        """The log open and flocked (``how``), the index caught up with it."""
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if created and how == fcntl.LOCK_EX:
                fsync_directory(self.directory)  # the log's name is durable before anything in it
            with self._lock:
                fcntl.flock(fd, how)
                try:
                    self._catch_up(fd, writer=how == fcntl.LOCK_EX)
                    yield fd
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _catch_up(self, fd: int, *, writer: bool) -> None:
        """Index the records other writers appended since the last look."""
        size = os.fstat(fd).st_size
        if size < self._scanned:
            raise OutboxDamaged(f"{self.path} is shorter than before ({size} < {self._scanned} bytes)")
        if size == self._scanned:
            return
        off = self._scanned
        with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as view:
            while (end := _record_end(view, off, size)) is not None:
                name_len, data_len, written_ns = HEADER.unpack_from(view, off)[2:]
                name = bytes(view[off + HEADER.size : off + HEADER.size + name_len]).decode()
                self._index[name] = (end - data_len, data_len, written_ns)
                off = end
            damaged = off < size and _whole_record_after(view, off, size)
        if damaged:
            raise OutboxDamaged(f"{self.path}: a damaged record at byte {off} with whole records after it")
        if off < size and writer:  # the tail of a write a crash cut: its batch was never recorded as sent
            os.ftruncate(fd, off)
            os.fsync(fd)
            log.warning("outbox: cut %d bytes of a write a crash interrupted at byte %d", size - off, off)
        self._scanned = off

    def _append(self, fd: int, records: list[tuple[str, bytes]], written_ns: int) -> None:
        """One write, one fsync; a failed write is cut off again (the disk must not keep half a batch)."""
        frames = [encode(name, data, written_ns) for name, data in records]
        try:
            write_all(fd, b"".join(frames))
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._scanned)
            raise
        off = self._scanned
        for (name, data), frame in zip(records, frames, strict=True):
            off += len(frame)
            self._index[name] = (off - len(data), len(data), written_ns)
        self._scanned = off

    def _move_eml_files(self, fd: int) -> None:
        """An outbox written before the log (one ``.eml`` file per message): into the log, oldest
        first, then the files go. Once per instance: nothing writes such files any more."""
        if self._moved:
            return
        self._moved = True
        files = [p for p in self.directory.iterdir() if _NAME.match(p.name)]
        if not files:
            return
        files.sort(key=lambda p: p.stat().st_mtime_ns)
        for path in files:
            if path.name not in self._index:
                self._append(fd, [(path.name, path.read_bytes())], path.stat().st_mtime_ns)
        for path in files:
            path.unlink()
        fsync_directory(self.directory)
        log.info("outbox: moved %d .eml files into %s", len(files), LOG)


def _record_end(view: mmap.mmap, off: int, size: int) -> int | None:
    """Where the whole record at ``off`` ends, or None when it is not whole."""
    if size - off < HEADER.size:
        return None
    magic, crc, name_len, data_len, _ = HEADER.unpack_from(view, off)
    end: int = off + HEADER.size + name_len + data_len
    if magic != MAGIC or end > size or zlib.crc32(view[off + 8 : end]) != crc:
        return None
    return end


def _whole_record_after(view: mmap.mmap, start: int, size: int) -> bool:
    at = view.find(MAGIC, start + 1)
    while at != -1:
        if _record_end(view, at, size) is not None:
            return True
        at = view.find(MAGIC, at + 1)
    return False


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
