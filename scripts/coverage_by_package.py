"""Print line coverage per package of the product (``make test`` runs it after the suite).

Reads the ``.coverage`` data that ``pytest --cov`` wrote; every module of engine, persistence
and server counts, imported or not. Code run only inside a subprocess (the browser tests'
``tandtid serve``, the Locust smoke run) is not measured.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("engine", "persistence", "server")


def main() -> int:
    cov = coverage.Coverage(config_file=str(ROOT / "pyproject.toml"))
    cov.load()
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for top in PRODUCT:
        for path in sorted((ROOT / top).rglob("*.py")):
            _, statements, _, missing, _ = cov.analysis2(str(path))
            package = totals[path.parent.relative_to(ROOT).as_posix()]
            package[0] += len(statements)
            package[1] += len(missing)
    print(f"\n{'line coverage by package':32s} {'lines':>7s} {'missed':>7s} {'covered':>8s}")
    all_lines = all_missed = 0
    for name, (lines, missed) in sorted(totals.items()):
        all_lines, all_missed = all_lines + lines, all_missed + missed
        print(f"{name:32s} {lines:7d} {missed:7d} {percent(lines, missed):>8s}")
    print(f"{'all':32s} {all_lines:7d} {all_missed:7d} {percent(all_lines, all_missed):>8s}")
    return 0


def percent(lines: int, missed: int) -> str:
    return f"{100 * (lines - missed) / lines:.0f}%" if lines else "-"


if __name__ == "__main__":
    sys.exit(main())
