"""What an Event carries: server values, redaction, fields/exclude, JSON normalisation."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import uuid
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import PickleType, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus
from signalbus import Event, UnserialisableValue


def test_server_default_is_in_data(bus, Session, models, recorder):
    signalbus.bind(models.User, "insert", "user_registered")
    recorder.listen("user_registered")
    with Session() as s:
        s.add(models.User(email="a@example.com"))
        s.commit()
    (event,) = recorder.events
    assert event.data["created_at"] is not None
    assert dt.datetime.fromisoformat(event.data["created_at"]).year >= 2024
    assert event.data["id"] == event.pk


def test_redaction_by_default(bus, Session, models, recorder):
    signalbus.bind(models.User, "insert", "user_registered")
    signalbus.bind(models.User, "update", "user_updated")
    recorder.listen("user_registered", "user_updated")
    with Session() as s:
        u = models.User(email="a@example.com", password_hash="x", api_key="k")
        s.add(u)
        s.commit()
        u.password_hash = "y"
        u.name = "Ada"
        s.commit()
    registered, updated = recorder.events
    assert "password_hash" not in registered.data
    assert "api_key" not in registered.data
    assert "password_hash" not in updated.changes
    assert dict(updated.changes) == {"name": (None, "Ada")}


def test_redaction_override_with_fields(bus, Session, models, recorder):
    signalbus.bind(models.User, "insert", "user_registered", fields=["email", "api_key"])
    recorder.listen("user_registered")
    with Session() as s:
        s.add(models.User(email="a@example.com", api_key="k"))
        s.commit()
    assert dict(recorder.events[0].data) == {"email": "a@example.com", "api_key": "k"}


def test_redaction_setting(engine, models, recorder):
    from sqlalchemy.orm import sessionmaker

    Session = sessionmaker(engine)
    signalbus.SignalBus().attach(Session, plugins=False, config={"SIGNALBUS_REDACT": ["EMAIL"]})
    signalbus.bind(models.User, "insert", "user_registered")
    recorder.listen("user_registered")
    with Session() as s:
        s.add(models.User(email="a@example.com", password_hash="x"))
        s.commit()
    data = recorder.events[0].data
    assert "email" not in data
    assert data["password_hash"] == "x"  # only the configured substrings are redacted


def test_redacted_change_still_triggers_condition(bus, Session, models, recorder):
    signalbus.bind(models.User, "update", "password_changed",
                   when=signalbus.changed("password_hash"))
    recorder.listen("password_changed")
    with Session() as s:
        u = models.User(email="a@example.com", password_hash="x")
        s.add(u)
        s.commit()
        u.password_hash = "y"
        s.commit()
    (event,) = recorder.events
    assert "password_hash" not in event.data
    assert dict(event.changes) == {}


def test_fields_and_exclude(bus, Session, models, recorder):
    signalbus.bind(models.User, "insert", "a", fields=["id", "email", "plan"], exclude=["plan"])
    signalbus.bind(models.User, "insert", "b", exclude=["created_at", "name"])
    recorder.listen("a", "b")
    with Session() as s:
        s.add(models.User(email="a@example.com"))
        s.commit()
    a, b = recorder.events
    assert set(a.data) == {"id", "email"}
    assert set(b.data) == {"id", "email", "plan"}


def test_unknown_field_is_named(bus, Session, models):
    signalbus.bind(models.User, "insert", "user_registered", fields=["emial"])
    with Session() as s:
        s.add(models.User(email="a@example.com"))
        with pytest.raises(signalbus.BindingError) as info:
            s.commit()
    assert "has no column attribute 'emial' (in fields=)" in str(info.value)
    assert "email" in str(info.value)


def test_normalisation_equals_a_json_round_trip(bus, Session, models, recorder):
    signalbus.bind(models.Order, "insert", "order_placed")
    recorder.listen("order_placed")
    ref = uuid.uuid4()
    placed = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    with Session() as s:
        s.add(models.Order(total=decimal.Decimal("9.90"), ref=ref, placed_at=placed,
                           extra={"tags": ["a", "b"], "n": 1}))
        s.commit()
    (event,) = recorder.events
    payload = event.to_dict()
    assert json.loads(json.dumps(payload)) == json.loads(json.dumps(payload, default=str))
    assert event.data["total"] == "9.90"
    assert event.data["ref"] == str(ref)
    assert dt.datetime.fromisoformat(event.data["placed_at"]) == placed
    assert event.data["color"] == "red"
    assert event.data["extra"] == {"tags": ("a", "b"), "n": 1}
    # what the outbox would store and read back is the same event
    assert Event.from_dict(json.loads(json.dumps(payload))) == event
    with pytest.raises(TypeError):
        event.data["total"] = "0"  # type: ignore[index]


def test_unserialisable_column_type_fails_the_flush_with_a_named_error(engine, recorder):
    class Base(DeclarativeBase):
        pass

    class Blob(Base):
        __tablename__ = "blobs"
        id: Mapped[int] = mapped_column(primary_key=True)
        thing: Mapped[object] = mapped_column(PickleType)

    class LeanBlob(Base):  # the same columns, bound as the error says to
        __tablename__ = "lean_blobs"
        id: Mapped[int] = mapped_column(primary_key=True)
        thing: Mapped[object] = mapped_column(PickleType)

    Base.metadata.create_all(engine)
    try:
        from sqlalchemy.orm import sessionmaker

        Session = sessionmaker(engine)
        signalbus.SignalBus().attach(Session, plugins=False)
        signalbus.bind(Blob, "insert", "blob_added")
        recorder.listen("blob_added")
        with Session() as s:
            s.add(Blob(thing={1, 2}))
            with pytest.raises(UnserialisableValue) as info:
                s.commit()
            message = str(info.value)
            assert "Blob.thing" in message
            assert "PickleType" in message
            assert "builtins.set" in message
            assert "exclude=['thing']" in message
            s.rollback()
        with Session() as s:
            assert s.query(Blob).count() == 0  # the transaction failed loudly
        assert recorder.calls == []
        # the documented fix works
        signalbus.bind(LeanBlob, "insert", "blob_added_lean", exclude=["thing"])
        recorder.listen("blob_added_lean")
        with Session() as s:
            s.add(LeanBlob(id=7, thing={1, 2}))
            s.commit()
        [event] = recorder.of("blob_added_lean")
        assert event.pk == 7 and dict(event.data) == {"id": 7}
    finally:
        Base.metadata.drop_all(engine)


def test_an_unserialisable_value_next_to_an_expired_attribute_is_named(mode_tables,
                                                                      attach_recording):
    # the row reader stops at the first value it refuses, before it reaches an expired
    # attribute: capture then loads what is missing and names the column
    class Base(DeclarativeBase):
        pass

    class Crate(Base):
        __tablename__ = "crates"
        id: Mapped[int] = mapped_column(primary_key=True)
        thing: Mapped[object] = mapped_column(PickleType)
        label: Mapped[str] = mapped_column(String(20))

    engine = mode_tables(Base.metadata)
    signalbus.bind(Crate, "update", "crate_changed")
    Session, delivered = attach_recording(engine)
    with Session() as s:
        s.add(Crate(id=1, thing=1, label="a"))
        s.commit()
    with Session() as s:
        crate = s.get(Crate, 1)
        s.expire(crate, ["label"])
        crate.thing = {1, 2}
        with pytest.raises(UnserialisableValue, match=r"Crate\.thing .*builtins\.set"):
            s.commit()
        s.rollback()
    with Session() as s:
        assert s.get(Crate, 1).thing == 1  # the transaction failed loudly
    assert delivered() == []


def test_emit_data_is_normalised_and_checked(bus):
    signalbus.signal("report_ready")
    event = bus.emit("report_ready", {"at": dt.date(2026, 1, 2), "n": decimal.Decimal("1.5")})
    assert dict(event.data) == {"at": "2026-01-02", "n": "1.5"}
    with pytest.raises(UnserialisableValue) as info:
        bus.emit("report_ready", {"bad": object()})
    assert "emit('report_ready') data['bad']" in str(info.value)


def test_row_event_makes_the_event_the_dataclass_makes() -> None:
    import dataclasses
    import datetime as dt

    from signalbus.events import EMPTY, Event, FrozenDict, row_event

    at = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    data = FrozenDict({"id": 1})
    made = row_event("i", "s", "m:C", "insert", 1, data, EMPTY, at)
    assert type(made) is Event
    assert made == Event(id="i", signal="s", model="m:C", op="insert", pk=1, data=data,
                         occurred_at=at)
    assert (made.source, made.attempt, made.instance) == ("orm", 1, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.id = "j"  # type: ignore[misc]


_OFFSETS = st.one_of(
    st.none(),
    st.timedeltas(min_value=dt.timedelta(hours=-23, minutes=-59),
                  max_value=dt.timedelta(hours=23, minutes=59)).map(dt.timezone),
    st.sampled_from([dt.UTC, zoneinfo.ZoneInfo("Europe/Paris"),
                     zoneinfo.ZoneInfo("America/St_Johns")]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.datetimes(timezones=_OFFSETS, allow_imaginary=True), min_size=1,
                max_size=6))
def test_datetimes_are_normalised_exactly_as_isoformat_writes_them(values) -> None:
    # the cached per-minute text (signalbus.events.minute_texts) must give isoformat()'s
    # text whatever came before: same minute, other offsets, fold, no microseconds
    for value in values + values:
        assert signalbus.events.normalise(value) == value.isoformat()
    small = signalbus.events.MinuteTexts(kept=2)  # starting over, every few values
    for value in values + values:
        assert small.text(value) == value.isoformat()
        assert len(small.parts) <= 2


@settings(max_examples=300, deadline=None)
@given(st.datetimes(timezones=_OFFSETS, allow_imaginary=True,
                    min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)),
       st.lists(st.integers(min_value=-150_000_000, max_value=150_000_000), min_size=1,
                max_size=12))
def test_values_around_a_minute_are_normalised_exactly_as_isoformat_writes_them(
        base, steps) -> None:
    # values a few microseconds to a few minutes apart, as rows written together: the
    # latest minute kept at hand (MinuteTexts.last) must give isoformat()'s text on
    # either side of its bounds, and follow the latest minute seen twice
    texts = signalbus.events.MinuteTexts()
    values = [base + dt.timedelta(microseconds=step) for step in steps]
    for value in values + values[::-1] + values:
        assert texts.text(value) == value.isoformat()
    start, end, zone = texts.last[2:]
    if start is not None:
        assert zone is values[0].tzinfo
        assert end - start == dt.timedelta(minutes=1) and start.second == start.microsecond == 0
        # the latest of the minutes that were seen twice (a value with microseconds)
        twice = [v.replace(second=0, microsecond=0) for v in values if v.microsecond]
        assert start == max(twice)


def test_the_last_minute_of_year_9999_is_normalised_as_isoformat_writes_it() -> None:
    texts = signalbus.events.MinuteTexts()
    for value in [dt.datetime.max, dt.datetime.max - dt.timedelta(seconds=1),
                  dt.datetime.max.replace(tzinfo=dt.UTC), dt.datetime.max]:
        assert texts.text(value) == value.isoformat()


_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=5),
    st.floats(allow_nan=False, allow_infinity=False), st.decimals(allow_nan=False,
                                                                  allow_infinity=False),
    st.uuids(), st.datetimes(timezones=_OFFSETS), st.dates(), st.binary(max_size=4),
    st.lists(st.integers(), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), _VALUES, min_size=1, max_size=6),
       st.data())
def test_a_row_reader_normalises_as_normalise_does(row, data) -> None:
    # the generated reader (signalbus.events.row_reader) against the rule it writes out:
    # any attribute name (quotes, backslashes, newlines), in the keys' order
    keys = tuple(data.draw(st.permutations(sorted(row))))
    read = signalbus.events.row_reader(keys)
    got = read(row)
    assert type(got) is signalbus.events.FrozenDict
    assert list(got.items()) == [(k, signalbus.events.normalise(row[k])) for k in keys]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), _VALUES, min_size=1, max_size=6),
       st.data())
def test_a_keyed_row_reader_also_returns_the_key_values_as_they_are(row, data) -> None:
    # capture's reader of inserted and updated rows: the data as row_reader makes it,
    # and the primary key's values untouched, key columns in the data or not
    keys = tuple(data.draw(st.permutations(sorted(row))))
    captured = keys[:data.draw(st.integers(0, len(keys)))]
    pk_keys = tuple(data.draw(st.lists(st.sampled_from(keys), min_size=1, unique=True)))
    got, pk = signalbus.events.keyed_row_reader(captured, pk_keys)(row)
    assert type(got) is signalbus.events.FrozenDict
    assert got == signalbus.events.row_reader(captured)(row)
    assert len(pk) == len(pk_keys)
    assert all(v is row[k] for v, k in zip(pk, pk_keys, strict=True))


class _Colour(enum.StrEnum):
    RED = "red"


class _Size(enum.IntEnum):
    BIG = 3


_EXPECTED_TYPES = st.sampled_from([str, int, bool, dt.datetime, float, decimal.Decimal,
                                   dt.date, bytes])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8),
                       _VALUES | st.sampled_from([_Colour.RED, _Size.BIG]),
                       min_size=1, max_size=6),
       st.data())
def test_a_row_reader_given_expected_types_reads_what_it_reads_without(row, data) -> None:
    # the column types' Python types a plan passes (tested first: an identity test, or
    # the datetime converter called directly) change how fast a value is read, never
    # what it is read as: any value, under any expected type, str subclasses included
    keys = tuple(data.draw(st.permutations(sorted(row))))
    expect = data.draw(st.dictionaries(st.sampled_from(keys), _EXPECTED_TYPES))
    want = [(k, signalbus.events.normalise(row[k])) for k in keys]
    got = signalbus.events.row_reader(keys, expect)(row)
    assert type(got) is signalbus.events.FrozenDict
    assert list(got.items()) == want
    pk_keys = (keys[0],)
    keyed, pk = signalbus.events.keyed_row_reader(keys, pk_keys, expect)(row)
    assert list(keyed.items()) == want and pk[0] is row[keys[0]]


def test_a_plan_reads_its_columns_with_their_column_types_expected() -> None:
    from signalbus.capture.plans import plans

    class Base(DeclarativeBase):
        pass

    class Stamp(Base):
        __tablename__ = "stamps"
        id: Mapped[int] = mapped_column(primary_key=True)
        label: Mapped[str] = mapped_column(String(10))
        at: Mapped[dt.datetime]
        thing: Mapped[object] = mapped_column(PickleType)  # says no Python type

    signalbus.bind(Stamp, "insert", "stamp_added", exclude=["thing"])
    plan = plans.commit(Stamp, ())
    for read in (plan.read, plan.read_keyed):
        names = read.__code__.co_names
        assert {"int", "str", "datetime", "datetime_text"} <= set(names)
    at = dt.datetime(2026, 11, 30, 12, 0, 1, 5, tzinfo=dt.UTC)
    assert plan.read_keyed({"id": 1, "label": "x", "at": at}) == (
        {"id": 1, "label": "x", "at": at.isoformat()}, (1,))


def test_a_row_reader_given_expected_types_refuses_what_it_refuses_without() -> None:
    for kind in (str, int, bool, dt.datetime):
        read = signalbus.events.row_reader(("a",), {"a": kind})
        with pytest.raises(TypeError):
            read({"a": object()})
        with pytest.raises(TypeError):
            read({"a": float("inf")})
        with pytest.raises(KeyError):
            read({})


def test_a_row_reader_keeps_names_python_would_rewrite_or_refuse() -> None:
    # written as keyword arguments where that is safe: not a keyword, not a name the
    # compiler would normalise (NFKC turns "\ufb01le" into "file")
    row = {"\ufb01le": 1, "class": 2, "id": 3, "a b": 4, "_x": 5}
    assert signalbus.events.row_reader(tuple(row))(row) == row
    assert signalbus.events.row_reader(("\ufb01le", "id"))(row) == {"\ufb01le": 1, "id": 3}
    assert signalbus.events.row_reader(("_x", "id"))(row) == {"_x": 5, "id": 3}


def test_a_row_reader_raises_keyerror_and_typeerror_for_capture_to_handle() -> None:
    read = signalbus.events.row_reader(("a", "b"))
    with pytest.raises(KeyError):
        read({"a": 1})  # capture loads an expired attribute on KeyError
    with pytest.raises(TypeError):
        read({"a": 1, "b": object()})  # capture names the column on TypeError
    with pytest.raises(TypeError):
        read({"a": 1, "b": float("nan")})
    assert signalbus.events.row_reader(())({"a": 1}) == {}
    keyed = signalbus.events.keyed_row_reader(("a",), ("id",))
    with pytest.raises(KeyError):
        keyed({"a": 1})  # a key column missing too
    with pytest.raises(TypeError):
        keyed({"a": object(), "id": 1})
