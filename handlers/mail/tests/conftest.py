"""A small Flask + Flask-SQLAlchemy host app for the signalbus-mail tests."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from signalbus_mail import receiver_name
from signalbus_mail.testing import SMTPServer
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus
import signalbus.outbox
import signalbus.sqlite
from conftest import start_host  # the root conftest (rootdir on sys.path)
from signalbus.events import normalise_payload

SENDER = "Signalbus <noreply@example.com>"
ADMINS = ["ops@example.com", "Lead Admin <lead@example.com>"]
_counter = itertools.count()


@dataclasses.dataclass
class Host:
    """What a test needs of the host app."""

    app: Flask
    db: Any
    User: Any
    bus: signalbus.SignalBus

    def register(self, email: str, name: str | None = "Ada") -> Any:
        """Commit a new user (sends ``user_registered``)."""
        with self.app.app_context():
            user = self.User(email=email, name=name)
            self.db.session.add(user)
            self.db.session.commit()
            return user.id

    def receiver(self, rule: str, signal: str | None = None) -> Callable[..., Any]:
        """The receiver function the mail plugin connected for ``rule``."""
        rec = self.bus.runtime(self.app).find_receiver(signal or rule, receiver_name(rule))
        assert rec is not None, f"no mail receiver for rule {rule!r}"
        return rec.fn


def make_event(signal: str, data: dict[str, Any], *, event_id: str | None = None,
               pk: Any = 1) -> signalbus.Event:
    """An event as the bus would deliver it."""
    return signalbus.Event(
        id=event_id or str(uuid.uuid4()),
        signal=signal,
        model="app.models:User",
        op="insert",
        pk=pk,
        data=normalise_payload(data, "test data"),
        occurred_at=dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC),
    )


@pytest.fixture
def app_root(tmp_path: Path) -> Path:
    """The host app's root folder (its ``templates/`` may override the plugin's)."""
    root = tmp_path / "host"
    root.mkdir()
    return root


@pytest.fixture
def make_host(app_root: Path, smtp_server: SMTPServer) -> Callable[..., Host]:
    """Build a host app sending to ``smtp_server``; keyword arguments go to its config."""

    def make(*, bind_fields: list[str] | None = None, **config: Any) -> Host:
        app = Flask(f"mail_host_{next(_counter)}", root_path=str(app_root))
        app.config.update(
            SQLALCHEMY_DATABASE_URI=f"sqlite:///{app_root / 'app.sqlite'}",
            SIGNALBUS_PLUGINS=["mail"],
            MAIL_DEFAULT_SENDER=SENDER,
            SIGNALBUS_MAIL_ADMINS=list(ADMINS),
        )
        smtp_server.configure(app)
        app.config.update(config)

        class Base(DeclarativeBase):
            pass

        db = SQLAlchemy(model_class=Base)

        class User(db.Model):  # type: ignore[name-defined,misc]
            __tablename__ = "users"
            id: Mapped[int] = mapped_column(primary_key=True)
            email: Mapped[str]
            name: Mapped[str | None]

        signalbus.bind(User, "insert", "user_registered", fields=bind_fields)
        signalbus.signal("issue_raised")
        bus = start_host(app, db)
        return Host(app, db, User, bus)

    return make


@pytest.fixture
def host(make_host: Callable[..., Host]) -> Host:
    """The host app with the default mail rules."""
    return make_host()
