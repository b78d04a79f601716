"""Real Celery workers, a relay and a host app for the celery tests (no eager mode).

:data:`APP` is written to the test's directory as ``celery_app.py``: a Flask app with
Flask-SQLAlchemy, ``SIGNALBUS_DELIVERY = "celery"`` and receivers that append one JSON
line per call to a file (appends of one short line are atomic), so that deliveries can
be counted and ordered across processes. What a receiver does is steered by the row's
email: ``retry2`` asks ``Retry(after=2)`` on its first attempt, ``fail`` always
raises, ``block`` hangs on its first run (until the test kills the process), ``broken``
fails while a flag file exists.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

APP = '''
"""A host app for the celery tests (written by tests/celery_support.py)."""
import datetime as dt, decimal, json, os, pathlib, sys, time

from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus, signalbus.outbox


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Member(db.Model):
    __tablename__ = "cel_members"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(default=0)
    balance: Mapped[decimal.Decimal] = mapped_column(Numeric(10, 2), default=decimal.Decimal("0"))
    joined: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


signalbus.bind(Member, "insert", "cel_saved")
signalbus.bind(Member, "update", "cel_saved")


class Entry(db.Model):
    """Captured by database triggers: written by anyone, delivered through Celery."""
    __tablename__ = "cel_entries"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(default=0, server_default="0")


signalbus.bind(Entry, "insert", "cel_entry", capture="trigger")

RECEIVED = os.open(os.environ["CEL_RECEIVED"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
FLAGS = pathlib.Path(os.environ["CEL_FLAGS"])


def record(name, event):
    line = [event.id, name, event.pk, event.data["version"], event.attempt, os.getpid(),
            time.time(), current_app.name, event.to_dict()]
    os.write(RECEIVED, (json.dumps(line) + "\\n").encode())


def welcome(sender, event, **kw):
    email = event.data["email"]
    if "retry2" in email and event.attempt == 1:
        record("welcome-retry", event)
        raise signalbus.Retry(after=2)
    if "fail" in email:
        record("welcome-fail", event)
        raise RuntimeError("the mail server said no to " + email)
    if "broken" in email and (FLAGS / "broken").exists():
        record("welcome-broken", event)
        raise RuntimeError("still broken")
    if "block" in email and not (FLAGS / ("blocked-" + event.id)).exists():
        (FLAGS / ("blocked-" + event.id)).write_text(str(os.getpid()))
        time.sleep(600)  # until the test kills this process
    record("welcome", event)


def audit(sender, event, **kw):
    record("audit", event)


def create_app(delivery="celery"):
    app = Flask("celery_app")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ["CEL_DB_URL"],
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {
            "options": "-csearch_path=" + os.environ["CEL_DB_SCHEMA"]}},
        SIGNALBUS_DELIVERY=delivery,
        SIGNALBUS_PLUGINS="",
        SIGNALBUS_CELERY_BROKER=os.environ["CEL_BROKER"],
    )
    for key, value in os.environ.items():
        if key.startswith(("SIGNALBUS_OUTBOX_", "SIGNALBUS_CELERY_")):
            app.config[key] = value
    db.init_app(app)
    signalbus.bus.init_app(app, db=db)
    runtime = signalbus.bus.runtime(app)
    for name in ("welcome", "audit"):
        runtime.connect("cel_saved", globals()[name], name="app:" + name)
    runtime.connect("cel_entry", audit, name="app:audit")
    return app


def celery_worker_app():
    import signalbus.celery
    return signalbus.celery.init_celery(create_app())


def main(argv):
    command, *args = argv
    if command == "setup":
        app = create_app()
        with app.app_context():
            db.drop_all()
            signalbus.outbox.drop_all(db.engine)
            db.create_all()
            signalbus.outbox.create_all(db.engine)
            from signalbus.outbox.changes import install_triggers
            install_triggers(signalbus.bus.runtime(app))
        return
    delivery = "inline" if command == "inline" else "celery"
    app = create_app(delivery)
    with app.app_context():
        if command == "register":  # emails, one commit each
            for email in args:
                db.session.add(Member(email=email))
                db.session.commit()
        elif command == "many":  # N members, commits of 10
            n, prefix = int(args[0]), args[1]
            for start in range(0, n, 10):
                db.session.add_all(Member(email=f"{prefix}{i}@example.com")
                                   for i in range(start, min(n, start + 10)))
                db.session.commit()
        elif command == "rollback":  # flushed, left open a while, rolled back; then one kept
            db.session.add(Member(email="rolled@example.com"))
            db.session.flush()
            time.sleep(float(args[0]))
            db.session.rollback()
            db.session.add(Member(email="kept@example.com"))
            db.session.commit()
        elif command == "versions":  # N rows, then V-1 updates of every row, one commit each
            n, versions = int(args[0]), int(args[1])
            db.session.add_all(Member(email=f"v{i}@example.com") for i in range(n))
            db.session.commit()
            for v in range(1, versions):
                for member in db.session.scalars(db.select(Member)):
                    member.version = v
                db.session.commit()
        elif command in ("inline", "parity"):  # the same two changes in either mode
            with signalbus.context(actor="ada", request_id="r-1"):
                db.session.add(Member(id=777, email="parity@example.com",
                                      balance=decimal.Decimal("12.50"),
                                      joined=dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)))
                db.session.commit()
                with signalbus.context(request_id="r-2"):  # a bulk statement this time
                    db.session.execute(db.update(Member).where(Member.id == 777)
                                       .values(version=5))
                db.session.commit()
    if command != "inline":
        assert "celery" not in sys.modules, "the committing process imported Celery"
'''


def write_app(directory: Path) -> None:
    """``celery_app.py`` (the host app) and ``celery_worker.py`` (what ``celery -A`` loads)."""
    (directory / "celery_app.py").write_text(APP)
    (directory / "celery_worker.py").write_text(
        "import celery_app\n\ncelery = celery_app.celery_worker_app()\n")


def run_app(env: dict[str, str], cwd: Path, *args: str) -> None:
    """Run a command of the app in a child process (imported, so that events name the
    model ``celery_app:Member``)."""
    code = "import sys, celery_app; celery_app.main(sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def start_worker(env: dict[str, str], cwd: Path, name: str, queue: str,
                 log: Path, *, pool: str = "prefork", concurrency: int = 1
                 ) -> subprocess.Popen[bytes]:
    """A real ``celery worker`` process consuming ``queue``."""
    command = [sys.executable, "-m", "celery", "-A", "celery_worker:celery", "worker",
               "-Q", queue, f"--pool={pool}", f"--concurrency={concurrency}", "-O", "fair",
               "--without-heartbeat", "--without-gossip", "--without-mingle",
               "-n", f"{name}@%h", "--loglevel=INFO"]
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def start_relay(env: dict[str, str], cwd: Path, log: Path, *args: str
                ) -> subprocess.Popen[bytes]:
    """A real ``signalbus relay`` process."""
    command = [sys.executable, "-m", "signalbus", "relay", "--app", "celery_app:create_app",
               "--poll", "0.2", *args]
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM the process group, then SIGKILL what is left."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout)


def received(path: Path) -> list[list[Any]]:
    """Every receiver call recorded so far: ``[event_id, receiver, pk, version, attempt,
    pid, time, app name, event dict]``."""
    if not path.exists():
        return []
    text = path.read_text()
    # a worker may be writing the last line right now: it is read on the next call
    complete = text[:text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def wait_for(check: Callable[[], Any], timeout: float, what: str, logs: list[Path]) -> Any:
    """Poll ``check`` until it returns something true; fail with the logs' tails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")
