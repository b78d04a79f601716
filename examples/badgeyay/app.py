"""Badgeyay's app factory and its three endpoints."""

from __future__ import annotations

from typing import Any

from flask import Flask, abort, jsonify, request

import signalbus

from . import signals  # noqa: F401  (the declarations: bind() at import)
from .models import User, db

PLANS = {
    "free": ["newsletter"],
    "pro": ["newsletter", "priority-support", "badge-export"],
}


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI="sqlite:///badgeyay.sqlite",
        MAIL_DEFAULT_SENDER="Badgeyay <hello@badgeyay.example>",
        SIGNALBUS_PLUGINS=["mail", "plans", "slack"],
        SIGNALBUS_PLANS=PLANS,
        SIGNALBUS_PLANS_DEFAULT="free",
        SIGNALBUS_MAIL_ADMINS=["admins@badgeyay.example"],
    )
    app.config.update(config or {})
    db.init_app(app)
    with app.app_context():
        signalbus.sqlite.configure(db.engine)
    signalbus.SignalBus().init_app(app, db=db)

    @app.cli.command("init-db")
    def init_db_command() -> None:
        """Create Badgeyay's tables and the plans plugin's table."""
        init_db(app)

    @app.post("/register")
    def register() -> Any:
        body = request.get_json(force=True)
        user = User(email=body["email"], name=body["name"], plan=body.get("plan", "free"))
        db.session.add(user)
        db.session.commit()
        return jsonify(id=user.id), 201

    @app.post("/users/<int:user_id>/plan")
    def change_plan(user_id: int) -> Any:
        user = db.session.get(User, user_id) or abort(404)
        user.plan = request.get_json(force=True)["plan"]
        db.session.commit()
        return jsonify(id=user.id, plan=user.plan)

    @app.delete("/users/<int:user_id>")
    def delete_user(user_id: int) -> Any:
        user = db.session.get(User, user_id) or abort(404)
        db.session.delete(user)
        db.session.commit()
        return "", 204

    return app


def init_db(app: Flask) -> None:
    """Create the tables: the app's, and the ``plan_subscriptions`` table of the plans plugin."""
    import signalbus_plans

    with app.app_context():
        db.create_all()
        signalbus_plans.create_all(db.engine)
