"""A small Flask + Flask-SQLAlchemy host app for the signalbus-slack tests."""

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
from signalbus_slack import receiver_name
from signalbus_slack.testing import SlackWebhook
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus
import signalbus.outbox
import signalbus.sqlite
from conftest import start_host  # the root conftest (rootdir on sys.path)
from signalbus.events import normalise_payload

_counter = itertools.count()


@dataclasses.dataclass
class Host:
    """What a test needs of the host app."""

    app: Flask
    db: Any
    User: Any
    bus: signalbus.SignalBus

    def register(self, email: str, name: str | None = "Ada", plan: str | None = None) -> Any:
        """Commit a new user (sends ``user_registered``)."""
        with self.app.app_context():
            user = self.User(email=email, name=name, plan=plan)
            self.db.session.add(user)
            self.db.session.commit()
            return user.id

    def receiver(self, rule: str, signal: str | None = None) -> Callable[..., Any]:
        """The receiver function the Slack plugin connected for ``rule``."""
        rec = self.bus.runtime(self.app).find_receiver(signal or rule, receiver_name(rule))
        assert rec is not None, f"no Slack receiver for rule {rule!r}"
        return rec.fn


def make_event(signal: str, data: dict[str, Any], *, pk: Any = 7) -> signalbus.Event:
    """An event as the bus would deliver it."""
    return signalbus.Event(
        id=str(uuid.uuid4()),
        signal=signal,
        model="app.models:User",
        op="insert",
        pk=pk,
        data=normalise_payload(data, "test data"),
        occurred_at=dt.datetime.now(dt.UTC),
    )


@pytest.fixture
def make_host(tmp_path: Path, slack_webhook: SlackWebhook) -> Callable[..., Host]:
    """Build a host app posting to ``slack_webhook``; keyword arguments go to its config."""

    def make(**config: Any) -> Host:
        app = Flask(f"slack_host_{next(_counter)}", root_path=str(tmp_path))
        app.config.update(
            SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.sqlite'}",
            SIGNALBUS_PLUGINS=["slack"],
        )
        slack_webhook.configure(app)
        app.config.update(config)

        class Base(DeclarativeBase):
            pass

        db = SQLAlchemy(model_class=Base)

        class User(db.Model):  # type: ignore[name-defined,misc]
            __tablename__ = "users"
            id: Mapped[int] = mapped_column(primary_key=True)
            email: Mapped[str]
            name: Mapped[str | None]
            plan: Mapped[str | None]

        signalbus.bind(User, "insert", "user_registered")
        signalbus.signal("issue_raised")
        bus = start_host(app, db)
        return Host(app, db, User, bus)

    return make


@pytest.fixture
def host(make_host: Callable[..., Host]) -> Host:
    """The host app with the default Slack rules."""
    return make_host()
