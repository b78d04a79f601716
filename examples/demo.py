"""``make demo``: a Flask app on SQLite whose receivers print what they got.

Run with ``python -m examples.demo`` from the project root.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus
from signalbus import changed


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    plan: Mapped[str] = mapped_column(String(20), default="free")
    password_hash: Mapped[str | None] = mapped_column(String(200))


# what the host app's signals.py would say
signalbus.bind(User, "insert", "user_registered")
signalbus.bind(User, "update", "user_plan_changed", when=changed("plan"))


@signalbus.receiver("user_registered")
def print_registration(sender, event, **kwargs):
    print(f"  -> user_registered  pk={event.pk} data={dict(event.data)}")


@signalbus.receiver("user_plan_changed")
def print_plan_change(sender, event, **kwargs):
    print(f"  -> user_plan_changed pk={event.pk} changes={dict(event.changes)}")


def create_app(database_url: str) -> Flask:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=database_url, SIGNALBUS_PLUGINS=[])
    db.init_app(app)
    with app.app_context():
        signalbus.sqlite.configure(db.engine)
        db.create_all()
    signalbus.init_app(app, db=db)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url")
    parser.add_argument("--delivery", default="inline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'demo.sqlite'}"
        app = create_app(url)
        with app.app_context():
            print("register ada (committed):")
            db.session.add(User(email="ada@example.com", password_hash="x"))
            db.session.commit()
            print("register bob, then roll back (nothing is delivered):")
            db.session.add(User(email="bob@example.com"))
            db.session.flush()
            db.session.rollback()
            print("ada upgrades to pro:")
            ada = db.session.execute(db.select(User).filter_by(email="ada@example.com"))
            ada.scalar_one().plan = "pro"
            db.session.commit()
            print(f"users in the database: {db.session.query(User).count()}")


if __name__ == "__main__":
    main()
