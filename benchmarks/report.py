"""The Markdown table, the environment it was measured in, and ``results.md``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["Row", "environment", "render", "table"]


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: a configuration's figure against what it is compared to.

    ``median``/``low``/``high`` are ratios (``unit="×"``) or absolute figures
    (``unit`` names them, e.g. ``"rows/s"``, ``"events/s"``, ``"ms"``). A row without
    figures says, in ``note``, why nothing was measured — never a made-up number.
    """

    section: str
    configuration: str
    against: str = ""
    median: float | None = None
    low: float | None = None
    high: float | None = None
    unit: str = "×"
    target: str = ""
    verdict: str = ""
    """``"met"``, ``"missed"`` or empty when there is no target."""
    note: str = ""


def _figure(value: float, unit: str) -> str:
    if unit == "×":
        return f"{value:.3f}×"
    if unit == "MB":
        return f"{value:.1f} MB"
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.2f} {unit}"


def table(rows: Iterable[Row]) -> str:
    """The rows as one Markdown table."""
    lines = [
        "| database | configuration | against | median | min–max | target | met? | notes |",
        "|---|---|---|---:|---:|---|---|---|",
    ]
    for r in rows:
        if r.median is None:
            median = spread = "—"
        else:
            median = _figure(r.median, r.unit)
            if r.low is None or r.high is None:
                spread = "—"  # a single measurement: no spread to show
            else:
                spread = f"{_figure(r.low, r.unit)} – {_figure(r.high, r.unit)}"
        cells = (r.section, r.configuration, r.against, median, spread, r.target,
                 r.verdict, r.note)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "signalbus"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (signalbus/ modified)" if dirty else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    """The 1/5/15-minute load averages, or ``"n/a"``."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def environment(extra: dict[str, str]) -> dict[str, str]:
    """Date, machine and versions, plus ``extra`` (database versions, run settings)."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return {
        "date": now.isoformat().replace("+00:00", "Z"),
        "machine": f"{os.cpu_count()} CPUs (nproc), {_cpu_model()}, "
                   f"{platform.system()} {platform.release()}",
        "Python": sys.version.split()[0],
        "sqlalchemy-signalbus": f"{_version('sqlalchemy-signalbus')}, commit {_git_commit()}",
        "SQLAlchemy": _version("SQLAlchemy"),
        "blinker": _version("blinker"),
        "psycopg": _version("psycopg"),
        **extra,
    }


def render(rows: Sequence[Row], env: dict[str, str], command: str,
           notes: Sequence[str]) -> str:
    """The whole ``results.md``: how it was made, the table, and the notes."""
    out = [
        "# Benchmark results",
        "",
        f"Made by `{command}`. Ratios are against the floor measured in the same run, "
        "interleaved batch by batch; median and min–max over the repeats. Nothing here is "
        "enforced: the targets are those of the benchmark issue.",
        "",
        table(rows),
        "",
        "## Environment",
        "",
    ]
    out += [f"- {key}: {value}" for key, value in env.items()]
    if notes:
        out += ["", "## Notes", ""]
        out += [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"
