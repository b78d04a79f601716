"""The template's test: a real app, a real commit, the shipped ``signalbus_capture``."""

from __future__ import annotations

import logging

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "hello_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))


@pytest.fixture
def app(tmp_path):
    signalbus.bind(User, "insert", "user_registered")
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'hello.sqlite'}",
        SIGNALBUS_PLUGINS=["hello"],  # only this plugin, whatever else is installed
        SIGNALBUS_HELLO_GREETING="Welcome",
    )
    db.init_app(app)
    with app.app_context():
        signalbus.sqlite.configure(db.engine)
        db.create_all()
    signalbus.SignalBus().init_app(app, db=db)
    return app


def test_greets_a_registered_user(app, signalbus_capture, caplog):
    with caplog.at_level(logging.INFO, logger="signalbus_hello"):
        with app.app_context():
            db.session.add(User(email="ada@example.com"))
            db.session.commit()
    event = signalbus_capture.assert_sent("user_registered", email="ada@example.com")
    assert f"Welcome, ada@example.com! (event {event.id})" in caplog.messages


def test_nothing_for_a_rolled_back_registration(app, signalbus_capture, caplog):
    with caplog.at_level(logging.INFO, logger="signalbus_hello"):
        with app.app_context():
            db.session.add(User(email="ghost@example.com"))
            db.session.flush()
            db.session.rollback()
    signalbus_capture.assert_not_sent("user_registered")
    assert caplog.messages == []


def test_listed_as_loaded(app):
    (record,) = app.extensions["signalbus"].runtime(app).plugins
    assert (record.name, record.distribution, record.status) == (
        "hello", "signalbus-hello", "loaded")
    assert record.details == ["greets with 'Welcome'"]
