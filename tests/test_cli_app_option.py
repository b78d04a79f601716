"""One rule for every command of ``signalbus``: the app comes from ``--app`` before the
command or after it, or from ``SIGNALBUS_APP`` / ``FLASK_APP``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HOST = '''
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus
import signalbus.outbox


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Ticket(db.Model):
    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(primary_key=True)


signalbus.bind(Ticket, "insert", "cli_ticket_opened")


def create_app():
    app = Flask("cli_host")
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite:///{db}", SIGNALBUS_PLUGINS=[],
                      SIGNALBUS_DELIVERY="outbox")
    db.init_app(app)
    with app.app_context():
        signalbus.sqlite.configure(db.engine)
        db.create_all()
        signalbus.outbox.create_all(db.engine)
    signalbus.SignalBus().init_app(app, db=db)
    return app
'''


@pytest.fixture
def host(tmp_path: Path) -> Path:
    (tmp_path / "clihost.py").write_text(
        textwrap.dedent(HOST).replace("{db}", str(tmp_path / "cli.sqlite")))
    return tmp_path


def _run(cwd: Path, *args: str, **env: str) -> dict[str, object]:
    environ = {k: v for k, v in os.environ.items() if k not in ("FLASK_APP", "SIGNALBUS_APP")}
    environ.update(env)
    result = subprocess.run([sys.executable, "-m", "signalbus", *args], cwd=cwd,
                            env=environ, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


LIST, STATUS, CATALOG = ["list", "--json"], ["status", "--json"], ["catalog", "--format", "json"]


@pytest.mark.parametrize(("command", "where"), [
    (LIST, "before"), (LIST, "after"), (LIST, "SIGNALBUS_APP"), (LIST, "FLASK_APP"),
    (STATUS, "before"), (STATUS, "after"), (CATALOG, "before"), (CATALOG, "after"),
])
def test_the_app_is_found_the_same_way_for_every_command(host: Path, command: list[str],
                                                          where: str) -> None:
    target = "clihost:create_app"
    if where == "before":
        out = _run(host, "--app", target, *command)
    elif where == "after":
        out = _run(host, *command, "--app", target)
    else:
        out = _run(host, *command, **{where: target})
    if command[0] == "status":
        assert out["events"] == {"pending": 0, "done": 0, "dead": 0}
    else:
        assert "cli_ticket_opened" in {s["name"] for s in out["signals"]}  # type: ignore
    # the documented contract (docs/cli-json.md): these keys, never fewer
    assert set(out) >= CONTRACT[command[0]], sorted(out)


CONTRACT = {
    "list": {"delivery", "signals", "plugins"},
    "status": {"database", "schema_version", "events", "estimated", "deliveries", "due",
               "claimed", "oldest_pending_age_seconds", "signals", "dead"},
    "catalog": {"catalog_version", "delivery", "signals", "plugins"},
}
