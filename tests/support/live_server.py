"""The in-thread server: a live tandtid server for the HTTP tests, built by ``server.serve.build_server``
like ``tandtid serve`` (real uvicorn on a free port, the real ``Regions`` over a real journal -- files
in the data directory, or a RedisStreamJournal on a real redis-server -- the real account store). It
runs on its own event loop in a thread, so the tests talk to it only over HTTP (httpx) and WebSocket,
plus ``LiveServer.call`` to run a coroutine on its loop (e.g. to read its journal).

The server's clock is a ``MovableClock`` shared by the actors and the routes, so tests can
move time (hold expiry) without sleeping.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from argon2 import PasswordHasher

from engine.commands import Command
from engine.events import from_record
from persistence.codec import unpack_events
from persistence.journal import Journal
from server.identity.accounts import Role, User
from server.regions.routing import Regions
from server.serve import build_server
from server.settings import Settings
from server.stores import open_accounts
from tests.support import free_port
from tests.support.catalog import NOW, setup_commands
from tests.support.waiting import eventually, scaled

T = TypeVar("T")
START_TIMEOUT_S = 30.0
SECRET = b"test-secret-key-0123456789abcdef"
# Cheap argon2 parameters: the same code path, milliseconds per hash instead of ~100 ms.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


class MovableClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def catalog_commands() -> list[Command]:
    """Two clinics in Stockholm (AB-c1, AB-c2) and one in Skåne (M-c1), 10 days open."""
    return [*setup_commands("AB", clinics=2, resources=2, days=10), *setup_commands("M", clinics=1, days=10)]


class LiveServer:
    def __init__(
        self, data_dir: Path, *, redis_url: str | None = None, catalog: bool = True, **settings: Any
    ) -> None:
        """``catalog``: submit ``catalog_commands()`` on start (off for a restart over old data)."""
        self.data_dir = data_dir
        self.catalog = catalog
        self.redis_url = redis_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.clock = MovableClock(NOW)
        overrides: dict[str, Any] = {"rate_per_s": 1e6, "rate_burst": 1e6, **settings}
        self.settings = Settings.from_env(
            env={},
            host="127.0.0.1",
            port=self.port,
            data_dir=data_dir,
            redis_url=redis_url,
            secret_key=SECRET,
            tick_interval_s=0.2,
            **overrides,
        )
        # the store the server reads (files in data_dir, or the Redis): users made here sign in there
        self.accounts = open_accounts(data_dir, redis_url, hasher=FAST_HASHER)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: uvicorn.Server | None = None
        self.regions: Regions | None = None
        self.journal: Journal | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def _main(self) -> None:
        built = await build_server(
            self.settings, clock=self.clock, accounts=self.accounts, log_level="warning"
        )
        self.journal, self.regions, self.server = built.journal, built.regions, built.server
        for command in catalog_commands() if self.catalog else ():
            await self.regions.submit(command)
        serving = asyncio.create_task(built.serve())
        server = self.server
        # uvicorn offers no "started" event to wait on
        await eventually(lambda: server.started or serving.done(), timeout=START_TIMEOUT_S, what="uvicorn")
        self._started.set()
        try:
            await serving
        finally:
            await built.close()

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._started.set()
        finally:
            self.loop.close()

    def start(self) -> LiveServer:
        self._thread = threading.Thread(target=self._run, name=f"live-server-{self.port}", daemon=True)
        self._thread.start()
        if not self._started.wait(scaled(START_TIMEOUT_S)):
            raise RuntimeError(f"the live server did not start within {scaled(START_TIMEOUT_S):.0f} s")
        if self._error is not None:
            raise RuntimeError("the live server failed to start") from self._error
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(scaled(START_TIMEOUT_S))
        self.accounts.close()

    # -- helpers ---------------------------------------------------------------------------------

    def call(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the server's loop; ``await asyncio.wrap_future(...)`` or ``.result()``."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def journal_events(self, region: str) -> list[Any]:
        assert self.journal is not None
        journal = self.journal

        async def read() -> list[Any]:
            return [from_record(r) async for e in journal.read(region) for r in unpack_events(e.payload)]

        return await asyncio.wrap_future(self.call(read()))

    def user(
        self,
        role: Role = Role.PATIENT,
        clinic: str | None = None,
        *,
        name: str = "Test Person",
        email: str | None = None,
    ) -> tuple[User, str]:
        """A user in the store and a bearer token for it."""
        import secrets

        email = email or f"user-{secrets.token_hex(6)}@example.test"
        user = self.accounts.create_user(email, "password-123", name, role, clinic)
        return user, self.session_token(user)

    def session_token(self, user: User) -> str:
        """A new signed-in session of ``user`` (recorded in the store the server reads)."""
        from server.identity.auth import start_session

        return start_session(self.accounts, self.app_signer(), user)

    def app_signer(self) -> Any:
        from server.identity.auth import SessionSigner

        return SessionSigner(SECRET, self.settings.session_ttl_s)
