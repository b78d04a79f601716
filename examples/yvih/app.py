"""YVIH's app factory: ``POST /issues`` raises an issue, ``POST /issues/<id>/close``."""

from __future__ import annotations

from typing import Any

from flask import Flask, abort, jsonify, request

import signalbus

from . import signals  # noqa: F401  (the declarations: bind() at import)
from .models import Data, db


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI="sqlite:///yvih.sqlite",
        MAIL_DEFAULT_SENDER="YVIH <tracker@yvih.example>",
        SIGNALBUS_PLUGINS=["mail", "slack"],
        SIGNALBUS_MAIL_ADMINS=["admins@yvih.example"],
    )
    app.config.update(config or {})
    db.init_app(app)
    with app.app_context():
        signalbus.sqlite.configure(db.engine)
    signalbus.SignalBus().init_app(app, db=db)

    @app.post("/issues")
    def raise_issue() -> Any:
        body = request.get_json(force=True)
        issue = Data(title=body["title"], description=body.get("description", ""),
                     reporter=body["reporter"])
        db.session.add(issue)
        db.session.commit()
        return jsonify(id=issue.id), 201

    @app.post("/issues/<int:issue_id>/close")
    def close_issue(issue_id: int) -> Any:
        issue = db.session.get(Data, issue_id) or abort(404)
        issue.status = "closed"
        db.session.commit()
        return jsonify(id=issue.id, status=issue.status)

    return app


def init_db(app: Flask) -> None:
    """Create YVIH's tables."""
    with app.app_context():
        db.create_all()
