"""The pytest plugin, tested in real pytest runs with ``pytester``."""

from __future__ import annotations

import pytest

APP = """
import pytest
import signalbus
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(100))
    plan: Mapped[str] = mapped_column(String(20), default="free")


signalbus.bind(User, "insert", "user_registered")


@pytest.fixture
def Session():
    engine = signalbus.sqlite.configure(create_engine("sqlite://"))
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    signalbus.SignalBus().attach(factory, plugins=False)
    return factory


def register(Session, *emails, commit=True):
    with Session() as s:
        for email in emails:
            s.add(User(email=email))
        if commit:
            s.commit()
"""


@pytest.fixture
def app_module(pytester):
    pytester.makeconftest(APP)
    return pytester


def test_capture_api(app_module):
    app_module.makepyfile(
        """
        import pytest
        from conftest import register

        def test_capture(Session, signalbus_capture):
            register(Session, "rolled@x", commit=False)
            signalbus_capture.assert_not_sent("user_registered")
            register(Session, "a@x", "b@x")
            assert signalbus_capture.names == ["user_registered", "user_registered"]
            event = signalbus_capture.assert_sent("user_registered", email="b@x")
            assert event.data["email"] == "b@x"
            assert len(signalbus_capture.of("user_registered")) == 2
            with pytest.raises(AssertionError) as info:
                signalbus_capture.assert_sent("user_registered", email="c@x")
            assert "never with {'email': 'c@x'}" in str(info.value)
            with pytest.raises(AssertionError, match="'other' was not sent"):
                signalbus_capture.assert_sent("other")
            with pytest.raises(AssertionError, match="was sent 2 time"):
                signalbus_capture.assert_not_sent("user_registered")
            signalbus_capture.clear()
            assert signalbus_capture.events == []
        """
    )
    result = app_module.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_muted_marker(app_module):
    app_module.makepyfile(
        """
        import pytest
        from conftest import register

        @pytest.mark.signalbus_muted()
        def test_all(Session, signalbus_capture):
            register(Session, "a@x")
            assert signalbus_capture.events == []

        @pytest.mark.signalbus_muted("other_signal")
        def test_other(Session, signalbus_capture):
            register(Session, "a@x")
            assert signalbus_capture.names == ["user_registered"]
        """
    )
    result = app_module.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_raising_receiver_fails_the_test_unless_opted_out(app_module):
    app_module.makepyfile(
        """
        import pytest
        import signalbus
        from conftest import register

        @pytest.fixture
        def broken():
            def fail(sender, event, **kw):
                raise ValueError("template missing")
            signalbus.signal("user_registered").connect(fail)
            yield
            signalbus.signal("user_registered").disconnect(fail)

        def test_fails(Session, broken):
            register(Session, "a@x")

        @pytest.mark.signalbus_receiver_errors("log")
        def test_opted_out(Session, broken):
            register(Session, "a@x")
        """
    )
    result = app_module.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*AssertionError: receiver '*fail' raised ValueError: template missing while "
        "handling 'user_registered' event *",
    ])


def test_ini_option_logs_instead(app_module):
    app_module.makeini("[pytest]\nsignalbus_receiver_errors = log\n")
    app_module.makepyfile(
        """
        import signalbus
        from conftest import register

        def fail(sender, event, **kw):
            raise ValueError("boom")

        def test_logged(Session):
            signalbus.signal("user_registered").connect(fail)
            register(Session, "a@x")
        """
    )
    result = app_module.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


DRAIN_TESTS = '''
import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus
import signalbus.outbox


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Pet(db.Model):
    __tablename__ = "pets"
    id: Mapped[int] = mapped_column(primary_key=True)


signalbus.bind(Pet, "insert", "pet_adopted")


def make_app(tmp_path, name):
    app = Flask(name)
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / name}.sqlite",
                      SIGNALBUS_PLUGINS=[], SIGNALBUS_DELIVERY="outbox")
    db.init_app(app)
    with app.app_context():
        signalbus.sqlite.configure(db.engine)
        db.create_all()
        signalbus.outbox.create_all(db.engine)
    signalbus.SignalBus().init_app(app, db=db)
    return app


def test_drain_finds_the_tests_app(tmp_path, signalbus_capture, signalbus_drain):
    app = make_app(tmp_path, "one")
    with app.app_context():
        db.session.add(Pet(id=1))
        db.session.commit()
    stats = signalbus_drain()  # no argument, no app context
    assert signalbus_capture.names == ["pet_adopted"]


def test_two_apps_ask_which(tmp_path, signalbus_drain):
    make_app(tmp_path, "one"), make_app(tmp_path, "two")
    with pytest.raises(signalbus.ConfigurationError) as info:
        signalbus_drain()
    assert str(info.value) == (
        "signalbus_drain() found 2 outbox-mode buses set up in this test (app 'one', app "
        "'two'): pass the one to drain, signalbus_drain(app) (a Flask app, a SignalBus or "
        "a runtime).")


def test_nothing_to_drain_says_what_to_pass(signalbus_drain):
    with pytest.raises(signalbus.ConfigurationError) as info:
        signalbus_drain()
    assert "Pass the app: signalbus_drain(app)" in str(info.value)
'''


def test_drain_without_arguments_finds_the_app_or_says_what_to_pass(pytester):
    pytester.makepyfile(test_drain=DRAIN_TESTS)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
