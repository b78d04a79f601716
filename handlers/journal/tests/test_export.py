"""flask signalbus journal export: print or dump the lines that match."""

from __future__ import annotations

import pytest
from signalbus_journal import Journal, encode
from signalbus_journal.cli import journal as journal_cli

from signalbus.cli import cli


@pytest.fixture
def events(host, event_factory):
    """Four events over three UTC days, journaled in the host's directory."""
    journal = Journal(host.directory)
    made = [
        event_factory("user_registered", at="2024-04-30T23:59:59", id=1),
        event_factory("user_registered", at="2024-05-01T08:00:00", id=2),
        event_factory("user_deleted", at="2024-05-01T09:30:00+02:00", id=1),  # 07:30 UTC
        event_factory("user_plan_changed", at="2024-05-02T00:00:00", id=2),
    ]
    for event in made:
        journal.append(event)
    return made


def test_the_command_is_registered_under_flask_signalbus():
    assert cli.commands["journal"] is journal_cli
    assert set(journal_cli.commands) == {"export"}


def test_export_prints_every_line_in_order(host, events):
    result = host.export()
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"".join(encode(e) for e in events)  # files by day
    assert result.stderr == ""


def test_since_and_until(host, events):
    result = host.export("--since", "2024-05-01", "--until", "2024-05-01T08:00:00")
    assert result.exit_code == 0, result.output
    # 07:30 UTC (written as 09:30+02:00) is in; 08:00 is the exclusive end
    assert result.stdout_bytes == encode(events[2])
    result = host.export("--since", "2024-05-01T08:00:00+00:00")
    assert result.stdout_bytes == encode(events[1]) + encode(events[3])


def test_signal_filter(host, events):
    result = host.export("--signal", "user_registered", "--signal", "user_plan_changed")
    assert result.stdout_bytes == encode(events[0]) + encode(events[1]) + encode(events[3])


def test_output_file(host, events, tmp_path):
    target = tmp_path / "dump.jsonl"
    target.write_text("old content\n")
    result = host.export("--signal", "user_deleted", "--output", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b""
    assert target.read_bytes() == encode(events[2])
    assert result.stderr == f"exported 1 event(s) from 3 file(s) to {target}\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".dump")) == []


def test_unique_keeps_one_line_per_event(host, events):
    Journal(host.directory).append(events[1])  # a redelivery is journaled again
    assert host.export("--signal", "user_registered").stdout_bytes.count(b"\n") == 3
    result = host.export("--signal", "user_registered", "--unique")
    assert result.stdout_bytes == encode(events[0]) + encode(events[1])


def test_a_bad_date_is_refused(host):
    result = host.export("--since", "yesterday")
    assert result.exit_code == 2
    assert ("Invalid value for --since: 'yesterday' is not a date (2024-05-01) or an ISO "
            "8601 date-time (2024-05-01T12:00:00+00:00).") in result.stderr


def test_no_files(host):
    result = host.export("--since", "2030-01-01")
    assert result.exit_code == 0
    assert result.stdout_bytes == b""
    assert result.stderr == f"no journal files in {host.directory} for that period\n"


def test_malformed_lines_are_skipped_and_reported(host, events):
    path = host.directory / "2024-05-01.jsonl"
    with open(path, "ab") as fh:
        fh.write(b'{"id": "torn by a cra')  # what a writer killed mid-line leaves
    result = host.export("--since", "2024-05-01", "--until", "2024-05-02")
    assert result.exit_code == 0
    assert result.stdout_bytes == encode(events[1]) + encode(events[2])
    assert result.stderr == f"skipped an incomplete or malformed line: {path}:3\n"


def test_export_of_events_journaled_by_the_app(host, signalbus_capture):
    uid = host.register("ann@example.com")
    host.delete(uid)
    result = host.export("--signal", "user_deleted")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == encode(signalbus_capture.of("user_deleted")[0])
