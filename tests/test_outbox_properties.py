"""The outbox's rules, proved against what the database holds (Hypothesis).

Random programs interleave commits (inserts and updates of a few rows) with worker
batches of random sizes, while three receivers fail a random number of times
(``RuntimeError``, ``Retry``) or refuse for good (``Permanent``). After a final drain
the oracle checks, on the receivers' call log and on the outbox tables:

* at-least-once: every (event, receiver) succeeded, unless it is ``dead``;
* no repeat: a receiver that succeeded for an event is never called for it again
  (whatever the other receivers did);
* order: each receiver's calls for one row follow the row's commit order (a ``dead``
  delivery stops holding its row back, so later events may follow it);
* the stored rows agree with the calls: every event ``done``; a delivery row exactly
  for each (event, receiver) that failed at least once (or was queued behind one that
  did), with its attempts, state and the last error.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import String, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus
import signalbus.outbox
from signalbus import Event, Permanent, Retry
from signalbus.bus import Runtime
from signalbus.outbox import DEAD, DELIVERED, DONE, deliveries, outbox
from signalbus.outbox.worker import Worker

MAX_ATTEMPTS = 3
RECEIVERS = ("r_a", "r_b", "r_c")


class Base(DeclarativeBase):
    pass


class Thing(Base):
    __tablename__ = "ob_prop_things"
    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(default=0)
    label: Mapped[str] = mapped_column(String(20), default="")


Key = tuple[str, int, int]  # receiver, row, version
CALLS: list[tuple[Key, str]] = []
"""(key, outcome) of every call, in call order: "ok", "error", "retry", "permanent"."""
PLAN: dict[Key, int | str] = {}
"""Failures before success for a key, or "permanent"."""


def _act(name: str, event: Event) -> None:
    key = (name, int(event.pk), int(event.data["version"]))
    plan = PLAN.get(key, 0)
    made = sum(1 for k, _ in CALLS if k == key)
    if plan == "permanent":
        CALLS.append((key, "permanent"))
        raise Permanent(f"never {key}")
    assert isinstance(plan, int)
    if made < plan:
        kind = "retry" if made % 2 else "error"
        CALLS.append((key, kind))
        if kind == "retry":
            raise Retry(after=0)
        raise RuntimeError(f"failed {key} #{made + 1}")
    CALLS.append((key, "ok"))


def r_a(sender: Any, event: Event, **kw: Any) -> None:
    _act("r_a", event)


def r_b(sender: Any, event: Event, **kw: Any) -> None:
    _act("r_b", event)


def r_c(sender: Any, event: Event, **kw: Any) -> None:
    _act("r_c", event)


@pytest.fixture
def runtime(engine: Engine) -> Iterator[Runtime]:
    Base.metadata.create_all(engine)
    signalbus.outbox.create_all(engine)
    signalbus.bind(Thing, "insert", "ob_prop_changed")
    signalbus.bind(Thing, "update", "ob_prop_changed")
    rt = signalbus.SignalBus().attach(sessionmaker(engine), plugins=False, config={
        "SIGNALBUS_DELIVERY": "outbox", "SIGNALBUS_OUTBOX_MAX_ATTEMPTS": MAX_ATTEMPTS,
        "SIGNALBUS_OUTBOX_BACKOFF_BASE": 0})
    for fn in (r_a, r_b, r_c):
        rt.connect("ob_prop_changed", fn)
    yield rt
    signalbus.outbox.drop_all(engine)
    Base.metadata.drop_all(engine)


ROWS = 4
# a commit: up to three distinct rows, each inserted (if new) or updated
commits = st.lists(st.integers(1, ROWS), min_size=1, max_size=3, unique=True)
steps = st.lists(st.one_of(st.tuples(st.just("commit"), commits),
                           st.tuples(st.just("batch"), st.integers(1, 4))),
                 min_size=1, max_size=14)
plans = st.dictionaries(
    st.tuples(st.sampled_from(RECEIVERS), st.integers(1, ROWS), st.integers(0, 4)),
    st.one_of(st.integers(1, MAX_ATTEMPTS + 1), st.just("permanent")), max_size=10)


def reset(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in (deliveries, outbox, Thing.__table__):
            conn.execute(table.delete())
    CALLS.clear()
    PLAN.clear()


@pytest.mark.signalbus_receiver_errors("log")
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(program=steps, plan=plans)
def test_the_outbox_rules_hold_for_any_program(runtime, engine, program, plan):
    reset(engine)
    PLAN.update(plan)
    versions: dict[int, int] = {}
    worker = Worker(runtime, engine=engine, listen=False, handle_signals=False)
    for step, arg in program:
        if step == "commit":
            with runtime.session_factory() as s:
                for pk in arg:
                    if pk in versions:
                        versions[pk] += 1
                        s.get(Thing, pk).version = versions[pk]
                    else:
                        versions[pk] = 0
                        s.add(Thing(id=pk))
                s.commit()
        else:  # one batch of that size, as a worker would claim it
            worker.settings = dataclasses.replace(worker.settings, batch=arg)
            try:
                worker.run_batch()
            finally:
                worker._close_connections()
    Worker(runtime, engine=engine, listen=False, handle_signals=False).run(once=True)
    check(engine, versions)


def check(engine: Engine, versions: dict[int, int]) -> None:
    with engine.connect() as conn:
        events = conn.execute(select(outbox.c.id, outbox.c.state, outbox.c.payload)).all()
        rows = conn.execute(select(deliveries)).all()
    committed = {(int(e.payload["pk"]), int(e.payload["data"]["version"])) for e in events}
    assert all(e.state == DONE for e in events)
    calls: dict[Key, list[str]] = defaultdict(list)
    for key, outcome in CALLS:
        calls[key].append(outcome)
    stored = {(r.receiver.rpartition(":")[2], ) + tuple(
        (int(e.payload["pk"]), int(e.payload["data"]["version"]))
        for e in events if e.id == r.outbox_id)[0]: r for r in rows}

    for pk, version in committed:
        for name in RECEIVERS:
            key = (name, pk, version)
            made = calls[key]
            assert made, f"{key} was never delivered"
            # no repeat after a success; a success or a give-up ends the calls
            assert made.count("ok") <= 1 and "ok" not in made[:-1], (key, made)
            dead = made[-1] == "permanent" or (made[-1] != "ok" and len(made) >= MAX_ATTEMPTS)
            assert made[-1] == "ok" or dead, (key, made)  # at least once, unless dead
            row = stored.get(key)
            if made == ["ok"]:
                # the happy path has no row of its own, unless the delivery was queued
                # behind a failed delivery of an earlier event of the row
                if row is not None:
                    assert (row.state, row.attempts, row.last_error) == (DELIVERED, 1, None)
                    assert any(o != "ok" for (n, p, v), o in CALLS
                               if (n, p) == (name, pk) and v < version), key
                continue
            assert row is not None, key
            assert row.attempts == len(made)
            assert row.state == (DEAD if dead else DELIVERED)
            last_failure = [o for o in made if o != "ok"][-1]
            if last_failure == "retry":
                assert row.last_error == "Retry: retry requested after 0s"
            else:
                assert row.last_error and str(key) in row.last_error
    assert set(stored) <= {(n, pk, v) for n in RECEIVERS for pk, v in committed}

    # order: each receiver's calls for one row follow the row's versions, except after
    # a dead delivery, which no longer holds the row back
    for name in RECEIVERS:
        for pk in versions:
            seq = [(k[2], outcome) for k, outcome in CALLS if k[0] == name and k[1] == pk]
            highest = -1
            for version, _ in seq:
                if version < highest:
                    gave_up = calls[(name, pk, version)]
                    raise AssertionError(f"{name} row {pk}: version {version} after "
                                         f"{highest} ({seq}; {gave_up})")
                highest = max(highest, version)
