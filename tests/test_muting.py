"""Muting: a context manager, a decorator, and SIGNALBUS_MUTED (config or environment)."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import sessionmaker

import signalbus


@pytest.fixture
def registered(models, recorder):
    signalbus.bind(models.User, "insert", "user_registered")
    signalbus.bind(models.Note, "insert", "note_added")
    return recorder.listen("user_registered", "note_added")


def _add_both(Session, models, email="a@x"):
    with Session() as s:
        s.add(models.User(email=email))
        s.add(models.Note(body=email))
        s.commit()


def test_context_manager_mutes_everything(bus, Session, models, registered, signalbus_capture):
    with signalbus.muted():
        _add_both(Session, models)
    assert registered.calls == []
    assert signalbus_capture.events == []  # not recorded either
    _add_both(Session, models, "b@x")
    assert registered.names == ["user_registered", "note_added"]


def test_muting_is_judged_at_capture(bus, Session, models, registered):
    with Session() as s:
        with signalbus.muted():
            s.add(models.User(email="muted@x"))
            s.flush()
        s.add(models.User(email="heard@x"))
        s.commit()  # after the block: the muted change stays muted
    assert [e.data["email"] for e in registered.events] == ["heard@x"]


def test_decorator_with_names(bus, Session, models, registered):
    @signalbus.muted("user_registered")
    def load():
        _add_both(Session, models)

    load()
    assert registered.names == ["note_added"]


def test_emit_is_muted_too(bus, recorder):
    signalbus.signal("report_ready")
    recorder.listen("report_ready")
    with signalbus.muted(signalbus.signal("report_ready")):
        bus.emit("report_ready", {})
    assert recorder.calls == []


def test_config_mutes_a_bus(engine, models, registered):
    Session = sessionmaker(engine)
    signalbus.SignalBus().attach(Session, plugins=False,
                                 config={"SIGNALBUS_MUTED": ["note_added"]})
    _add_both(Session, models)
    assert registered.names == ["user_registered"]


def test_environment_mutes_the_process(bus, Session, models, registered, monkeypatch):
    monkeypatch.setenv("SIGNALBUS_MUTED", "1")
    _add_both(Session, models)
    monkeypatch.setenv("SIGNALBUS_MUTED", "note_added, other")
    _add_both(Session, models, "b@x")
    monkeypatch.delenv("SIGNALBUS_MUTED")
    _add_both(Session, models, "c@x")
    assert [(n, e.data.get("email") or e.data.get("body")) for n, _, e in registered.calls] == [
        ("user_registered", "b@x"),
        ("user_registered", "c@x"),
        ("note_added", "c@x"),
    ]


@pytest.mark.signalbus_muted("note_added")
def test_marker(bus, Session, models, registered):
    _add_both(Session, models)
    assert registered.names == ["user_registered"]


def test_bad_setting_is_named():
    with pytest.raises(TypeError, match="SIGNALBUS_MUTED must be a bool"):
        signalbus.muting.parse_muted(3)
