"""The Flask extension: init_app, config, Flask-SQLAlchemy wiring, several apps."""

from __future__ import annotations

import warnings

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus
from signalbus import SignalBus


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Account(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(100))


def make_app(database_url: str, **config) -> Flask:
    from conftest import flask_sqlalchemy_config  # the root conftest (rootdir on sys.path)

    app = Flask(__name__)
    app.config["SIGNALBUS_PLUGINS"] = []  # hermetic: not the plugins installed in the venv
    app.config.update(flask_sqlalchemy_config(database_url))
    app.config.update(config)
    db.init_app(app)
    with app.app_context():
        signalbus.sqlite.configure(db.engine)
        db.create_all()
    return app


@pytest.fixture
def app_factory(database_url):
    made = []

    def factory(**config):
        app = make_app(database_url, **config)
        made.append(app)
        return app

    yield factory
    for app in made:
        with app.app_context():
            db.drop_all()
            db.engine.dispose()


def _register(app, email):
    with app.app_context():
        db.session.add(Account(email=email))
        db.session.commit()


def test_init_app_wires_flask_sqlalchemy(app_factory, signalbus_capture):
    signalbus.bind(Account, "insert", "account_opened")
    app = app_factory()
    bus = SignalBus()
    bus.init_app(app, db=db)
    assert app.extensions["signalbus"] is bus
    assert app.config["SIGNALBUS_DELIVERY"] == "inline"  # setdefault
    with app.app_context():
        db.session.add(Account(email="rolled@x"))
        db.session.flush()
        db.session.rollback()
    _register(app, "a@x")
    signalbus_capture.assert_sent("account_opened", email="a@x")
    assert signalbus_capture.names == ["account_opened"]


def test_constructor_forms(app_factory):
    app = app_factory(SIGNALBUS_DELIVERY="inline")
    bus = SignalBus(app, db=db)
    assert app.extensions["signalbus"] is bus
    assert bus.runtime(app).settings.delivery == "inline"


def test_second_registration_is_refused(app_factory):
    app = app_factory()
    SignalBus().init_app(app, db=db)
    with pytest.raises(RuntimeError) as info:
        SignalBus().init_app(app, db=db)
    assert str(info.value) == (
        "A 'SignalBus' instance has already been registered on this Flask app. Import and "
        "use that instance instead."
    )


def test_bad_delivery_setting_is_named(app_factory):
    app = app_factory(SIGNALBUS_DELIVERY="carrier-pigeon")
    with pytest.raises(signalbus.ConfigurationError) as info:
        SignalBus().init_app(app, db=db)
    assert str(info.value) == (
        "SIGNALBUS_DELIVERY is 'carrier-pigeon'; use one of 'inline', 'outbox', 'celery'."
    )
    assert "signalbus" not in app.extensions


def test_two_apps_in_one_process_are_kept_apart(app_factory):
    """One db, one bus object, two apps: each event reaches its own app's receivers."""
    signalbus.bind(Account, "insert", "account_opened")
    bus = SignalBus()
    first, second = app_factory(), app_factory()
    bus.init_app(first, db=db)
    bus.init_app(second, db=db)
    got = {"first": [], "second": []}
    bus.runtime(first).connect(
        "account_opened", lambda sender, event, **kw: got["first"].append(event.data["email"]),
        plugin="test")
    bus.runtime(second).connect(
        "account_opened", lambda sender, event, **kw: got["second"].append(event.data["email"]),
        plugin="test")
    _register(first, "one@x")
    _register(second, "two@x")
    _register(first, "three@x")
    assert got == {"first": ["one@x", "three@x"], "second": ["two@x"]}


def test_new_app_per_test_never_connects_twice(app_factory):
    signalbus.bind(Account, "insert", "account_opened")
    calls = []

    @signalbus.receiver("account_opened")
    def declared(sender, event, **kw):
        calls.append(event.id)

    for _ in range(3):
        app = app_factory()
        signalbus.SignalBus().init_app(app, db=db)
    _register(app, "a@x")
    assert len(calls) == 1


def test_default_bus_and_module_level_init_app(database_url):
    app = make_app(database_url)
    try:
        signalbus.init_app(app, db=db)
        assert app.extensions["signalbus"] is signalbus.bus
        signalbus.signal("hello")
        with app.app_context():
            event = signalbus.emit("hello", {"who": "world"})
        assert event.data["who"] == "world"
    finally:
        with app.app_context():
            db.drop_all()
            db.engine.dispose()


def test_sqlite_without_real_transactions_warns_once(tmp_path):
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'w.sqlite'}"
    plain = SQLAlchemy()
    plain.init_app(app)
    with pytest.warns(signalbus.sqlite.SQLiteTransactionWarning) as record:
        SignalBus().init_app(app, db=plain)
    assert "signalbus.sqlite.configure(engine)" in str(record[0].message)
    app2 = Flask(__name__)
    app2.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'w.sqlite'}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with app.app_context():
            from signalbus.sqlite import check_engine

            check_engine(plain.engine)  # once per engine


def test_an_app_is_not_kept_alive_by_the_bus(tmp_path):
    import gc
    import weakref

    bus = SignalBus()
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'gc.sqlite'}",
                      SIGNALBUS_PLUGINS=[])
    bus.init_app(app)

    def receiver_closing_over(app):  # plugins' receivers often hold their app
        return lambda sender, event, **kw: app.name

    bus.runtime(app).connect("account_opened", receiver_closing_over(app),
                             name="tests.closure", plugin="test")
    ref = weakref.ref(app)
    del app
    gc.collect()
    assert ref() is None


def test_init_app_without_db_finds_the_apps_flask_sqlalchemy(tmp_path, signalbus_capture):
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy.orm import DeclarativeBase, mapped_column

    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(model_class=Base)

    class Pet(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "found_db_pets"
        id: Mapped[int] = mapped_column(primary_key=True)

    signalbus.bind(Pet, "insert", "pet_adopted")
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'pets.sqlite'}",
                      SIGNALBUS_PLUGINS=[])
    db.init_app(app)
    with app.app_context():
        signalbus.sqlite.configure(db.engine)
        db.create_all()
    signalbus.SignalBus().init_app(app)  # no db=
    with app.app_context():
        db.session.add(Pet(id=7))
        db.session.commit()
        db.engine.dispose()
    assert signalbus_capture.assert_sent("pet_adopted", id=7).pk == 7


def test_init_app_without_any_db_and_with_bindings_says_db(tmp_path, caplog):
    from sqlalchemy.orm import DeclarativeBase, mapped_column

    class Base(DeclarativeBase):
        pass

    class Toy(Base):
        __tablename__ = "found_db_toys"
        id: Mapped[int] = mapped_column(primary_key=True)

    signalbus.bind(Toy, "insert", "toy_made")
    app = Flask("toys")
    app.config.update(SIGNALBUS_PLUGINS=[])
    signalbus.SignalBus().init_app(app)
    (record,) = [r for r in caplog.records if r.name == "signalbus"]
    assert record.levelname == "WARNING"
    message = record.getMessage()
    assert message.startswith(
        "signalbus.init_app(app) found no Flask-SQLAlchemy extension on app 'toys' and was "
        "given no db=, so the bindings (bind('")
    assert message.endswith(
        "capture nothing in it. Call db.init_app(app) before signalbus.init_app(app), or "
        "pass the extension: signalbus.init_app(app, db=db). (Plain SQLAlchemy sessions: "
        "bus.attach(sessionmaker), then bus.init_app(app).)")


def test_plain_sqlalchemy_sessions_in_a_flask_app(tmp_path, signalbus_capture):
    """The fix the error above names works: attach, then init_app; commits inside the
    app context go to the app's bus."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    class Base(DeclarativeBase):
        pass

    class Kite(Base):
        __tablename__ = "found_db_kites"
        id: Mapped[int] = mapped_column(primary_key=True)

    engine = signalbus.sqlite.configure(create_engine(f"sqlite:///{tmp_path / 'k.sqlite'}"))
    Base.metadata.create_all(engine)
    signalbus.bind(Kite, "insert", "kite_flown")
    Session = sessionmaker(engine)
    bus = signalbus.SignalBus()
    bus.attach(Session, plugins=False)
    app = Flask("kites")
    app.config.update(SIGNALBUS_PLUGINS=[])
    bus.init_app(app)
    seen = []
    bus.runtime(app).connect("kite_flown", lambda sender, event, **kw: seen.append(event.pk),
                             name="tests.kites", plugin="test")
    with app.app_context(), Session() as session:
        session.add(Kite(id=3))
        session.commit()
    engine.dispose()
    assert seen == [3]
    signalbus_capture.assert_sent("kite_flown", id=3)


_PLAIN_APP = """
import sys
import signalbus
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

class Base(DeclarativeBase):
    pass

class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(50))

signalbus.bind(Note, "insert", "note_written")
got = []
signalbus.receiver("note_written")(lambda sender, event, **kw: got.append(event.data["text"]))
engine = create_engine("sqlite://")
Base.metadata.create_all(engine)
factory = sessionmaker(engine)
signalbus.attach(factory, plugins=False)
with factory() as session:
    session.add(Note(text="hello"))
    session.commit()
print(got, "flask" in sys.modules)
"""


def test_a_plain_sqlalchemy_app_delivers_without_importing_flask() -> None:
    # signalbus asks for the current Flask app twice per transaction: in a process that
    # never imported Flask, the answer is "none" without importing it
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _PLAIN_APP], capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["['hello']", "False"]
