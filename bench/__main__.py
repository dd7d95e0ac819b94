"""``python -m bench``: run the benchmark rows, print one table, write it as JSON."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import sqlite3
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

from bench.rows import ROWS, Line, Options, RowResult

PACKAGES = (
    "tidings",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "sqlalchemy",
    "jinja2",
    "aiosmtplib",
    "aiosmtpd",
    "procrastinate",
    "apprise",
)
COLUMNS = ("path", "measured", "baseline (same run)", "ratio", "target", "met?")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "system": f"{platform.system()} {platform.release()}",
        "load_average": load_average(),
    }


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def number(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:,.0f} {unit}"


def cells(line: Line) -> list[str]:
    ratio = line.ratio
    return [
        line.path,
        number(line.measured, line.unit),
        number(line.baseline, line.unit),
        "-" if ratio is None else f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}",
        line.target or "-",
        {True: "yes", False: "NO", None: "-"}[line.met],
    ]


def render(rows: list[RowResult]) -> str:
    table = [list(COLUMNS)] + [cells(line) for row in rows for line in row.lines]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    out = []
    for n, row in enumerate(table):
        out.append(
            " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            out.append("-+-".join("-" * w for w in widths))
    return "\n".join(out)


def as_json(rows: list[RowResult], context: dict[str, Any]) -> dict[str, Any]:
    def value(x: float | None) -> float | None:
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, 3)

    return {
        **context,
        "rows": [
            {
                "row": row.name,
                "lines": [
                    {
                        "path": line.path,
                        "measured": value(line.measured),
                        "baseline": value(line.baseline),
                        "unit": line.unit,
                        "ratio": value(line.ratio),
                        "target": line.target or None,
                        "met": line.met,
                    }
                    for line in row.lines
                ],
                "details": row.details,
            }
            for row in rows
        ],
    }


def _terminated(signum: int, _frame: Any) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure Tidings' hot paths against baselines measured in the same run.",
    )
    parser.add_argument("--only", choices=sorted(ROWS), action="append", help="run this row")
    parser.add_argument("--full", action="store_true", help="longer runs (30-60 s per row)")
    parser.add_argument("--json", type=Path, default=Path("var/bench/latest.json"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)

    def log(message: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    options = Options(full=args.full, log=log)
    context: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "full" if args.full else "short",
        "versions": versions(),
        "machine": machine(),
    }
    started = time.monotonic()
    results: list[RowResult] = []
    try:
        for name in args.only or list(ROWS):
            results.append(ROWS[name](options))
    except KeyboardInterrupt:
        print("interrupted: processes stopped, temp dirs removed", file=sys.stderr)
        return 130
    context["seconds"] = round(time.monotonic() - started, 1)
    context["machine"]["load_average_after"] = load_average()

    print()
    print(render(results))
    print()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in context["versions"].items()))
    m = context["machine"]
    print(
        f"machine:  {m['cores']} cores, {m['cpu']}, {m['system']}; load average "
        f"{' '.join(map(str, m['load_average']))} before, "
        f"{' '.join(map(str, m['load_average_after']))} after; {context['seconds']} s"
    )
    print("ratio: Tidings against the baseline, higher is better (1.00 = as fast)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(as_json(results, context), indent=2) + "\n")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
