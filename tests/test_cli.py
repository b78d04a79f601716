"""``flask signalbus list`` and the light CLI module."""

from __future__ import annotations

import json
import subprocess
import sys

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus
from signalbus.cli import cli


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Ticket(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))


def _app(tmp_path):
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'cli.sqlite'}",
        SIGNALBUS_PLUGINS=[],
    )
    db.init_app(app)
    with app.app_context():
        signalbus.sqlite.configure(db.engine)
    signalbus.SignalBus().init_app(app, db=db)
    return app


def test_list_shows_signals_bindings_receivers_and_plugins(tmp_path):
    signalbus.bind(Ticket, "insert", "ticket_opened")

    @signalbus.receiver("ticket_opened", name="helpdesk.notify")
    def notify(sender, event, **kw):
        pass

    app = _app(tmp_path)
    app.extensions["signalbus"].runtime(app).connect(
        "ticket_opened", notify, name="helpdesk.page", plugin="pager")
    result = app.test_cli_runner().invoke(cli, ["list"])
    assert result.exit_code == 0, result.output
    assert "delivery: inline" in result.output
    assert "  ticket_opened\n" in result.output
    assert "    bound by   bind('tests.test_cli:Ticket', 'insert', 'ticket_opened')" \
        in result.output
    assert "    receiver   helpdesk.notify  (declared)" in result.output
    assert "    receiver   helpdesk.page  (plugin pager)" in result.output
    assert "plugins:\n  (none installed)" in result.output

    result = app.test_cli_runner().invoke(cli, ["list", "--json"])
    listing = json.loads(result.output)
    (ticket,) = [s for s in listing["signals"] if s["name"] == "ticket_opened"]
    assert ticket["receivers"] == [
        {"name": "helpdesk.notify", "plugin": None},
        {"name": "helpdesk.page", "plugin": "pager"},
    ]


def test_list_without_init_app_says_what_to_do(tmp_path):
    app = Flask(__name__)
    result = app.test_cli_runner().invoke(cli, ["list"])
    assert result.exit_code != 0
    assert "call signalbus.init_app(app) in the app factory" in result.output


def test_registered_as_a_flask_command():
    from importlib import metadata

    (ep,) = [ep for ep in metadata.entry_points(group="flask.commands") if ep.name == "signalbus"]
    assert ep.load() is cli


def test_cli_module_imports_nothing_heavy():
    code = (
        "import sys, signalbus.cli; "
        "heavy = [m for m in ('celery', 'psycopg', 'flask_mail', 'slack_sdk') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_import_signalbus_imports_no_optional_part():
    code = (
        "import sys, signalbus; "
        "print([m for m in ('flask', 'celery', 'psycopg', 'flask_mail') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_signalbus_cli_fixture_runs_a_command(tmp_path, signalbus_cli):
    signalbus.bind(Ticket, "insert", "ticket_filed")
    app = _app(tmp_path)
    result = signalbus_cli(app, "list", "--json")
    assert result.exit_code == 0, result.output
    assert "ticket_filed" in {s["name"] for s in json.loads(result.output)["signals"]}
