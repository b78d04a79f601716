"""``flask signalbus journal …``, added through the ``signalbus.commands`` entry point.

Imported when the ``flask`` command starts, so it imports only click and Flask at module
level.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click
from flask.cli import AppGroup

if TYPE_CHECKING:
    from .journal import Line

__all__ = ["journal"]

journal = AppGroup("journal", help="Read the signalbus journal (JSON Lines, one file per day).")


def _moment(value: str, *, param: str) -> dt.datetime:
    """``2024-05-01`` (midnight UTC) or an ISO 8601 date-time (naive means UTC)."""
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date (2024-05-01) or an ISO 8601 date-time "
            "(2024-05-01T12:00:00+00:00).", param_hint=param,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _select(lines: Iterable[Line], signals: set[str], start: dt.datetime | None,
            end: dt.datetime | None, unique: bool) -> Iterator[bytes]:
    seen: set[str] = set()
    for line in lines:
        if signals and line.record.get("signal") not in signals:
            continue
        at = line.occurred_at
        if (start is not None and at < start) or (end is not None and at >= end):
            continue
        if unique:
            event_id = str(line.record.get("id"))
            if event_id in seen:
                continue
            seen.add(event_id)
        yield line.raw


@journal.command("export")
@click.option("--since", help="Only events that occurred at or after this date or "
              "date-time (ISO 8601; a date means midnight UTC, a naive time means UTC).")
@click.option("--until", help="Only events that occurred before this date or date-time.")
@click.option("--signal", "signal_names", multiple=True,
              help="Only this signal (repeat the option for several).")
@click.option("--unique", is_flag=True,
              help="Keep the first line of each event id (a redelivered event is journaled "
              "once per delivery).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True),
              help="Write the lines to this file (replaced atomically) instead of stdout.")
def export_command(since: str | None, until: str | None, signal_names: tuple[str, ...],
                   unique: bool, output: str | None) -> None:
    """Print (or dump to a file) the journal lines that match, oldest file first."""
    from flask import current_app

    from .journal import day_files, read_lines
    from .plugin import journal_dir

    start = _moment(since, param="--since") if since else None
    end = _moment(until, param="--until") if until else None
    directory = Path(journal_dir(current_app.config, current_app))
    files = day_files(directory, start.astimezone(dt.UTC).date() if start else None,
                      end.astimezone(dt.UTC).date() if end else None)
    wanted = set(signal_names)
    bad: list[tuple[Path, int]] = []

    lines = _select(read_lines(files, bad), wanted, start, end, unique)

    count = 0
    if output is None:
        out: BinaryIO = sys.stdout.buffer
        for raw in lines:
            out.write(raw)
            count += 1
        out.flush()
    else:
        target = Path(output)
        fd, tmp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as fh:
                for raw in lines:
                    fh.write(raw)
                    count += 1
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
        click.echo(f"exported {count} event(s) from {len(files)} file(s) to {target}",
                   err=True)
    for path, number in bad:
        click.echo(f"skipped an incomplete or malformed line: {path}:{number}", err=True)
    if not files:
        click.echo(f"no journal files in {directory} for that period", err=True)

