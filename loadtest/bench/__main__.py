"""``python -m loadtest.bench NAME [options]``: run one benchmark, or ``all`` of them.

Every module in this package except the helpers below is a benchmark with ``main(argv)``
that prints one JSON line; ``all`` is ``suite.py`` (``make bench``). ``NAME --help`` shows a
benchmark's own options. A missing or unreachable redis-server ends in one line on stderr
and exit status 1, never a traceback.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import redis

from loadtest.redis_server import RedisServerMissing
from persistence.journal import JournalUnavailable

HELPERS = frozenset({"__main__", "catalog", "suite"})
USAGE = "usage: python -m loadtest.bench NAME [options]   (NAME --help for a benchmark's options)"


def bench_names() -> list[str]:
    """The benchmarks in this package, by module name."""
    found = pkgutil.iter_modules([str(Path(__file__).parent)])
    return sorted(m.name for m in found if m.name not in HELPERS)


def main(argv: list[str]) -> int:
    names = bench_names()
    if not argv or argv[0] in ("-h", "--help"):
        print(f"{USAGE}\nbenchmarks: {', '.join(names)}, all", file=sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name != "all" and name not in names:
        print(f"unknown benchmark {name!r}; one of: {', '.join(names)}, all", file=sys.stderr)
        return 2
    module = importlib.import_module(f"loadtest.bench.{'suite' if name == 'all' else name}")
    try:
        module.main(rest)
    except RedisServerMissing as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except (redis.ConnectionError, JournalUnavailable) as exc:
        print(f"{name}: the journal cannot be reached ({exc})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
