"""Inline delivery: after commit, in order, robust to failing receivers, chains and cycles."""

from __future__ import annotations

import logging

import pytest

import signalbus


@pytest.mark.signalbus_receiver_errors("log")
def test_failing_receiver_does_not_stop_the_next_nor_undo_the_commit(
    bus, Session, models, caplog
):
    signalbus.bind(models.User, "insert", "user_registered")
    seen = []

    @signalbus.receiver("user_registered", name="tests.broken")
    def broken(sender, event, **kw):
        raise RuntimeError("smtp exploded")

    @signalbus.receiver("user_registered")
    def after(sender, event, **kw):
        seen.append(event.id)

    with caplog.at_level(logging.ERROR, logger="signalbus"):
        with Session() as s:
            s.add(models.User(email="a@example.com"))
            s.commit()  # does not raise
    assert len(seen) == 1
    (record,) = [r for r in caplog.records if r.name == "signalbus"]
    assert "receiver tests.broken failed on user_registered event" in record.getMessage()
    assert seen[0] in record.getMessage()
    assert record.exc_info is not None and "smtp exploded" in str(record.exc_info[1])
    with Session() as s:
        assert s.query(models.User).count() == 1


def test_receivers_run_in_registration_order(bus, Session, models):
    signalbus.bind(models.User, "insert", "user_registered")
    order = []
    for i in range(12):  # enough to expose set ordering

        def fn(sender, event, i=i, **kw):
            order.append(i)

        signalbus.receiver("user_registered", name=f"tests.r{i}")(fn)
    with Session() as s:
        s.add(models.User(email="a@example.com"))
        s.commit()
    assert order == list(range(12))


def test_sender_filter_and_subclass_sender(bus, Session, models):
    signalbus.bind(models.User, "insert", "user_registered")
    got = []

    @signalbus.receiver("user_registered", sender=models.User)
    def only_users(sender, event, **kw):
        got.append(sender)

    @signalbus.receiver("user_registered", sender=models.Note)
    def only_notes(sender, event, **kw):
        got.append("wrong")

    with Session() as s:
        s.add(models.User(email="a@example.com"))
        s.commit()
    assert got == [models.User]


def test_receiver_writing_rows_gets_its_events_delivered_after(bus, Session, models):
    signalbus.bind(models.User, "insert", "user_registered")
    signalbus.bind(models.Note, "insert", "note_added")
    log = []

    @signalbus.receiver("user_registered")
    def write_note(sender, event, **kw):
        log.append(("user_registered", event.data["email"]))
        with Session() as s:
            s.add(models.Note(body=f"welcome {event.data['email']}"))
            s.commit()
        log.append(("committed note for", event.data["email"]))

    @signalbus.receiver("note_added")
    def on_note(sender, event, **kw):
        log.append(("note_added", event.data["body"]))

    with Session() as s:
        s.add_all([models.User(email="a@x"), models.User(email="b@x")])
        s.commit()
    # breadth-first: both users' receivers before the notes they caused
    assert log == [
        ("user_registered", "a@x"),
        ("committed note for", "a@x"),
        ("user_registered", "b@x"),
        ("committed note for", "b@x"),
        ("note_added", "welcome a@x"),
        ("note_added", "welcome b@x"),
    ]


def test_receiver_may_reuse_the_committing_session(bus, Session, models):
    signalbus.bind(models.User, "insert", "user_registered")
    signalbus.bind(models.Note, "insert", "note_added")
    notes = []

    with Session() as s:

        @signalbus.receiver("user_registered")
        def write_note(sender, event, **kw):
            s.add(models.Note(body="hello"))
            s.commit()

        @signalbus.receiver("note_added")
        def on_note(sender, event, **kw):
            notes.append(event.data["body"])

        s.add(models.User(email="a@x"))
        s.commit()
        assert s.query(models.Note).count() == 1
    assert notes == ["hello"]


@pytest.mark.signalbus_receiver_errors("log")
def test_receiver_cycle_is_cut_off(bus, Session, models, caplog):
    signalbus.bind(models.Note, "insert", "note_added")
    count = []

    @signalbus.receiver("note_added")
    def again(sender, event, **kw):
        count.append(1)
        with Session() as s:
            s.add(models.Note(body="again"))
            s.commit()

    with caplog.at_level(logging.ERROR, logger="signalbus"):
        with Session() as s:
            s.add(models.Note(body="first"))
            s.commit()
    assert len(count) == 11  # depth 0..10 delivered, the 12th cut off
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "receivers re-triggered signals 11 levels deep" in m
        and "note_added -> note_added" in m
        and "SIGNALBUS_MAX_DEPTH" in m
        for m in messages
    )


def test_receiver_cycle_fails_the_test_by_default(pytester):
    pytester.makepyfile(
        """
        import signalbus
        from sqlalchemy import create_engine
        from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

        class Base(DeclarativeBase):
            pass

        class Note(Base):
            __tablename__ = "notes"
            id: Mapped[int] = mapped_column(primary_key=True)

        def test_cycle():
            engine = signalbus.sqlite.configure(create_engine("sqlite://"))
            Base.metadata.create_all(engine)
            Session = sessionmaker(engine)
            signalbus.SignalBus().attach(Session, plugins=False,
                                         config={"SIGNALBUS_MAX_DEPTH": 2})
            signalbus.bind(Note, "insert", "note_added")

            @signalbus.receiver("note_added")
            def again(sender, event, **kw):
                with Session() as s:
                    s.add(Note())
                    s.commit()

            with Session() as s:
                s.add(Note())
                s.commit()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*signalbus raised ReceiverCycle*3 levels deep*"])


def test_event_ids_are_distinct_version_4_uuids_within_and_across_transactions(
    bus, Session, models
):
    import uuid

    signalbus.bind(models.User, "insert", "user_registered")
    ids: list[str] = []

    @signalbus.receiver("user_registered", name="tests.ids")
    def keep(sender, event, **kw):
        ids.append(event.id)

    for start in (0, 300):  # more than one block of ids in a transaction
        with Session() as s:
            s.add_all([models.User(email=f"u{i}@example.com") for i in range(start, start + 300)])
            s.commit()
    assert len(ids) == len(set(ids)) == 600
    for value in ids:
        parsed = uuid.UUID(value)
        assert (str(parsed), parsed.version, parsed.variant) == (value, 4, uuid.RFC_4122)


@pytest.mark.filterwarnings("ignore:The `objects` parameter of `Session.flush`")
def test_flushing_some_objects_captures_only_those_then_the_rest(bus, Session, models,
                                                                 recorder):
    signalbus.bind(models.User, "insert", "user_registered")
    recorder.listen("user_registered")
    with Session() as s:
        first, second = models.User(email="a@example.com"), models.User(email="b@example.com")
        s.add_all([first, second])
        s.flush([second])
        second.email = "b2@example.com"
        s.commit()
    # rows in the order the flushes first wrote them; one insert each, final values
    assert [e.data["email"] for e in recorder.events] == ["b2@example.com", "a@example.com"]
    assert [e.op for e in recorder.events] == ["insert", "insert"]


def test_no_event_is_named_in_log_records_after_delivery(bus, Session, models):
    import signalbus.logs

    signalbus.bind(models.User, "insert", "user_registered")
    during = []

    @signalbus.receiver("user_registered", name="tests.during")
    def look(sender, event, **kw):
        running = signalbus.logs.current.get()
        assert running is not None
        during.append(running.fields())

    with Session() as s:
        s.add(models.User(email="a@example.com"))
        s.commit()
    assert during and during[0][1:] == ("user_registered", "tests.during")
    assert signalbus.logs.current.get() is None
