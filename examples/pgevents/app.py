"""The app factory and ``flask --app examples.pgevents.app setup``.

``DATABASE_URL`` names the PostgreSQL database (default: the local server's ``test``
database). Walk-through: examples/pgevents/README.md.
"""

from __future__ import annotations

import os
from typing import Any

import click
from flask import Flask

import signalbus
import signalbus.outbox
from signalbus.outbox.changes import install_triggers

from . import signals  # noqa: F401  (the declarations: bind() at import)
from .models import db

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ.get("DATABASE_URL", DEFAULT_URL),
        SIGNALBUS_DELIVERY="outbox",
        SIGNALBUS_PLUGINS=[],
    )
    app.config.update(config or {})
    db.init_app(app)
    signalbus.bus.init_app(app, db=db)

    @app.cli.command("setup")
    def setup() -> None:
        """Create the tables, the outbox and the capture triggers (a migration's job in
        production: 'flask signalbus triggers sql --format alembic' prints its DDL)."""
        db.create_all()
        signalbus.outbox.create_all(db.engine)
        for table in install_triggers(signalbus.bus.runtime(app)):
            click.echo(f"capture triggers installed on {table}")

    return app
