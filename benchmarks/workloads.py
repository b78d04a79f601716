"""The SQLAlchemy configurations: one class each, all timed the same way.

A configuration is what the runner interleaves: :meth:`Workload.prepare` runs before
every repeat, outside the timing (empty or refill its table), and :meth:`Workload.batch`
is the timed unit — one transaction of ``batch_size`` rows, from opening the session to
the end of the commit (inline receivers included). Every configuration of a run writes
the same values (``row_values``) into its own table.

Adding a configuration (the outbox write cost, for instance) means writing one subclass
and listing it in :func:`sqlalchemy_workloads`; the runner, the statistics and the report
need no change.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from typing import Any

import blinker
from sqlalchemy import Engine, event, inspect, select
from sqlalchemy.orm import Session, object_session, sessionmaker

import signalbus
from signalbus.bindings import registry

from .databases import (
    BufferUser,
    Database,
    DriverFloorUser,
    FloorCopyUser,
    FloorUser,
    OutboxUser,
    SignalbusUser,
    TutorialUser,
    UnboundUser,
    UpdateBufferUser,
    UpdateFloorUser,
    UpdateSignalbusUser,
    row_values,
)

__all__ = ["Workload", "declare_signalbus", "sqlalchemy_workloads"]

INSERT_SIGNAL = "bench_user_registered"
UPDATE_SIGNAL = "bench_user_email_changed"
OUTBOX_SIGNAL = "bench_user_registered_outbox"


def outbox_available() -> bool:
    """Whether this checkout has the outbox delivery mode (``signalbus.outbox``)."""
    return importlib.util.find_spec("signalbus.outbox") is not None


def _noop_1(sender: Any, **kwargs: Any) -> None:
    """A receiver that does nothing (the benchmarks measure the machinery, not it)."""


def _noop_2(sender: Any, **kwargs: Any) -> None:
    """A second no-op receiver."""


def _noop_3(sender: Any, **kwargs: Any) -> None:
    """A third no-op receiver."""


NOOP_RECEIVERS: tuple[Callable[..., None], ...] = (_noop_1, _noop_2, _noop_3)

# -- the tutorial approach: a mapper listener sending a plain blinker signal -------------

tutorial_signals = blinker.Namespace()
tutorial_user_created = tutorial_signals.signal("user-created")
for _fn in NOOP_RECEIVERS:
    tutorial_user_created.connect(_fn, weak=False)


@event.listens_for(TutorialUser, "after_insert")
def _tutorial_after_insert(mapper: Any, connection: Any, target: TutorialUser) -> None:
    # what most tutorials show: send from inside the flush, before the commit
    tutorial_user_created.send(target)


# -- the hand-written after-commit buffer ------------------------------------------------
# What an app writes to send after the commit without signalbus (the yardstick of the
# capture cost issue): mapper hooks keep the objects in session.info, after_commit sends
# a plain blinker signal per object, after_rollback drops them. No snapshot, no JSON
# check, no coalescing: receivers get the live object.

buffer_signals = blinker.Namespace()
buffer_user_created = buffer_signals.signal("user-created-after-commit")
buffer_email_changed = buffer_signals.signal("user-email-changed-after-commit")
for _signal in (buffer_user_created, buffer_email_changed):
    for _fn in NOOP_RECEIVERS:
        _signal.connect(_fn, weak=False)

_BUFFER = "bench_after_commit"


def _buffered(target: Any) -> list[tuple[blinker.Signal, Any]]:
    session = object_session(target)
    assert session is not None
    pending: list[tuple[blinker.Signal, Any]] = session.info.setdefault(_BUFFER, [])
    return pending


@event.listens_for(BufferUser, "after_insert")
def _buffer_after_insert(mapper: Any, connection: Any, target: BufferUser) -> None:
    _buffered(target).append((buffer_user_created, target))


@event.listens_for(UpdateBufferUser, "after_update")
def _buffer_after_update(mapper: Any, connection: Any, target: UpdateBufferUser) -> None:
    if inspect(target).attrs.email.history.has_changes():
        _buffered(target).append((buffer_email_changed, target))


def attach_buffer(factory: sessionmaker[Session]) -> None:
    """The buffer's session listeners on ``factory``: send after the commit, drop on
    rollback."""

    def send(session: Session) -> None:
        for signal, obj in session.info.pop(_BUFFER, ()):
            signal.send(obj)

    def drop(session: Session) -> None:
        session.info.pop(_BUFFER, None)

    event.listen(factory, "after_commit", send)
    event.listen(factory, "after_rollback", drop)


# -- signalbus declarations --------------------------------------------------------------

_declared = False


def declare_signalbus() -> None:
    """Bind the signalbus models and connect 3 no-op receivers to each signal (once).

    Bindings and ``@receiver`` are import-time declarations in signalbus; they are made
    here, on first use, so that importing this module for the floor alone (the memory
    subprocess) does not install signalbus's listeners.
    """
    global _declared
    if _declared:
        return
    signalbus.bind(SignalbusUser, "insert", INSERT_SIGNAL)
    signalbus.bind(UpdateSignalbusUser, "update", UPDATE_SIGNAL,
                   when=signalbus.changed("email"))
    names = [INSERT_SIGNAL, UPDATE_SIGNAL]
    if outbox_available():
        signalbus.bind(OutboxUser, "insert", OUTBOX_SIGNAL)
        names.append(OUTBOX_SIGNAL)
    for name in names:
        for fn in NOOP_RECEIVERS:
            signalbus.receiver(name)(fn)
    _declared = True


def attach_signalbus(factory: sessionmaker[Session], delivery: str = "inline") -> None:
    """Attach a fresh bus (``delivery`` mode, no plugins) to ``factory``.

    For the outbox, also create its tables in the factory's database if missing.
    """
    declare_signalbus()
    signalbus.SignalBus().attach(factory, config={"SIGNALBUS_DELIVERY": delivery},
                                 plugins=False)
    if delivery == "outbox":
        from signalbus import outbox

        outbox.create_all(factory.kw["bind"])


def signalbus_bindings() -> int:
    """How many bindings are declared (reported, to show the setup is what it claims)."""
    return len(registry.bindings)


# -- configurations ----------------------------------------------------------------------


class Workload:
    """One configuration: a model, a session factory and a timed batch."""

    key: str = ""
    """Short id (``--only`` and the profile tool use it)."""
    label: str = ""
    """What the report prints."""
    floor: str | None = None
    """The key of the configuration this one is compared to; ``None`` for a floor."""
    kind: str = "insert"
    target: float | None = None
    """Ratio the issue asks for at most (reported, never enforced)."""
    target_text: str = ""
    target_on: tuple[str, ...] = ("sqlite", "postgresql")
    """The databases (dialect names) the target is set for."""
    model: type[Any]

    def __init__(self, db: Database, batch_size: int, factory: sessionmaker[Session]) -> None:
        self.db = db
        self.batch_size = batch_size
        self.factory = factory
        self.engine: Engine = factory.kw["bind"]

    @property
    def table(self) -> str:
        """The table this configuration writes."""
        return str(self.model.__tablename__)

    def prepare(self, repeat: int, rows: int) -> None:
        """Before each repeat, untimed: start from an empty table."""
        self.db.clear(self.table, engine=self.engine)

    def batch(self, index: int, repeat: int) -> None:
        """The timed unit: insert rows ``index*batch_size ..`` in one transaction."""
        start = index * self.batch_size
        model = self.model
        with self.factory() as session:
            session.add_all([model(**row_values(i)) for i in range(start, start + self.batch_size)])
            session.commit()


class Floor(Workload):
    key = "floor"
    label = "floor: SQLAlchemy ORM, no listeners"
    model = FloorUser


class FloorCopy(Workload):
    key = "floor-copy"
    label = "floor again (A/A: its spread is the noise of the run)"
    floor = "floor"
    model = FloorCopyUser


class DriverFloor(Workload):
    key = "driver-floor"
    label = "floor with the sqlite3 driver's default transactions (no signalbus.sqlite.configure)"
    floor = "floor"
    model = DriverFloorUser


class Tutorial(Workload):
    key = "tutorial"
    label = "tutorial: mapper after_insert → blinker signal, 3 no-op receivers (before commit)"
    floor = "floor"
    model = TutorialUser


class Buffer(Workload):
    key = "buffer"
    label = ("hand-written after-commit buffer: mapper after_insert → session.info, "
             "blinker after commit, 3 no-op receivers")
    floor = "floor"
    model = BufferUser


class SignalbusInline(Workload):
    key = "signalbus"
    label = "signalbus inline: 1 insert binding, 3 no-op receivers"
    floor = "floor"
    target = 1.08
    target_text = "≤ 1.08×"
    model = SignalbusUser


class SignalbusOutbox(Workload):
    """The outbox's write cost: events and deliveries rows stored in the transaction."""

    key = "signalbus-outbox"
    label = "signalbus outbox: 1 insert binding, 3 receivers; write cost in the transaction"
    floor = "floor"
    target = 1.20
    target_text = "≤ 1.20× (PostgreSQL)"
    target_on = ("postgresql",)
    model = OutboxUser

    def prepare(self, repeat: int, rows: int) -> None:
        """Empty the model's table and the outbox tables (untimed)."""
        from signalbus import outbox

        super().prepare(repeat, rows)
        with self.engine.begin() as conn:
            conn.execute(outbox.deliveries.delete())
            conn.execute(outbox.outbox.delete())


class Unbound(Workload):
    key = "unbound"
    label = "signalbus attached, model without a binding"
    floor = "floor"
    target_text = "within noise"
    model = UnboundUser


class UpdateWorkload(Workload):
    """Updates: the table holds ``rows`` rows; each batch changes 100 of them."""

    kind = "update"

    def prepare(self, repeat: int, rows: int) -> None:
        """Refill the table with ``rows`` rows (untimed)."""
        self.db.clear(self.table, engine=self.engine)
        model = self.model
        with Session(self.db.engine) as session:
            session.add_all([model(id=i + 1, **row_values(i)) for i in range(rows)])
            session.commit()

    def batch(self, index: int, repeat: int) -> None:
        """Load 100 rows by key range and give each a new email, in one transaction."""
        first = index * self.batch_size
        model = self.model
        stamp = f".r{repeat}"
        with self.factory() as session:
            users = session.scalars(
                select(model).where(model.id > first, model.id <= first + self.batch_size)
            ).all()
            for user in users:
                user.email = row_values(user.id - 1, stamp)["email"]
            session.commit()


class UpdateFloor(UpdateWorkload):
    key = "update-floor"
    label = "update floor: load 100 rows, change email, commit; no listeners"
    model = UpdateFloorUser


class UpdateBuffer(UpdateWorkload):
    key = "update-buffer"
    label = ("hand-written after-commit buffer: after_update, email history checked, "
             "blinker after commit, 3 no-op receivers")
    floor = "update-floor"
    model = UpdateBufferUser


class SignalbusUpdate(UpdateWorkload):
    key = "signalbus-update"
    label = 'signalbus inline: update binding when=changed("email"), 3 no-op receivers'
    floor = "update-floor"
    target = 1.10
    target_text = "≤ 1.10×"
    model = UpdateSignalbusUser


def sqlalchemy_workloads(db: Database, batch_size: int) -> list[Workload]:
    """Every SQLAlchemy configuration for ``db``, floors first.

    The floor, tutorial and update-floor configurations use a plain ``sessionmaker``;
    the hand-written buffers one with their after-commit listeners;
    the signalbus inline ones (and the unbound model) one that a fresh bus is attached
    to; the outbox (when this checkout has it) one attached to a bus in outbox mode.
    All of them share ``db.engine``; the driver-default floor (SQLite only) has its own.
    """
    plain = sessionmaker(db.engine)
    buffered = sessionmaker(db.engine)
    attach_buffer(buffered)
    attached = sessionmaker(db.engine)
    attach_signalbus(attached)
    outbox = outbox_available()
    if outbox:
        stored = sessionmaker(db.engine)
        attach_signalbus(stored, "outbox")
    make: Callable[[type[Workload], sessionmaker[Session]], Workload] = functools.partial(
        _make, db, batch_size)
    out = [
        make(Floor, plain),
        make(FloorCopy, plain),
        make(UpdateFloor, plain),
        make(Tutorial, plain),
        make(Buffer, buffered),
        make(SignalbusInline, attached),
        make(Unbound, attached),
        make(UpdateBuffer, buffered),
        make(SignalbusUpdate, attached),
    ]
    if outbox:
        out.append(make(SignalbusOutbox, stored))
    if db.driver_engine is not None:
        out.append(make(DriverFloor, sessionmaker(db.driver_engine)))
    return out


def _make(db: Database, batch_size: int, cls: type[Workload],
          factory: sessionmaker[Session]) -> Workload:
    return cls(db, batch_size, factory)
