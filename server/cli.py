"""The ``tandtid`` command: serve, seed, admin, watch, book (benchmarks: ``python -m loadtest.bench``).

tandtid serve --host H --port P --data DIR [--redis URL] [--seed [--scale S] [--booked F]]
tandtid seed --data DIR [--redis URL] [--scale demo|small|sweden|N] [--booked F]
tandtid admin create-user --email E --name N [--password P] [--role patient|staff|clinic_admin|admin] [--clinic ID]
tandtid admin clinic-key CLINIC
tandtid journal check|repair --data DIR | --redis URL [--region AB]
tandtid watch region:AB [--url ws://127.0.0.1:8000/ws]
tandtid book --clinic ID --service checkup [--url URL] [--email E --password P]
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
from websockets.exceptions import WebSocketException

from persistence.journal import JournalUnavailable
from server.data_lock import DataDirectoryInUse

log = logging.getLogger("tandtid")
Result = TypeVar("Result")  # what the server loop's main coroutine returns


def _common_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="data directory (default ./data, env TANDTID_DATA_DIR)")
    p.add_argument(
        "--redis", default=None, help="Redis URL: use the Redis stream journal (env TANDTID_REDIS_URL)"
    )


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a share is within 0..1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tandtid", description="Real-time dental booking for Sweden")
    sub = parser.add_subparsers(dest="cmd", required=True)

    serve = sub.add_parser("serve", help="run the server (all 21 region actors + HTTP + WebSocket)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    _common_store_args(serve)
    serve.add_argument("--seed", action="store_true", help="fill an EMPTY data store with demo data")
    serve.add_argument("--seed-if-empty", action="store_true", help="same as --seed (used by make run)")
    serve.add_argument("--scale", default="demo", help="seed scale: demo, small, sweden or a number")
    serve.add_argument(
        "--booked", type=_share, default=0.0, help="seed: share of open times pre-booked (0..1)"
    )
    serve.add_argument("--open", action="store_true", help="open the map in a browser once serving")
    serve.add_argument(
        "--node",
        default=None,
        help="with --redis: this node's name; it writes only the regions whose lease it holds (env TANDTID_NODE)",
    )
    serve.add_argument(
        "--advertise",
        default=None,
        help="with --node: the address other nodes reach this one at, e.g. http://host:8000 (env TANDTID_ADVERTISE)",
    )
    serve.add_argument(
        "--forwarded-allow-ips",
        default=None,
        help="comma-separated proxy addresses (or networks, or *) whose X-Forwarded-For names the client "
        "(env TANDTID_FORWARDED_ALLOW_IPS; default: none, the peer is the client)",
    )
    serve.add_argument(
        "--consumers",
        choices=("process", "in-process"),
        default=None,
        help="where e-mails and webhooks are made and sent: their own process beside the server's "
        "(the default) or the server's own (env TANDTID_CONSUMERS)",
    )
    serve.add_argument("--log-level", default=None)

    seed = sub.add_parser("seed", help="fill an empty data store with clinics (no server)")
    _common_store_args(seed)
    seed.add_argument("--scale", default="demo")
    seed.add_argument("--days", type=int, default=90)
    seed.add_argument(
        "--booked",
        type=_share,
        default=0.0,
        help="share of open times pre-booked (0..1), more in the next weeks than far out",
    )

    admin = sub.add_parser("admin", help="accounts and clinic API keys")
    admin_sub = admin.add_subparsers(dest="admin_cmd", required=True)
    cu = admin_sub.add_parser("create-user")
    _common_store_args(cu)
    cu.add_argument("--email", required=True)
    cu.add_argument("--name", required=True)
    cu.add_argument("--password", default=None, help="prompted for when omitted")
    cu.add_argument("--role", default="patient", choices=["patient", "staff", "clinic_admin", "admin"])
    cu.add_argument("--clinic", default=None, help="the clinic id, for staff and clinic admins")
    ck = admin_sub.add_parser("clinic-key")
    _common_store_args(ck)
    ck.add_argument("clinic")

    journal = sub.add_parser(
        "journal",
        help="inspect (check) or cut at the last good frame (repair) a damaged file journal",
        description="check: read-only report per region as JSON lines (exit 1 when any region is "
        "damaged); repair: with the server stopped, cut each damaged region's journal at its last "
        "good frame, keeping the cut bytes in DIR/set-aside/, and list the booking ids that were cut",
    )
    journal.add_argument("action", choices=["check", "repair"])
    journal.add_argument("--data", default=None, help="data directory (default ./data, env TANDTID_DATA_DIR)")
    journal.add_argument(
        "--redis",
        default=None,
        help="check the Redis stream journal at this URL instead (env TANDTID_REDIS_URL)",
    )
    journal.add_argument("--region", default=None, help="one region code (default: every region)")

    watch = sub.add_parser("watch", help="print a topic's live diffs")
    watch.add_argument("topic", help="region:AB or clinic:<id>")
    watch.add_argument("--url", default="ws://127.0.0.1:8000/ws")
    watch.add_argument("--from", dest="from_", default=None)
    watch.add_argument("--days", type=int, default=7)
    watch.add_argument("--count", type=int, default=0, help="stop after this many messages (0: never)")

    book = sub.add_parser("book", help="book the earliest free time at a clinic from the terminal")
    book.add_argument("--url", default="http://127.0.0.1:8000")
    book.add_argument("--clinic", required=True)
    book.add_argument("--service", default="checkup")
    book.add_argument("--email", required=True)
    book.add_argument("--password", default=None)
    book.add_argument("--days", type=int, default=14)
    book.add_argument(
        "--late",
        action="store_true",
        help="also book times within the clinic's cancellation notice (they cannot be cancelled online)",
    )
    return parser


class CommandError(Exception):
    """A mistake in how the command was called; its message is the one line the user sees."""


def log_level(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """The root logger's level: ``--log-level``, else ``TANDTID_LOG_LEVEL``, else INFO (as the README's table says)."""
    name = getattr(args, "log_level", None) or env.get("TANDTID_LOG_LEVEL") or "info"
    level = logging.getLevelName(name.upper())
    if not isinstance(level, int):
        raise CommandError(f"unknown log level {name!r}: use debug, info, warning, error or critical")
    return level


def main(argv: list[str] | None = None) -> int:
    """Run one command. Errors the user can act on (a journal or server that cannot be reached, a
    password with no terminal to ask on) end in one line on stderr and exit status 1, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        logging.basicConfig(
            level=log_level(args, os.environ), format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
        return run_command(args)
    except KeyboardInterrupt:
        return 130
    except (
        CommandError,
        DataDirectoryInUse,
        JournalUnavailable,
        OSError,
        httpx.HTTPError,
        WebSocketException,
    ) as exc:
        print(f"tandtid {args.cmd}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1


def password_of(args: argparse.Namespace) -> str:
    """``--password``, else asked for on the terminal; with no terminal a CommandError."""
    if args.password:
        return str(args.password)
    if not sys.stdin.isatty():
        raise CommandError("no terminal to ask for the password on: pass --password")
    return getpass.getpass("password: ")


def run_command(args: argparse.Namespace) -> int:
    if args.cmd == "serve":
        from server.serve import serve

        return run_server_loop(serve(args))
    if args.cmd == "seed":
        from server.serve import seed_store

        return asyncio.run(seed_store(args))
    if args.cmd == "journal":
        return run_journal(args)
    if args.cmd == "admin":
        return run_admin(args)
    if args.cmd == "watch":
        from server.client import watch

        return asyncio.run(watch(args.url, args.topic, args.from_, args.days, args.count))
    if args.cmd == "book":
        from server.client import book

        return asyncio.run(
            book(args.url, args.email, password_of(args), args.clinic, args.service, args.days, args.late)
        )
    return 2


def run_server_loop(main_coro: Coroutine[Any, Any, Result]) -> Result:
    """The server's event loop: uvloop when installed (uvicorn[standard] brings it), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main_coro)
    result: Result = uvloop.run(main_coro)
    return result


def run_journal(args: argparse.Namespace) -> int:
    """``tandtid journal check|repair``: one JSON line per region; exit 1 when damage remains."""
    from persistence.file_check import check_region, regions_in, repair_region
    from persistence.file_journal import restore_from_commit_log
    from server.data_lock import data_directory_lock

    redis_url = args.redis or (None if args.data else os.environ.get("TANDTID_REDIS_URL"))
    if redis_url:
        return run_redis_journal(args, redis_url)
    data = Path(args.data or os.environ.get("TANDTID_DATA_DIR") or "./data")
    damaged = False
    if args.action == "check":
        for region in [args.region] if args.region else regions_in(data):
            report = check_region(data, region)
            damaged |= report.status == "damaged"
            print_json(report.to_json())
        return 1 if damaged else 0
    with data_directory_lock(data):
        # First what a start does after a crash: put back what the commit log holds (and stop
        # what its damage may have lost), so the cut below never cuts a restorable frame.
        for problem in restore_from_commit_log(data):
            log.error("%s", problem)
        for region in [args.region] if args.region else regions_in(data):
            report = repair_region(data, region)
            print_json({**report.to_json(), "lost_bookings": report.lost_bookings})
    return 0


def run_redis_journal(args: argparse.Namespace, url: str) -> int:
    """``tandtid journal check|repair --redis URL``: one JSON line per region, as for files."""
    from redis.exceptions import RedisError

    from persistence.redis_check import check_region, connect, regions_in, repair_region

    client = connect(url)
    try:
        regions = [args.region] if args.region else regions_in(client)
        damaged = False
        for region in regions:
            if args.action == "check":
                report = check_region(client, region)
                damaged |= report.status == "damaged"
                print_json(report.to_json())
            else:
                report = repair_region(client, region)
                print_json({**report.to_json(), "lost_bookings": report.lost_bookings})
    except RedisError as exc:
        raise CommandError(f"redis: {type(exc).__name__}: {exc}") from None
    finally:
        client.close()
    return 1 if damaged else 0


def run_admin(args: argparse.Namespace) -> int:
    from server.identity.accounts import EmailTaken, InvalidAccount, Role
    from server.settings import Settings
    from server.stores import open_accounts

    settings = Settings.from_env(data_dir=Path(args.data) if args.data else None, redis_url=args.redis)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_accounts(settings.data_dir, settings.redis_url)
    try:
        if args.admin_cmd == "create-user":
            password = password_of(args)
            if args.role in ("staff", "clinic_admin") and not args.clinic:
                print("staff and clinic admin accounts need --clinic", file=sys.stderr)
                return 2
            try:
                user = store.create_user(args.email, password, args.name, Role(args.role), args.clinic)
            except (EmailTaken, InvalidAccount) as exc:
                print(f"not created: {exc}", file=sys.stderr)
                return 1
            print(json.dumps({"id": user.id, "role": str(user.role), "clinic": user.clinic}))
        elif args.admin_cmd == "clinic-key":
            key = store.create_clinic_key(args.clinic)
            print(key)
            print("Store this key now: only its hash is kept, it cannot be shown again.", file=sys.stderr)
    finally:
        store.close()
    return 0


def print_json(data: dict[str, Any]) -> None:
    print(json.dumps(data, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    sys.exit(main())
