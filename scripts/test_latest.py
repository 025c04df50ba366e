"""The non-browser suite against the newest releases (``make test-latest``; run by that venv's python).

Prints every installed version that differs from constraints.txt, then one loud verdict line,
and exits with the suite's status. A failure here with ``make test`` green means an upstream
release broke us: the differing versions are the suspects.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep:
            pins[normal(name.strip())] = version.strip()
    return pins


def main() -> int:
    status = subprocess.call(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--ignore=tests/browser"], cwd=ROOT
    )
    pins = pinned()
    newer = []
    for dist in metadata.distributions():
        name = normal(dist.metadata["Name"])
        if name in pins and pins[name] != dist.version:
            newer.append(f"{name} {pins[name]} -> {dist.version}")
    print("\nnewest releases that differ from constraints.txt:")
    print("\n".join(f"  {line}" for line in sorted(newer)) or "  none")
    verdict = "PASSED" if status == 0 else f"FAILED (pytest exit {status})"
    bar = "#" * 78
    print(f"\n{bar}\n# suite against the NEWEST releases: {verdict}\n{bar}")
    return status


if __name__ == "__main__":
    sys.exit(main())
