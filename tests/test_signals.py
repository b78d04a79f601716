"""Signals, ``emit``, flush-phase bindings and lazy model strings."""

from __future__ import annotations

import sys
import types

import blinker
import pytest
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus
from signalbus import BindingError, ConfigurationError


def test_same_name_same_signal_and_plain_blinker_connect():
    sig = signalbus.signal("thing_happened", doc="A thing happened.")
    assert signalbus.signal("thing_happened") is sig
    assert isinstance(sig, blinker.NamedSignal)
    assert sig.__doc__ == "A thing happened."
    got = []

    def fn(sender, **kw):
        got.append(kw)

    sig.connect(fn)  # weak, as blinker's default
    sig.send(None, x=1)
    assert got == [{"x": 1}]


def test_emit_unknown_signal_is_an_error_with_a_suggestion(bus):
    signalbus.signal("user_registered")
    with pytest.raises(ConfigurationError) as info:
        bus.emit("user_registred", {})
    assert str(info.value) == (
        "emit() was given an unknown signal 'user_registred': no bind() or signalbus.signal() "
        "declares it. Did you mean 'user_registered'? Declare it with "
        "signalbus.signal('user_registred') where the signal is owned."
    )


def test_emit_without_session_delivers_now(bus, recorder):
    signalbus.signal("report_ready")
    recorder.listen("report_ready")
    event = bus.emit("report_ready", {"n": 1})
    assert recorder.events == [event]
    assert event.op == "emit" and event.source == "emit" and event.model is None


def test_emit_with_session_follows_its_transaction(bus, Session, models, recorder):
    signalbus.signal("audit")
    signalbus.bind(models.User, "insert", "user_registered")
    recorder.listen("audit", "user_registered")
    with Session() as s:
        bus.emit("audit", {"step": "rolled back"}, session=s)
        s.rollback()
        s.add(models.User(email="a@x"))
        bus.emit("audit", {"step": "kept"}, session=s)
        assert recorder.calls == []
        s.commit()
    assert [(n, dict(e.data).get("step")) for n, e in
            [(n, e) for n, _, e in recorder.calls]] == [
        ("audit", "kept"),
        ("user_registered", None),
    ]  # the emit came before the row's first flush


def test_emit_into_unattached_session_is_an_error(engine):
    from sqlalchemy.orm import Session

    signalbus.signal("audit")
    with Session(engine) as s, pytest.raises(ConfigurationError) as info:
        signalbus.emit("audit", {}, session=s)
    assert "no bus is attached to" in str(info.value)


def test_string_model_resolves_lazily(bus, Session, models, recorder):
    module = types.ModuleType("tests_fake_models")
    module.User = models.User
    sys.modules["tests_fake_models"] = module
    try:
        signalbus.bind("tests_fake_models:User", "insert", "user_registered")
        recorder.listen("user_registered")
        with Session() as s:
            s.add(models.User(email="a@x"))
            s.commit()
        assert recorder.names == ["user_registered"]
    finally:
        del sys.modules["tests_fake_models"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests_no_such_module:User",
         "signalbus cannot resolve model 'tests_no_such_module:User' in "
         "bind('tests_no_such_module:User', 'insert', 'x'): importing "
         "'tests_no_such_module' failed (No module named 'tests_no_such_module'). "
         "Check the 'pkg.module:Class' string."),
        ("signalbus:Usr",
         "signalbus cannot resolve model 'signalbus:Usr' in bind('signalbus:Usr', 'insert', "
         "'x'): module 'signalbus' has no attribute 'Usr'. Check the 'pkg.module:Class' "
         "string."),
        ("signalbus.User",
         "signalbus cannot resolve model 'signalbus.User' in bind('signalbus.User', 'insert', "
         "'x'): write it as 'pkg.module:Class'."),
    ],
)
def test_bad_model_string_fails_the_first_flush(bus, Session, models, path, message):
    signalbus.bind(path, "insert", "x")
    with Session() as s:
        s.add(models.User(email="a@x"))
        with pytest.raises(BindingError) as info:
            s.flush()
    assert str(info.value) == message


def test_flush_phase_sets_attributes_before_the_row_is_written(bus, Session, models, recorder):
    signalbus.bind(models.Note, "insert", "note_saving", phase="flush")
    signalbus.bind(models.Note, "insert", "note_added")
    recorder.listen("note_added")

    @signalbus.receiver("note_saving")
    def auto_fields(sender, event, **kw):
        assert event.pk is None
        event.instance.public_id = f"N-{event.data['body']}"

    with Session() as s:
        s.add(models.Note(body="hi"))
        s.commit()
    with Session() as s:
        assert s.query(models.Note).one().public_id == "N-hi"
    assert recorder.events[0].data["public_id"] == "N-hi"


def test_flush_phase_exception_aborts_the_flush(bus, Session, models, recorder):
    signalbus.bind(models.Note, "insert", "note_saving", phase="flush")
    signalbus.bind(models.Note, "insert", "note_added")
    recorder.listen("note_added")

    @signalbus.receiver("note_saving")
    def refuse(sender, event, **kw):
        raise ValueError("no empty notes")

    with Session() as s:
        s.add(models.Note(body=""))
        with pytest.raises(ValueError, match="no empty notes"):
            s.commit()
    assert recorder.calls == []


def test_flush_phase_update_sees_changes_and_when(bus, Session, models):
    signalbus.bind(models.User, "update", "plan_changing", phase="flush",
                   when=signalbus.changed("plan"))
    seen = []

    @signalbus.receiver("plan_changing")
    def audit(sender, event, **kw):
        seen.append(dict(event.changes))
        event.instance.name = "touched"

    with Session() as s:
        u = models.User(email="a@x", plan="free")
        s.add(u)
        s.commit()
        u.name = "no plan change"
        s.commit()
        u.plan = "pro"
        s.commit()
        assert u.name == "touched"
    assert seen == [{"plan": ("free", "pro")}]


def test_binding_twice_is_one_binding(models):
    a = signalbus.bind(models.User, "insert", "user_registered")
    b = signalbus.bind(models.User, "insert", "user_registered")
    assert a is b


def test_bind_validates_op_and_phase(models):
    with pytest.raises(BindingError, match="op must be one of 'insert', 'update', 'delete'"):
        signalbus.bind(models.User, "upsert", "x")  # type: ignore[arg-type]
    with pytest.raises(BindingError, match="phase must be 'commit' or 'flush'"):
        signalbus.bind(models.User, "insert", "x", phase="later")  # type: ignore[arg-type]


def test_binding_an_unmapped_class_is_named(bus, Session, models):
    class NotAModel:
        pass

    signalbus.bind(NotAModel, "insert", "x")
    with Session() as s:
        s.add(models.User(email="a@x"))
        with pytest.raises(BindingError, match="is not a mapped class"):
            s.flush()


def test_binding_on_a_base_class_covers_subclasses(engine, recorder):
    class Base(DeclarativeBase):
        pass

    class Person(Base):
        __tablename__ = "people"
        id: Mapped[int] = mapped_column(primary_key=True)
        kind: Mapped[str] = mapped_column(String(20))
        __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "person"}

    class Admin(Person):
        __mapper_args__ = {"polymorphic_identity": "admin"}

    Base.metadata.create_all(engine)
    try:
        Session = sessionmaker(engine)
        signalbus.SignalBus().attach(Session, plugins=False)
        signalbus.bind(Person, "insert", "person_added")
        signalbus.bind(Admin, "insert", "admin_added")
        recorder.listen("person_added", "admin_added")
        with Session() as s:
            s.add_all([Person(), Admin()])
            s.commit()
        assert [(n, sender.__name__) for n, sender, _ in recorder.calls] == [
            ("person_added", "Person"),
            ("person_added", "Admin"),
            ("admin_added", "Admin"),
        ]
    finally:
        Base.metadata.drop_all(engine)
