"""``flask signalbus catalog``: every signal with its producers, typed payload fields,
consumers and plugin requirements; the examples ship theirs."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import JSON, DateTime, LargeBinary, Numeric, String, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus
from signalbus.cli import cli

ROOT = Path(__file__).resolve().parent.parent


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Size(enum.Enum):
    SMALL = "s"
    LARGE = "l"


class Parcel(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "catalog_parcels"
    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[uuid.UUID] = mapped_column(Uuid)
    weight: Mapped[decimal.Decimal] = mapped_column(Numeric(8, 3))
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    size: Mapped[Size]
    label: Mapped[bytes | None] = mapped_column(LargeBinary)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    note: Mapped[str] = mapped_column(String(50))
    api_token: Mapped[str | None] = mapped_column(String(50))


def _app(tmp_path: Path) -> Flask:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'catalog.sqlite'}",
                      SIGNALBUS_PLUGINS=[])
    db.init_app(app)
    with app.app_context():
        signalbus.sqlite.configure(db.engine)
    signalbus.SignalBus().init_app(app, db=db)
    return app


def test_catalog_json(tmp_path: Path) -> None:
    signalbus.bind(Parcel, "insert", "parcel_sent", exclude=["note"])
    signalbus.bind(Parcel, "update", "parcel_resized", when=signalbus.changed("size"),
                   fields=["id", "size"])
    signalbus.signal("parcel_lost", doc="A carrier reported a parcel lost. data: id, carrier.")
    app = _app(tmp_path)
    runtime = app.extensions["signalbus"].runtime(app)

    def track(sender: Any, event: signalbus.Event, **kwargs: Any) -> None:
        pass

    runtime.connect("parcel_sent", track, name="tracking.track", plugin="tracking")
    result = app.test_cli_runner().invoke(cli, ["catalog", "--format", "json"])
    assert result.exit_code == 0, result.output
    catalog = json.loads(result.output)
    by_name = {s["name"]: s for s in catalog["signals"]}

    (sent,) = by_name["parcel_sent"]["producers"]
    assert sent["kind"] == "binding"
    assert sent["model"] == "tests.test_catalog:Parcel"
    assert sent["op"] == "insert"
    assert sent["when"] is None
    assert sent["fields"] == {  # note excluded, api_token redacted, column order kept
        "id": {"type": "integer", "nullable": False},
        "ref": {"type": "string (UUID)", "nullable": False},
        "weight": {"type": "string (decimal)", "nullable": False},
        "sent_at": {"type": "string (ISO 8601 date-time)", "nullable": True},
        "size": {"type": "string (enum value)", "nullable": False},
        "label": {"type": "string (base64)", "nullable": True},
        "meta": {"type": "JSON", "nullable": True},
    }
    assert by_name["parcel_sent"]["consumers"] == [
        {"receiver": "tracking.track", "plugin": "tracking", "every_signal": False}]

    (resized,) = by_name["parcel_resized"]["producers"]
    assert resized["when"] == "changed('size')"
    assert list(resized["fields"]) == ["id", "size"]

    lost = by_name["parcel_lost"]
    assert lost["doc"] == "A carrier reported a parcel lost. data: id, carrier."
    assert lost["producers"] == [
        {"kind": "emit", "declaration": "signalbus.signal('parcel_lost')"}]
    assert lost["consumers"] == []
    assert catalog["catalog_version"] == 1
    assert catalog["delivery"] == "inline"


def test_catalog_markdown_and_requirements(tmp_path: Path) -> None:
    signalbus.bind(Parcel, "insert", "parcel_sent", fields=["id", "note"])
    app = _app(tmp_path)
    runtime = app.extensions["signalbus"].runtime(app)
    from signalbus.plugins import PluginRecord

    runtime.plugins = [PluginRecord(name="labels", distribution="acme-labels", status="loaded",
                                    requires={"parcel_sent": frozenset({"id", "weight"})})]
    out = tmp_path / "catalog.md"
    result = app.test_cli_runner().invoke(cli, ["catalog", "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "## `parcel_sent`" in text
    assert "- insert of `tests.test_catalog:Parcel`" in text
    assert "  | `note` | string |" in text
    assert "- plugin `labels` reads `id`, `weight`: **missing** weight" in text
    assert "| `labels` | acme-labels | loaded |" in text


def test_badgeyay_ships_its_current_catalog(tmp_path: Path) -> None:
    env = {**os.environ, "FLASK_APP": "examples.badgeyay:create_app",
           "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "flask", "signalbus", "catalog"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    shipped = (ROOT / "examples" / "badgeyay" / "CATALOG.md").read_text()
    assert result.stdout == shipped, (
        "examples/badgeyay/CATALOG.md is out of date: regenerate it with "
        "`FLASK_APP=examples.badgeyay:create_app flask signalbus catalog "
        "-o examples/badgeyay/CATALOG.md`")
