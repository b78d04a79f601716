"""No bad row, receiver or clock stops delivery: corrupt rows go dead with the reason and
the events behind them are delivered; absurd ``Retry(after=)`` values are clamped;
secrets never reach a log line or a stored error; a worker started while the database
is down waits for it; a worker whose connections are killed carries on, releasing its
own claims as soon as it is back."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import String, create_engine, func, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus
import signalbus.outbox
from signalbus import Event, Permanent, Retry
from signalbus.bus import Runtime
from signalbus.outbox import DEAD, DONE, PENDING, deliveries, outbox, utcnow
from signalbus.outbox.worker import Worker, drain


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "ob_robust_accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(default=0)


GOT: list[tuple[str, int, int]] = []
"""(receiver, account id, version) of every successful call."""
PLAN: dict[str, Callable[[Event], None]] = {}


def first(sender: Any, event: Event, **kw: Any) -> None:
    action = PLAN.get("first")
    if action is not None:
        action(event)
    GOT.append(("first", event.pk, event.data["version"]))


def second(sender: Any, event: Event, **kw: Any) -> None:
    GOT.append(("second", event.pk, event.data["version"]))


@pytest.fixture
def runtime(engine: Engine) -> Iterator[Runtime]:
    Base.metadata.create_all(engine)
    signalbus.outbox.create_all(engine)
    GOT.clear()
    PLAN.clear()
    signalbus.bind(Account, "insert", "ob_robust_saved")
    signalbus.bind(Account, "update", "ob_robust_saved")
    rt = signalbus.SignalBus().attach(sessionmaker(engine), plugins=False, config={
        "SIGNALBUS_DELIVERY": "outbox", "SIGNALBUS_OUTBOX_BACKOFF_CAP": 300})
    rt.connect("ob_robust_saved", first)
    rt.connect("ob_robust_saved", second)
    yield rt
    signalbus.outbox.drop_all(engine)
    Base.metadata.drop_all(engine)


def save(runtime: Runtime, *accounts: tuple[int, int]) -> None:
    """Commit each (id, version): an insert for version 0, else an update."""
    for pk, version in accounts:
        with runtime.session_factory() as s:
            if version == 0:
                s.add(Account(id=pk, email=f"a{pk}@example.com"))
            else:
                s.get(Account, pk).version = version
            s.commit()


def outbox_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(outbox).order_by(outbox.c.id)).all()


CORRUPT = {
    "empty object": ({}, "its payload lacks 'id', 'signal', 'op', 'data', 'occurred_at'"),
    "json string": ("just a string", "its payload is a JSON str, not an object"),
    "bad time": (None, "its payload is not an event (ValueError: Invalid isoformat string: "
                       "'yesterday')"),
    "bad model": (None, "'model' is 42, not a 'module:Class' string"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPT))
def test_a_corrupt_row_goes_dead_with_the_reason_and_the_events_behind_it_are_delivered(
        runtime, engine, kind, caplog):
    save(runtime, (1, 0), (1, 1), (2, 0), (1, 2))  # row 1: three events; row 2: one
    bad_id = outbox_rows(engine)[0].id  # row 1's first event heads its chain
    payload, reason = CORRUPT[kind]
    with engine.begin() as conn:
        if payload is None:  # a hand edit of one field
            row = conn.execute(select(outbox.c.payload).where(outbox.c.id == bad_id)).scalar()
            row = dict(row)
            if kind == "bad time":
                row["occurred_at"] = "yesterday"
            else:
                row["model"] = 42
            payload = row
        conn.execute(update(outbox).where(outbox.c.id == bad_id).values(payload=payload))
    with caplog.at_level(logging.ERROR, logger="signalbus"):
        stats = drain(runtime, engine=engine)
    assert stats.dead == 1
    # every healthy event is delivered, row 1's in order, behind the bad one
    firsts = [(pk, v) for name, pk, v in GOT if name == "first"]
    assert sorted(firsts) == [(1, 1), (1, 2), (2, 0)]
    assert firsts.index((1, 1)) < firsts.index((1, 2))
    rows = outbox_rows(engine)
    assert [r.state for r in rows] == [DEAD, DONE, DONE, DONE]
    assert rows[0].last_error == f"outbox row {bad_id} cannot be delivered: {reason}"
    assert any(reason in r.getMessage() and "going on" in r.getMessage()
               for r in caplog.records)
    assert drain(runtime, engine=engine).dead == 0  # dead stays dead, nothing repeated


@pytest.mark.parametrize("after", [math.inf, 1e12, math.nan, 10**400])
def test_retry_after_an_absurd_delay_is_clamped_to_the_backoff_cap(runtime, engine, after):
    def later(event: Event) -> None:
        raise Retry(after=after)

    PLAN["first"] = later
    save(runtime, (1, 0), (2, 0))
    before = utcnow()
    stats = drain(runtime, engine=engine)
    assert (stats.retried, stats.dead) == (2, 0)  # the worker went on
    with engine.connect() as conn:
        waits = [signalbus.outbox.aware(t) - before for t in conn.execute(
            select(deliveries.c.next_attempt_at)).scalars()]
    cap = dt.timedelta(seconds=300)
    expected = cap
    assert len(waits) == 2
    for wait in waits:
        assert expected - dt.timedelta(seconds=1) <= wait <= expected + dt.timedelta(seconds=5)


SECRETS = ("s3cr3t-path", "tok3n-value", "hunter2", "b3arer-credential")
MESSAGE = ("POST https://hooks.example.com/services/s3cr3t-path?token=tok3n-value failed; "
           "db postgresql://bob:hunter2@db.internal/app; Authorization: Bearer "
           "b3arer-credential")


@pytest.mark.parametrize("raised", ["error", "retry", "permanent"])
@pytest.mark.signalbus_receiver_errors("log")
def test_no_secret_reaches_a_log_line_or_a_stored_error(runtime, engine, raised, caplog):
    def leak(event: Event) -> None:
        if raised == "retry":
            raise Retry(MESSAGE)
        if raised == "permanent":
            raise Permanent(MESSAGE)
        raise RuntimeError(MESSAGE)

    PLAN["first"] = leak
    save(runtime, (1, 0))
    handler = logging.StreamHandler(stream := __import__("io").StringIO())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.getLogger("signalbus").addHandler(handler)
    try:
        with caplog.at_level(logging.DEBUG, logger="signalbus"):
            drain(runtime, engine=engine, max_attempts=1 if raised == "error" else 5)
    finally:
        logging.getLogger("signalbus").removeHandler(handler)
    written = stream.getvalue()  # formatted as a handler prints it: tracebacks included
    assert "hooks.example.com" in written
    if raised == "error":
        assert "Traceback" in written
    with engine.connect() as conn:
        (stored,) = conn.execute(select(deliveries.c.last_error)).scalars()
    assert "hooks.example.com" in stored
    for secret in SECRETS:
        assert secret not in written, written
        assert secret not in stored, stored
        assert all(secret not in r.getMessage() for r in caplog.records)


# the database goes away ---------------------------------------------------------------------


class Proxy:
    """A TCP forwarder to PostgreSQL on a port of its own, which can be started late
    (a database that is down, then up) and cut (connections lost)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.server: socket.socket | None = None
        self.links: list[socket.socket] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(32)
        self.server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.links += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        with self.lock:
            for sock in self.links:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.links.clear()


def run_in_thread(worker: Worker) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, errors


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def pg_via(proxy: Proxy) -> Engine:
    from conftest import PG_SCHEMA, PG_URL  # the root conftest, on sys.path as rootdir

    base = create_engine(PG_URL).url
    return create_engine(base.set(host="127.0.0.1", port=proxy.port),
                         connect_args={"options": f"-csearch_path={PG_SCHEMA}",
                                       "connect_timeout": 2})


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_worker_started_while_the_database_is_down_waits_for_it(runtime, engine, caplog):
    proxy = Proxy((engine.url.host or "127.0.0.1", engine.url.port or 5432))
    down = pg_via(proxy)
    worker = Worker(runtime, engine=down, poll=0.05, handle_signals=False)
    with caplog.at_level(logging.WARNING, logger="signalbus"):
        thread, errors = run_in_thread(worker)
        try:
            wait_for(lambda: sum("database unavailable" in r.getMessage()
                                 for r in caplog.records) >= 3, 30, "no retry was logged")
            assert thread.is_alive() and not errors  # it waits, it does not exit
            save(runtime, (1, 0), (2, 0))
            proxy.start()  # the database is back
            wait_for(lambda: len(GOT) == 4, 30, "nothing was delivered once it was back")
        finally:
            worker.stop()
            thread.join(30)
            proxy.stop()
            down.dispose()
    assert not errors, errors
    attempts = [r.getMessage() for r in caplog.records if "database unavailable" in r.getMessage()]
    assert attempts[0].startswith(f"signalbus worker {worker.name}: database unavailable "
                                  "(attempt 1), retrying in ")
    assert [f"(attempt {n})" in line for n, line in enumerate(attempts, 1)] == \
        [True] * len(attempts)  # one line per attempt


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_worker_whose_connections_are_killed_carries_on_and_releases_its_claims(
        runtime, engine, caplog):
    """``pg_terminate_backend`` on every connection of a working worker: it reconnects,
    hands back its own claims at once (long before their 60 s lease ends), and every
    event is delivered; nothing is left pending or claimed."""
    save(runtime, *((i, 0) for i in range(1, 41)))
    blocked = threading.Event()
    release = threading.Event()

    def block_once(event: Event) -> None:
        if event.pk == 5 and not blocked.is_set():
            blocked.set()
            release.wait(30)

    PLAN["first"] = block_once
    worker = Worker(runtime, engine=engine, poll=0.05, lease=60, batch=10,
                    handle_signals=False, ack_interval=0.05)
    with caplog.at_level(logging.INFO, logger="signalbus"):
        thread, errors = run_in_thread(worker)
        try:
            wait_for(blocked.is_set, 30, "the receiver never ran")
            with engine.connect() as conn:  # every other connection of this database
                killed = conn.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
                conn.commit()
            assert killed >= 1
            started = time.monotonic()
            release.set()
            wait_for(lambda: pending(engine) == 0, 30, "the worker did not carry on")
            recovered = time.monotonic() - started
        finally:
            worker.stop()
            thread.join(30)
    assert not errors, errors
    assert recovered < 30  # its claims came back on reconnect, not after the 60 s lease
    assert worker.stats.reconnects >= 1
    assert any("connection back; released" in r.getMessage() for r in caplog.records)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(outbox).where(
            outbox.c.claimed_by.is_not(None))).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(outbox).where(
            outbox.c.state == DONE)).scalar_one() == 40
    delivered = {(name, pk) for name, pk, _ in GOT}
    assert delivered == {(n, i) for n in ("first", "second") for i in range(1, 41)}


def pending(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(outbox).where(
            outbox.c.state == PENDING)).scalar_one())
