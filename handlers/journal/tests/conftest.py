"""A Flask + Flask-SQLAlchemy host app with the journal plugin, and hand-made events."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import signalbus_journal
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from signalbus_journal.cli import journal as journal_cli
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus
import signalbus.outbox
import signalbus.sqlite
from signalbus import Event
from signalbus.events import normalise_payload


@dataclasses.dataclass
class Host:
    """One test's host app: the app, its ``db``, its ``User`` model, its bus, the journal dir."""

    app: Flask
    db: Any
    User: Any
    bus: signalbus.SignalBus
    directory: Path

    def register(self, email: str, plan: str = "free") -> int:
        with self.app.app_context():
            user = self.User(email=email, name="Ann", plan=plan)
            self.db.session.add(user)
            self.db.session.commit()
            return int(user.id)

    def change_plan(self, user_id: int, plan: str) -> None:
        with self.app.app_context():
            self.db.session.get(self.User, user_id).plan = plan
            self.db.session.commit()

    def delete(self, user_id: int) -> None:
        with self.app.app_context():
            self.db.session.delete(self.db.session.get(self.User, user_id))
            self.db.session.commit()

    def files(self) -> list[str]:
        return sorted(p.name for p in self.directory.iterdir()) if self.directory.exists() else []

    def lines(self) -> list[bytes]:
        """Every line of every journal file, in file order."""
        out: list[bytes] = []
        for name in self.files():
            out.extend((self.directory / name).read_bytes().splitlines(keepends=True))
        return out

    def export(self, *args: str) -> Any:
        """Run ``flask signalbus journal export ARGS`` against this app."""
        return self.app.test_cli_runner().invoke(journal_cli, ["export", *args])


def build_host(database_url: str, tmp_path: Path, **config: Any) -> Host:
    from conftest import flask_sqlalchemy_config, start_host  # the root conftest

    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(model_class=Base)

    class User(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str] = mapped_column(String(200))
        name: Mapped[str | None] = mapped_column(String(200))
        plan: Mapped[str | None] = mapped_column(String(20))

    signalbus.bind(User, "insert", "user_registered")
    signalbus.bind(User, "update", "user_plan_changed", when=signalbus.changed("plan"))
    signalbus.bind(User, "delete", "user_deleted")

    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(flask_sqlalchemy_config(database_url))
    app.config["SIGNALBUS_PLUGINS"] = ["journal"]
    app.config["SIGNALBUS_PLUGINS_STRICT"] = True
    app.config["SIGNALBUS_JOURNAL_DIR"] = str(tmp_path / "journal")
    app.config.update(config)
    bus = start_host(app, db, fresh=True)
    directory = Path(signalbus_journal.journal_dir(app.config, app))
    return Host(app, db, User, bus, directory)


@pytest.fixture
def make_host(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Host]]:
    """Build host apps with extra config; their tables are dropped afterwards."""
    made: list[Host] = []

    def factory(**config: Any) -> Host:
        host = build_host(database_url, tmp_path, **config)
        made.append(host)
        return host

    yield factory
    for host in made:
        with host.app.app_context():
            host.db.session.remove()
            host.db.drop_all()
            host.db.engine.dispose()


@pytest.fixture
def host(make_host: Callable[..., Host]) -> Host:
    return make_host()


def make_event(signal: str = "user_registered", *, at: str | dt.datetime = "2024-05-01T12:00:00",
               **data: Any) -> Event:
    """A hand-made event (as the outbox would read back), for tests without a database."""
    occurred_at = dt.datetime.fromisoformat(at) if isinstance(at, str) else at
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=dt.UTC)
    return Event(
        id=str(uuid.uuid4()), signal=signal, model="app.models:User", op="insert", pk=1,
        data=normalise_payload(data or {"id": 1}, "test data"),
        occurred_at=occurred_at,
    )


@pytest.fixture
def event_factory() -> Callable[..., Event]:
    return make_event
