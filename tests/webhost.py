"""A Flask host with the outbox page registered, shared by the page's tests
(``test_web.py``, ``test_web_browser.py``): members join, ``welcome`` always succeeds,
``notify_slack`` fails with an error holding secrets for the emails in :data:`FAIL`.

Signed in means the session's ``user`` is ``"admin"`` (``/login`` sets it): the
page's authorization check is ``session.get("user") == "admin"``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, session
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String, insert
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus
import signalbus.outbox
import signalbus.sqlite
import signalbus.web
from signalbus import Event, Permanent, SignalBus

SECRET_ERROR = ("posting to https://user:pw@hooks.example/T/B/x?token=abc failed with "
                "Authorization: Bearer xyz123456789")
"""What ``notify_slack`` raises with: a webhook URL with credentials, a token, a Bearer."""
SECRETS = ("user:pw", "hooks.example/T", "/T/B/x", "token=abc", "xyz123456789", "pw@")
"""Pieces of :data:`SECRET_ERROR` the page must never show."""


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Member(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "web_members"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(100))
    password: Mapped[str] = mapped_column(String(100), default="hunter2")


FAIL: set[str] = set()
"""Emails ``notify_slack`` fails for (retried; ``PERMANENT`` ones dead at once)."""
PERMANENT: set[str] = set()
CALLS: list[tuple[str, str]] = []


def welcome(sender: Any, event: Event, **kw: Any) -> None:
    CALLS.append(("welcome", event.data["email"]))


def notify_slack(sender: Any, event: Event, **kw: Any) -> None:
    email = event.data["email"]
    if email in PERMANENT:
        raise Permanent(SECRET_ERROR)
    if email in FAIL:
        raise RuntimeError(SECRET_ERROR)
    CALLS.append(("notify_slack", email))


def authorize() -> bool:
    return session.get("user") == "admin"


def make_app(database_url: str, **config: Any) -> Flask:
    from conftest import flask_sqlalchemy_config  # the root conftest (rootdir on sys.path)

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test only",
        SIGNALBUS_PLUGINS=[],
        SIGNALBUS_DELIVERY="outbox",
        SIGNALBUS_OUTBOX_MAX_ATTEMPTS=3,
        SIGNALBUS_OUTBOX_BACKOFF_BASE=600,  # a failure waits: the page shows it failing
        SIGNALBUS_OUTBOX_NOTIFY=False,
    )
    app.config.update(flask_sqlalchemy_config(database_url))
    app.config.update(config)
    db.init_app(app)
    with app.app_context():
        signalbus.sqlite.configure(db.engine)
        db.drop_all()
        db.create_all()
        signalbus.outbox.drop_all(db.engine)
        signalbus.outbox.create_all(db.engine)
    signalbus.bind(Member, "insert", "web_member_joined")
    SignalBus().init_app(app, db=db)
    runtime = app.extensions["signalbus"].runtime(app)
    runtime.connect("web_member_joined", welcome, name="tests.webhost:welcome")
    runtime.connect("web_member_joined", notify_slack, name="tests.webhost:notify_slack")
    app.register_blueprint(signalbus.web.blueprint(authorize=authorize),
                           url_prefix="/ops/outbox")

    @app.get("/login")
    def login() -> str:
        session["user"] = "admin"
        return "signed in"

    CALLS.clear()
    FAIL.clear()
    PERMANENT.clear()
    return app


def close(app: Flask) -> None:
    with app.app_context():
        signalbus.outbox.drop_all(db.engine)
        db.drop_all()
        for engine in db.engines.values():
            engine.dispose()


@contextmanager
def host(database_url: str, **config: Any) -> Iterator[Flask]:
    app = make_app(database_url, **config)
    try:
        yield app
    finally:
        close(app)


def join(app: Flask, *emails: str) -> None:
    with app.app_context():
        for email in emails:
            db.session.add(Member(email=email))
        db.session.commit()


def seed_secret_event(app: Flask) -> str:
    """An event row whose payload holds columns named like redacted ones and a webhook
    URL in a value (as a row written by another tool could, naming its ``event_id`` as
    the schema asks): its event id."""
    event_id = "0badc0de-0000-4000-8000-000000000001"
    payload = {
        "id": event_id, "signal": "web_member_joined", "model": None, "op": "insert",
        "pk": 99, "source": "emit", "occurred_at": "2024-05-01T12:00:00+00:00",
        "context": {}, "changes": {},
        "data": {"email": "z@example.com", "password": "hunter2", "api_token": "abc",
                 "hook": "https://user:pw@hooks.example/T/B/x?token=abc"},
    }
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(insert(signalbus.outbox.outbox),
                         [{"row_key": None, "event_id": event_id,
                           "payload": json.loads(json.dumps(payload))}])
    return event_id
