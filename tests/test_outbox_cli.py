"""The operator's commands: ``flask signalbus worker|status|retry|replay|purge``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus
import signalbus.outbox
import signalbus.sqlite
from signalbus import Event, SignalBus
from signalbus.cli import cli
from signalbus.outbox import deliveries, outbox


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Member(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "ob_cli_members"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(100))


CALLS: list[tuple[str, Event]] = []
FAIL: set[str] = set()
"""Emails the ``picky`` receiver refuses."""


def welcome(sender: Any, event: Event, **kw: Any) -> None:
    CALLS.append(("welcome", event))


def picky(sender: Any, event: Event, **kw: Any) -> None:
    if event.data["email"] in FAIL:
        raise RuntimeError(f"no thanks, {event.data['email']}")
    CALLS.append(("picky", event))


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    from conftest import flask_sqlalchemy_config  # the root conftest (rootdir on sys.path)

    app = Flask(__name__)
    app.config.update(
        SIGNALBUS_PLUGINS=[],
        SIGNALBUS_DELIVERY="outbox",
        SIGNALBUS_OUTBOX_MAX_ATTEMPTS=2,
        SIGNALBUS_OUTBOX_BACKOFF_BASE=0,
    )
    app.config.update(flask_sqlalchemy_config(database_url))
    db.init_app(app)
    with app.app_context():
        signalbus.sqlite.configure(db.engine)
        db.create_all()
        signalbus.outbox.create_all(db.engine)
    signalbus.bind(Member, "insert", "ob_cli_joined")
    SignalBus().init_app(app, db=db)
    runtime = app.extensions["signalbus"].runtime(app)
    runtime.connect("ob_cli_joined", welcome)
    runtime.connect("ob_cli_joined", picky)
    CALLS.clear()
    FAIL.clear()
    yield app
    with app.app_context():
        signalbus.outbox.drop_all(db.engine)
        db.drop_all()
        for engine in db.engines.values():
            engine.dispose()


def join(app: Flask, *emails: str) -> None:
    with app.app_context():
        for email in emails:
            db.session.add(Member(email=email))
        db.session.commit()


def run(app: Flask, *args: str) -> Any:
    result = app.test_cli_runner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def run_json(app: Flask, *args: str) -> Any:
    return json.loads(run(app, *args, "--json").stdout)


def test_worker_once_delivers_in_an_app_context(app):
    join(app, "a@example.com", "b@example.com")
    stats = run_json(app, "worker", "--once")
    assert stats["delivered"] == 4
    assert [(name, e.data["email"]) for name, e in CALLS] == [
        ("welcome", "a@example.com"), ("picky", "a@example.com"),
        ("welcome", "b@example.com"), ("picky", "b@example.com"),
    ]
    human = run(app, "worker", "--once").stdout
    assert "delivered 0, retrying 0, dead 0, released 0" in human


def test_worker_refuses_inline_mode(app):
    inline = Flask("inline_app")
    inline.config.update(SIGNALBUS_PLUGINS=[])
    SignalBus().init_app(inline)
    result = inline.test_cli_runner().invoke(cli, ["worker", "--once"])
    assert result.exit_code == 1
    assert ("SIGNALBUS_DELIVERY is 'inline'; the worker delivers the outbox. Set "
            "SIGNALBUS_DELIVERY = 'outbox'.") in result.output


@pytest.mark.signalbus_receiver_errors("log")
def test_status_counts_states_signals_and_the_dead(app):
    FAIL.add("b@example.com")
    join(app, "a@example.com", "b@example.com", "c@example.com")
    before = run_json(app, "status")
    assert before["events"] == {"pending": 3, "done": 0, "dead": 0}
    assert before["deliveries"] == {"pending": 0, "delivered": 0, "dead": 0}
    assert before["due"] == 3 and before["claimed"] == 0
    assert before["oldest_pending_age_seconds"] >= 0
    assert before["schema_version"] == signalbus.outbox.SCHEMA_VERSION
    run(app, "worker", "--once")
    after = run_json(app, "status")
    assert after["events"] == {"pending": 0, "done": 3, "dead": 0}
    assert after["deliveries"] == {"pending": 0, "delivered": 0, "dead": 1}
    assert after["signals"] == {
        "ob_cli_joined": {"pending": 0, "done": 3, "retrying": 0, "dead": 1}}
    assert after["oldest_pending_age_seconds"] is None
    (dead,) = after["dead"]
    assert (dead["receiver"], dead["attempts"], dead["last_error"]) == (
        f"{__name__}:picky", 2, "RuntimeError: no thanks, b@example.com")
    human = run(app, "status").stdout
    assert "3 events stored" in human
    assert "events      pending 0  done 3  dead 0" in human
    assert "deliveries  pending 0  delivered 0  dead 1" in human
    assert "ob_cli_joined" in human
    assert "RuntimeError: no thanks, b@example.com" in human


def test_status_marks_estimates_and_exact_counts(app, monkeypatch):
    join(app, "a@example.com", "b@example.com", "c@example.com")
    run(app, "worker", "--once")
    assert run_json(app, "status")["estimated"] == []
    monkeypatch.setattr(signalbus.outbox.sql, "ESTIMATE_ABOVE", -1)  # every table "large"
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE signalbus_outbox")
                conn.commit()
    found = run_json(app, "status")
    exact = run_json(app, "status", "--exact")
    assert exact["estimated"] == [] and exact["events"]["done"] == 3
    assert exact["signals"]["ob_cli_joined"]["done"] == 3
    human = run(app, "status").stdout
    if found["database"] == "sqlite":  # no row count statistics: always counted
        assert found["estimated"] == [] and "~" not in human
        return
    assert found["estimated"] == ["events.done", "signals.done"]
    assert found["events"]["done"] == 3  # ANALYZE counted this small table exactly
    assert "done ~3" in human and "--exact counts them" in human
    assert "~" not in run(app, "status", "--exact").stdout


@pytest.mark.signalbus_receiver_errors("log")
def test_retry_brings_a_dead_delivery_back_and_it_succeeds(app):
    FAIL.add("b@example.com")
    join(app, "a@example.com", "b@example.com")
    run(app, "worker", "--once")
    dead = run_json(app, "status")["dead"][0]
    FAIL.clear()  # the cause is fixed
    CALLS.clear()
    assert run_json(app, "retry", "--event", dead["event_id"]) == {
        "retried": 1, "events": 0, "due_now": 0}
    with app.app_context():
        row = db.session.execute(select(deliveries).where(
            deliveries.c.event_id == dead["event_id"],
            deliveries.c.receiver == dead["receiver"])).one()
    assert (row.state, row.attempts) == ("pending", 0)
    run(app, "worker", "--once")
    assert [(name, e.data["email"], e.attempt) for name, e in CALLS] == [
        ("picky", "b@example.com", 1)]  # only the dead one: welcome is not repeated
    assert run_json(app, "status")["deliveries"] == {"pending": 0, "delivered": 1, "dead": 0}


def test_retry_needs_a_selection(app):
    result = app.test_cli_runner().invoke(cli, ["retry"])
    assert result.exit_code == 2
    assert ("say which dead deliveries to retry: --all, --event ID, --signal NAME or "
            "--receiver NAME.") in result.output


@pytest.mark.signalbus_receiver_errors("log")
def test_retry_by_signal_and_failed_ones_waiting(app):
    FAIL.add("a@example.com")
    join(app, "a@example.com")
    run(app, "worker", "--once")  # attempt 1 fails, attempt 2 fails: dead
    assert run_json(app, "retry", "--signal", "other_signal") == {
        "retried": 0, "events": 0, "due_now": 0}
    assert run_json(app, "retry", "--signal", "ob_cli_joined") == {
        "retried": 1, "events": 0, "due_now": 0}
    with app.app_context():  # make it wait for a later attempt
        db.session.execute(update(deliveries).values(
            next_attempt_at=signalbus.outbox.utcnow() + dt.timedelta(hours=1)))
        db.session.commit()
    assert run(app, "retry", "--all", "--failed").stdout == (
        "0 dead deliveries and 0 dead events are pending again; 1 waiting deliveries are "
        "due now.\n")
    assert run_json(app, "status")["due"] == 1
    assert run(app, "retry", "--all").stdout == (
        "0 dead deliveries and 0 dead events are pending again.\n")


def test_replay_delivers_stored_events_again_with_progress(app):
    join(app, "a@example.com", "b@example.com")
    run(app, "worker", "--once")
    first_ids = [e.id for _, e in CALLS]
    CALLS.clear()
    result = run(app, "replay", "--signal", "ob_cli_joined", "--since", "1h", "--json")
    assert json.loads(result.stdout) == {
        "events": 2, "inserted": 4, "reset": 0, "already_pending": 0, "unreadable": 0}
    assert "replaying events" in result.stderr  # the progress bar
    run(app, "worker", "--once")
    assert [e.id for _, e in CALLS] == first_ids  # the same events, same ids
    assert {e.attempt for _, e in CALLS} == {1}


def test_replay_to_one_receiver_and_by_time_range(app):
    join(app, "a@example.com")
    run(app, "worker", "--once")
    CALLS.clear()
    future = (signalbus.outbox.utcnow() + dt.timedelta(hours=1)).isoformat()
    assert run_json(app, "replay", "--since", future)["events"] == 0
    counts = run_json(app, "replay", "--all", "--receiver", f"{__name__}:welcome")
    assert counts == {"events": 1, "inserted": 1, "reset": 0, "already_pending": 0,
                      "unreadable": 0}
    run(app, "worker", "--once")
    assert [name for name, _ in CALLS] == ["welcome"]
    counts = run_json(app, "replay", "--all", "--receiver", f"{__name__}:welcome")
    assert (counts["inserted"], counts["reset"]) == (0, 1)  # its row is queued again
    human = run(app, "replay", "--until", "2000-01-01").stdout
    assert human == ("replayed 0 events: 0 deliveries queued (0 new, 0 again), 0 were "
                     "still pending.\n")


def test_replay_reaches_a_receiver_connected_after_the_commit(app):
    join(app, "a@example.com")
    run(app, "worker", "--once")
    CALLS.clear()
    app.extensions["signalbus"].runtime(app).connect(
        "ob_cli_joined", welcome, name="tests:late-welcome")
    counts = run_json(app, "replay", "--all")
    assert counts == {"events": 1, "inserted": 3, "reset": 0, "already_pending": 0,
                      "unreadable": 0}
    run(app, "worker", "--once")
    assert sorted(name for name, _ in CALLS) == ["picky", "welcome", "welcome"]


def test_replay_needs_a_selection(app):
    result = app.test_cli_runner().invoke(cli, ["replay"])
    assert result.exit_code == 2
    assert "say which events to replay: --signal NAME, --since/--until WHEN, --event ID, " \
        "or --all." in result.output


@pytest.mark.signalbus_receiver_errors("log")
def test_purge_deletes_old_delivered_rows_only(app):
    FAIL.add("b@example.com")
    join(app, "a@example.com", "b@example.com")
    run(app, "worker", "--once")
    run(app, "replay", "--event", run_json(app, "status")["dead"][0]["event_id"],
        "--receiver", f"{__name__}:welcome")
    run(app, "worker", "--once")  # b@'s welcome: a delivered delivery row
    join(app, "c@example.com")  # pending
    recent = run_json(app, "purge", "--older-than", "7d")
    assert (recent["deliveries"], recent["events"], recent["dry_run"]) == (0, 0, False)
    assert dt.datetime.fromisoformat(recent["before"]) < signalbus.outbox.utcnow()
    with app.app_context():  # make everything old
        old = signalbus.outbox.utcnow() - dt.timedelta(days=30)
        db.session.execute(update(deliveries).values(updated_at=old))
        db.session.execute(update(outbox).values(settled_at=old))
        db.session.commit()
    dry = run_json(app, "purge", "--older-than", "7d", "--dry-run")
    assert (dry["deliveries"], dry["events"], dry["dry_run"]) == (1, 1, True)
    done = run_json(app, "purge", "--older-than", "7d")
    assert (done["deliveries"], done["events"]) == (1, 1)  # a@'s event had nothing left
    left = run_json(app, "status")
    assert left["events"] == {"pending": 1, "done": 1, "dead": 0}  # c@, and b@ (dead picky)
    assert left["deliveries"] == {"pending": 0, "delivered": 0, "dead": 1}
    assert run(app, "purge", "--older-than", "7d").stdout.startswith(
        "deleted 0 delivered deliveries and 0 events settled before ")


def test_purge_rejects_a_bad_age(app):
    result = app.test_cli_runner().invoke(cli, ["purge", "--older-than", "soon"])
    assert result.exit_code == 2
    assert "'soon' is not a duration; write a number of seconds or e.g. 90s, 15m, 12h, 7d." \
        in result.output


@pytest.mark.parametrize("args", [
    ["purge", "--older-than", "9999999d"],
    ["replay", "--since", "99999999999d"],
    ["purge", "--older-than", "1e400"],
])
def test_absurd_durations_are_refused_clearly(app, args):
    result = app.test_cli_runner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "is longer than 36500 days (100 years); give a shorter duration, e.g. 3650d." \
        in result.output or "is not a duration" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [["status"], ["retry", "--all"], ["replay", "--all"],
                                     ["purge", "--older-than", "7d"], ["worker", "--once"]])
def test_commands_on_a_database_without_the_tables_say_how_to_create_them(app, command):
    with app.app_context():
        signalbus.outbox.drop_all(db.engine)
    result = app.test_cli_runner().invoke(cli, command)
    assert result.exit_code == 1, result.output
    assert "the signalbus outbox tables do not exist in this database. Create them with " \
        "signalbus.outbox.create_all(engine)" in result.output
    assert "Traceback" not in result.output


def test_commands_on_another_schema_version_name_the_upgrade_step(app):
    with app.app_context():
        db.session.execute(update(signalbus.outbox.schema_version).values(version=1))
        db.session.commit()
    for command in (["status"], ["worker", "--once"]):
        result = app.test_cli_runner().invoke(cli, command)
        assert result.exit_code == 1, result.output
        assert ("the signalbus outbox in this database has schema version 1; this signalbus "
                f"needs version {signalbus.outbox.SCHEMA_VERSION}. Upgrade step: ") \
            in result.output
    with app.app_context():
        db.session.execute(update(signalbus.outbox.schema_version).values(version=99))
        db.session.commit()
    result = app.test_cli_runner().invoke(cli, ["status"])
    assert "upgrade signalbus in this process" in result.output


@pytest.mark.signalbus_receiver_errors("log")
def test_cli_output_is_redacted(app):
    FAIL.add("b@example.com")
    join(app, "b@example.com")
    run(app, "worker", "--once")
    with app.app_context():  # an error stored before redaction existed, or by hand
        db.session.execute(update(deliveries).values(
            last_error="HTTPError: POST https://hooks.example.com/services/T0/B0/s3cr3t "
                       "?token=abc123 postgresql://bob:hunter2@db/app Bearer abcdefghijkl"))
        db.session.commit()
    for out in (run(app, "status").stdout, run(app, "status", "--json").stdout):
        assert "hooks.example.com" in out
        for secret in ("s3cr3t", "abc123", "hunter2", "abcdefghijkl", "services/T0"):
            assert secret not in out, out


def test_commands_on_the_first_layout_name_the_upgrade_step(app):
    with app.app_context():
        signalbus.outbox.drop_all(db.engine)
        with db.engine.begin() as conn:  # the unreleased layout of schema version 1
            conn.exec_driver_sql("CREATE TABLE signalbus_events (id VARCHAR(36) PRIMARY KEY)")
            conn.exec_driver_sql("CREATE TABLE signalbus_deliveries (id INTEGER PRIMARY KEY)")
    try:
        result = app.test_cli_runner().invoke(cli, ["status"])
        assert result.exit_code == 1, result.output
        assert ("this database has the outbox tables of an unreleased signalbus "
                "(signalbus_events, signalbus_deliveries; schema version 1) and this signalbus "
                f"needs schema version {signalbus.outbox.SCHEMA_VERSION}. Upgrade step: deliver "
                "what is pending with the old worker, drop those tables, then run "
                "signalbus.outbox.create_all(engine).") in " ".join(result.output.split())
    finally:
        with app.app_context(), db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE signalbus_deliveries")
            conn.exec_driver_sql("DROP TABLE signalbus_events")
            signalbus.outbox.create_all(conn)


def test_tables_created_without_their_version_row_say_how_to_record_it(app):
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(signalbus.outbox.schema_version.delete())
    result = app.test_cli_runner().invoke(cli, ["status"])
    assert result.exit_code == 1, result.output
    assert "has schema version none recorded" in result.output
    assert "record it with signalbus.outbox.stamp(connection)" in result.output
    with app.app_context(), db.engine.begin() as conn:
        signalbus.outbox.stamp(conn)
    assert run_json(app, "status")["schema_version"] == signalbus.outbox.SCHEMA_VERSION
