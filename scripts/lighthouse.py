"""Lighthouse 12 against a running server with Debian's chromium: prints the scores and figures per page.

    python scripts/lighthouse.py http://127.0.0.1:8000 [--pages / /clinic/AB-c1 /kiosk/AB-c1] [--form desktop mobile]

Needs node (``npx lighthouse@12.2.3``) and ``/usr/bin/chromium`` (``CHROME_PATH`` overrides). Prints one line per page
and form factor: Performance, Accessibility, Best Practices, Total Blocking Time, Time to Interactive, Cumulative
Layout Shift, DOM nodes and bytes transferred, and the machine's load average after the run. Reports are kept in
``--out`` (default a temp dir) as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

LIGHTHOUSE = "lighthouse@12.2.3"


def run(url: str, form: str, out: Path) -> dict[str, object]:
    env = {**os.environ, "CHROME_PATH": os.environ.get("CHROME_PATH", "/usr/bin/chromium")}
    cmd = [
        "npx",
        "-y",
        LIGHTHOUSE,
        url,
        "--quiet",
        "--output=json",
        f"--output-path={out}",
        "--only-categories=performance,accessibility,best-practices",
        "--chrome-flags=--headless --no-sandbox --disable-gpu",
    ]
    if form == "desktop":
        cmd.append("--preset=desktop")
    subprocess.run(cmd, check=True, env=env)
    report = json.loads(out.read_text())
    audits = report["audits"]
    cats = report["categories"]

    def score(name: str) -> str:
        value = cats.get(name, {}).get("score")
        return "-" if value is None else str(round(value * 100))

    dom = audits.get("dom-size", {}).get("numericValue")
    return {
        "performance": score("performance"),
        "accessibility": score("accessibility"),
        "best_practices": score("best-practices"),
        "tbt_ms": round(audits["total-blocking-time"]["numericValue"]),
        "tti_s": round(audits["interactive"].get("numericValue", 0) / 1000, 1),
        "cls": round(audits["cumulative-layout-shift"]["numericValue"], 3),
        "dom_nodes": None if dom is None else round(dom),
        "kb_transferred": round(audits["total-byte-weight"]["numericValue"] / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base", help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--pages", nargs="+", default=["/"])
    parser.add_argument("--form", nargs="+", default=["desktop", "mobile"], choices=["desktop", "mobile"])
    parser.add_argument("--out", default=tempfile.mkdtemp(prefix="lighthouse-"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for page in args.pages:
        for form in args.form:
            name = (page.strip("/").replace("/", "_") or "map") + f"-{form}.json"
            figures = run(args.base.rstrip("/") + page, form, out / name)
            load = " ".join(f"{x:.1f}" for x in os.getloadavg())  # figures on a shared machine need it
            line = " ".join(f"{k}={v}" for k, v in figures.items())
            print(f"{page} {form}: {line} load_avg={load}", flush=True)
    print(f"reports in {out}")


if __name__ == "__main__":
    main()
