"""A small Flask + Flask-SQLAlchemy host app with the plans plugin, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import signalbus_plans  # imported at collection: the isolation fixture keeps its signals
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus
import signalbus.outbox
import signalbus.sqlite

PLANS = {
    "free": ["newsletter"],
    "pro": ["newsletter", "priority-support", "badge-export"],
}


@dataclasses.dataclass
class Host:
    """One test's host app: the app, its ``db``, its ``User`` model and its bus."""

    app: Flask
    db: Any
    User: Any
    bus: signalbus.SignalBus

    def register(self, email: str, plan: str | None = "free", name: str = "Ann") -> int:
        """Commit a new user (``user_registered``) and return its id."""
        with self.app.app_context():
            user = self.User(email=email, name=name, plan=plan)
            self.db.session.add(user)
            self.db.session.commit()
            return int(user.id)

    def change_plan(self, user_id: int, plan: str | None) -> None:
        """Commit a plan change (``user_plan_changed``)."""
        with self.app.app_context():
            self.db.session.get(self.User, user_id).plan = plan
            self.db.session.commit()

    def delete(self, user_id: int) -> None:
        """Commit a user's deletion (``user_deleted``)."""
        with self.app.app_context():
            self.db.session.delete(self.db.session.get(self.User, user_id))
            self.db.session.commit()

    def rows(self, user_id: int | None = None) -> list[dict[str, Any]]:
        """Every ``plan_subscriptions`` row (of one user), ordered by service."""
        t = signalbus_plans.plan_subscriptions
        stmt = select(t).order_by(t.c.user_id, t.c.service)
        if user_id is not None:
            stmt = stmt.where(t.c.user_id == str(user_id))
        with self.app.app_context():
            return [dict(r._mapping) for r in self.db.session.execute(stmt)]

    def subscriptions(self, user_id: int) -> dict[str, tuple[str, bool]]:
        """``{service: (plan, active)}`` of one user."""
        return {r["service"]: (r["plan"], r["active"]) for r in self.rows(user_id)}

    def deliver_again(self, event: signalbus.Event) -> None:
        """Deliver an already delivered event once more (what a redelivery does)."""
        with self.app.app_context():
            failures = self.bus.runtime(self.app).deliver(self.User, event)
        assert not failures, failures


def build_host(database_url: str, **config: Any) -> Host:
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

    signalbus_plans.include_in(db.metadata)
    signalbus.bind(User, "insert", "user_registered")
    signalbus.bind(User, "update", "user_plan_changed", when=signalbus.changed("plan"))
    signalbus.bind(User, "delete", "user_deleted")

    app = Flask(__name__)
    app.config.update(flask_sqlalchemy_config(database_url))
    app.config["SIGNALBUS_PLUGINS"] = ["plans"]
    app.config["SIGNALBUS_PLUGINS_STRICT"] = True
    app.config["SIGNALBUS_PLANS"] = PLANS
    app.config.update(config)
    bus = start_host(app, db, fresh=True)
    return Host(app, db, User, bus)


@pytest.fixture
def make_host(database_url: str) -> Iterator[Callable[..., Host]]:
    """Build host apps with extra config; their tables are dropped afterwards."""
    made: list[Host] = []

    def factory(**config: Any) -> Host:
        host = build_host(database_url, **config)
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
    """A host app with the default test plans."""
    return make_host()
