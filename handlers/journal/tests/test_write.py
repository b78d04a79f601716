"""Delivered events are appended as JSON lines to the file of their UTC day."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import signalbus_journal
from signalbus_journal import Journal, encode, read_lines
from sqlalchemy.orm import sessionmaker

import signalbus
from signalbus import Event


def test_every_delivered_event_is_one_line(host, signalbus_capture):
    uid = host.register("ann@example.com")
    host.change_plan(uid, "pro")
    host.delete(uid)
    assert signalbus_capture.names == ["user_registered", "user_plan_changed", "user_deleted"]
    days = {e.occurred_at.astimezone(dt.UTC).date().isoformat() for e in signalbus_capture}
    assert host.files() == [f"{day}.jsonl" for day in sorted(days)]
    assert host.lines() == [encode(e) for e in signalbus_capture.events]
    records = [json.loads(line) for line in host.lines()]
    assert [r["signal"] for r in records] == signalbus_capture.names
    assert records[0]["data"] == {"id": uid, "email": "ann@example.com", "name": "Ann",
                                  "plan": "free"}
    assert records[1]["changes"] == {"plan": ["free", "pro"]}


def test_a_line_reads_back_as_the_same_event(host, signalbus_capture):
    host.register("ann@example.com")
    (line,) = read_lines(host.directory / name for name in host.files())
    assert line.event == signalbus_capture.events[0]


def test_emitted_events_are_journaled(host, signalbus_capture):
    with host.app.app_context():
        signalbus.emit("user_registered", {"id": 7, "email": "x@example.com"},
                       session=host.db.session())
        host.db.session.commit()
    (record,) = [json.loads(line) for line in host.lines()]
    assert (record["signal"], record["source"], record["data"]) == (
        "user_registered", "emit", {"id": 7, "email": "x@example.com"})


def test_the_file_is_named_after_the_utc_date(tmp_path, event_factory):
    journal = Journal(tmp_path / "j")
    late_evening_in_new_york = event_factory(at="2020-02-29T23:30:00-05:00")
    path = journal.append(late_evening_in_new_york)
    assert path == tmp_path / "j" / "2020-03-01.jsonl"
    assert path.read_bytes() == encode(late_evening_in_new_york)


def test_lines_are_compact_utf8_json(tmp_path, event_factory):
    event = event_factory(name="Zoë\nline two")
    path = Journal(tmp_path).append(event)
    raw = path.read_bytes()
    assert raw.count(b"\n") == 1 and raw.endswith(b"\n")  # newlines in values are escaped
    assert "Zoë".encode() in raw and b", " not in raw
    assert Event.from_dict(json.loads(raw)) == event


def test_the_default_directory_is_in_the_instance_folder(make_host, tmp_path):
    host = make_host(SIGNALBUS_JOURNAL_DIR=None)
    assert host.directory == tmp_path / "instance" / "signalbus-journal"
    host.register("ann@example.com")
    assert len(host.lines()) == 1


def test_settings_defaults(host):
    assert host.app.config["SIGNALBUS_JOURNAL_SIGNALS"] is None
    assert host.app.config["SIGNALBUS_JOURNAL_EXCLUDE"] == ()
    assert host.app.config["SIGNALBUS_JOURNAL_FSYNC"] is False
    journal = host.app.extensions["signalbus_journal"]
    assert (journal.directory, journal.fsync) == (host.directory, False)


def test_fsync_setting(make_host):
    host = make_host(SIGNALBUS_JOURNAL_FSYNC=True)
    host.register("ann@example.com")
    assert host.app.extensions["signalbus_journal"].fsync is True
    assert len(host.lines()) == 1


def test_outside_flask_the_directory_is_required():
    with pytest.raises(signalbus.PluginError) as info:
        signalbus.SignalBus().attach(sessionmaker(), config={
            "SIGNALBUS_PLUGINS": ["journal"], "SIGNALBUS_PLUGINS_STRICT": True})
    assert "signalbus-journal needs SIGNALBUS_JOURNAL_DIR, the directory to write the " \
           "journal files to" in str(info.value)


def test_flask_signalbus_list_shows_the_journal(host):
    from signalbus.cli import cli

    result = host.app.test_cli_runner().invoke(cli, ["list"])
    assert result.exit_code == 0, result.output
    assert "journal [signalbus-journal]  loaded" in result.output
    assert f"journal: {host.directory} (every signal)" in result.output
    assert "  * (every signal)\n    receiver   signalbus_journal:append  (plugin journal)" \
        in result.output
    assert "receiver   signalbus_journal:append  (plugin journal)" in result.output


def test_journal_dir_accepts_a_path(tmp_path):
    assert signalbus_journal.journal_dir({"SIGNALBUS_JOURNAL_DIR": tmp_path}) == str(tmp_path)
