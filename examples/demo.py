"""``make demo``: Badgeyay and YVIH end to end, with a real SMTP and a real webhook server.

Run from the project root::

    python -m examples.demo                              # inline, SQLite
    python -m examples.demo --delivery outbox            # outbox, worker processes
    python -m examples.demo --delivery celery            # Celery workers on Redis + relays
    python -m examples.demo --database-url postgresql://postgres@127.0.0.1/test
    python -m examples.demo --delivery outbox --serve    # keep the outbox page open

Three users register on different plans (one inside a transaction that is rolled back),
one changes plan, and an issue is raised through the YVIH app; then the demo prints the
signals fired, the mails received, the subscriptions table, the Slack posts, and what the
rolled-back user got (nothing). It prints the address of Badgeyay's outbox page
(:mod:`signalbus.web`); with ``--serve`` it keeps serving it (and the workers keep
running) until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import create_engine, select, text

from signalbus import Event

CONFIG_ENV = "SIGNALBUS_DEMO_CONFIG"
"""How the demo hands each app's config to its worker process (outbox mode)."""


def badgeyay_worker() -> Flask:
    """The Badgeyay app as the outbox worker process builds it."""
    from examples.badgeyay import create_app

    return create_app(json.loads(os.environ[CONFIG_ENV])["badgeyay"])


def yvih_worker() -> Flask:
    """The YVIH app as the outbox worker process builds it."""
    from examples.yvih import create_app

    return create_app(json.loads(os.environ[CONFIG_ENV])["yvih"])


# -- the local peers -------------------------------------------------------------------


@contextmanager
def peers() -> Iterator[tuple[Any, Any]]:
    """A real SMTP server (aiosmtpd) and a real webhook server, both on 127.0.0.1."""
    from pytest_httpserver import HTTPServer
    from signalbus_mail.testing import SMTPServer
    from signalbus_slack.testing import SlackWebhook

    smtp = SMTPServer()
    smtp.start()
    http = HTTPServer(host="127.0.0.1", port=0)
    http.start()
    webhook = SlackWebhook()
    webhook.attach(http)
    try:
        yield smtp, webhook
    finally:
        http.clear()
        http.stop()
        smtp.stop()


# -- databases -------------------------------------------------------------------------


def database_config(url: str | None, app: str, tmp: Path) -> dict[str, Any]:
    """One database per app: a SQLite file each, or a PostgreSQL schema each."""
    if not url:
        return {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp / f'{app}.sqlite'}"}
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    schema = f"signalbus_demo_{app}"
    engine = create_engine(url)
    with engine.begin() as conn:  # a fresh schema per run: the demo is repeatable
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    return {
        "SQLALCHEMY_DATABASE_URI": url,
        "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"options": f"-csearch_path={schema}"}},
    }


def drop_schemas(url: str | None) -> None:
    if not url:
        return
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url)
    with engine.begin() as conn:
        for app in ("badgeyay", "yvih"):
            conn.execute(text(f'DROP SCHEMA IF EXISTS "signalbus_demo_{app}" CASCADE'))
    engine.dispose()


# -- the outbox page -------------------------------------------------------------------


def add_page(app: Flask) -> None:
    """Register the outbox page on ``app``. The demo's authorization check lets in
    requests from this machine only; a real host checks its signed-in user."""
    import secrets

    from flask import request

    import signalbus.web

    if not app.config.get("SECRET_KEY"):  # the page's CSRF token lives in the session
        app.config["SECRET_KEY"] = secrets.token_hex(16)
    app.register_blueprint(
        signalbus.web.blueprint(authorize=lambda: request.remote_addr in ("127.0.0.1", "::1")),
        url_prefix="/ops/outbox")


class PageServer:
    """The app served by werkzeug on 127.0.0.1 in a thread (``--serve``: in the
    foreground)."""

    def __init__(self, app: Flask, port: int = 0) -> None:
        import threading

        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", port, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/ops/outbox/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait(self) -> None:
        import signal

        def stop(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)  # a supervisor's stop: the workers stop too
        try:
            while self.thread.is_alive():
                self.thread.join(0.5)
        except KeyboardInterrupt:
            print("\nstopped serving the outbox page")

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


# -- the run ---------------------------------------------------------------------------


class Fired:
    """Every event each app delivered in this process (inline mode)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Event]] = []

    def watch(self, app: Flask, label: str) -> None:
        def record(sender: Any, event: Event, **kwargs: Any) -> None:
            self.events.append((label, event))

        app.extensions["signalbus"].runtime(app).connect_all(record, name=f"demo.{label}")


def wait_for_workers(apps: list[Flask], timeout: float = 30.0) -> None:
    """Until no event or delivery is pending in any app's outbox (outbox mode)."""
    from signalbus.outbox import deliveries, outbox

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = 0
        for app in apps:
            db = app.extensions["sqlalchemy"]
            with app.app_context(), db.engine.connect() as conn:
                for table in (outbox, deliveries):
                    pending += conn.execute(
                        select(table.c.id).where(table.c.state == "pending")
                    ).first() is not None
        if not pending:
            return
        time.sleep(0.1)
    raise SystemExit(f"the workers did not deliver everything within {timeout:.0f}s")


def stored_events(app: Flask, label: str) -> list[tuple[str, Event]]:
    """What the outbox stored (outbox mode), in commit order."""
    from signalbus.outbox import outbox

    db = app.extensions["sqlalchemy"]
    with app.app_context(), db.engine.connect() as conn:
        rows = conn.execute(select(outbox.c.payload).order_by(outbox.c.id)).scalars()
        return [(label, Event.from_dict(p if isinstance(p, dict) else json.loads(p)))
                for p in rows]


def start_celery(names: list[str], env: dict[str, str]) -> list[Any]:
    """Celery mode: per app, a real ``celery worker`` (on its own queue) and a relay."""
    import subprocess

    procs = []
    for name in names:
        app_env = {**env, "SIGNALBUS_DEMO_APP": name}
        queue = json.loads(env[CONFIG_ENV])[name]["SIGNALBUS_CELERY_QUEUE"]
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "examples.demo_celery:celery", "worker",
             "-Q", queue, "--pool=solo", "--without-heartbeat", "--without-gossip",
             "--without-mingle", "-n", f"{queue}@%h", "--loglevel=WARNING"], env=app_env))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "signalbus", "relay", "--app", f"examples.demo:{name}_worker",
             "--log-level", "WARNING"], env=app_env, stdout=subprocess.DEVNULL))
    return procs


def run(delivery: str, database_url: str | None, serve: bool = False, port: int = 0,
        broker: str | None = None) -> int:
    from examples.badgeyay import User
    from examples.badgeyay import create_app as badgeyay_app
    from examples.badgeyay import db as badgeyay_db
    from examples.badgeyay import init_db as badgeyay_init
    from examples.yvih import create_app as yvih_app
    from examples.yvih import init_db as yvih_init

    with tempfile.TemporaryDirectory() as tmp, peers() as (smtp, webhook):
        common = {**smtp.config, **webhook.config, "SIGNALBUS_DELIVERY": delivery,
                  "SIGNALBUS_OUTBOX_POLL": 0.2}
        configs = {name: {**common, **database_config(database_url, name, Path(tmp))}
                   for name in ("badgeyay", "yvih")}
        if delivery == "celery":
            for name, config in configs.items():
                config["SIGNALBUS_CELERY_BROKER"] = broker
                config["SIGNALBUS_CELERY_QUEUE"] = f"signalbus_demo_{name}_{os.getpid()}"
        badgeyay, yvih = badgeyay_app(configs["badgeyay"]), yvih_app(configs["yvih"])
        add_page(badgeyay)
        badgeyay_init(badgeyay)
        yvih_init(yvih)
        fired = Fired()
        workers = []
        import signalbus.outbox

        for app in (badgeyay, yvih):  # inline: empty, but the outbox page opens
            with app.app_context():
                signalbus.outbox.create_all(app.extensions["sqlalchemy"].engine)
        if delivery in ("outbox", "celery"):
            from signalbus.outbox.worker import spawn

            env = {**os.environ, CONFIG_ENV: json.dumps(configs)}
            if delivery == "celery":
                workers = start_celery(["badgeyay", "yvih"], env)
            else:
                workers = [spawn(f"examples.demo:{name}_worker", "--log-level", "WARNING",
                                 env=env) for name in ("badgeyay", "yvih")]
        else:
            fired.watch(badgeyay, "badgeyay")
            fired.watch(yvih, "yvih")

        try:
            client = badgeyay.test_client()
            print(f"signalbus demo: delivery={delivery}, database="
                  f"{'PostgreSQL' if database_url else 'SQLite'}")
            print("- ada registers on the free plan, bob on the pro plan")
            ada = client.post("/register", json={"email": "ada@example.com", "name": "Ada",
                                                 "plan": "free"}).json["id"]
            client.post("/register", json={"email": "bob@example.com", "name": "Bob",
                                           "plan": "pro"})
            print("- carol registers on the pro plan, but her transaction is rolled back")
            with badgeyay.app_context():
                badgeyay_db.session.add(User(email="carol@example.com", name="Carol",
                                             plan="pro"))
                badgeyay_db.session.flush()  # the row was written ...
                badgeyay_db.session.rollback()  # ... and undone
            print("- ada upgrades to pro")
            client.post(f"/users/{ada}/plan", json={"plan": "pro"})
            print("- eve raises an issue in YVIH")
            yvih.test_client().post("/issues", json={
                "title": "Badge export times out", "reporter": "eve@example.com",
                "description": "The PDF export of 300 badges never finishes."})
            if workers:
                print("- the Celery workers deliver what the relays hand over" if
                      delivery == "celery" else "- the worker processes deliver the outbox")
                wait_for_workers([badgeyay, yvih], timeout=60.0)
                fired.events = stored_events(badgeyay, "badgeyay") + stored_events(yvih, "yvih")
            report(fired, smtp, webhook, badgeyay)
            status = check(fired, smtp, webhook, badgeyay)
            page = PageServer(badgeyay, port)
            print(f"\nBadgeyay's outbox page: {page.url}")
            if delivery == "inline":
                print("  (inline delivery stores nothing there: `make demo DELIVERY=outbox "
                      "SERVE=1` shows it filled)")
            if serve:
                print("  serving it until Ctrl-C (the workers keep running)", flush=True)
                page.wait()
            else:
                print("  (`make demo SERVE=1`, or --serve, keeps it open)")
            page.close()
        finally:
            for proc in workers:
                proc.terminate()  # SIGTERM: finish the current delivery, then exit
            for proc in workers:
                proc.wait(timeout=10)

        for app in (badgeyay, yvih):
            with app.app_context():
                app.extensions["sqlalchemy"].engine.dispose()
        drop_schemas(database_url)
        return status


def subscriptions(app: Flask) -> list[tuple[str, str, str, bool]]:
    import signalbus_plans

    from examples.badgeyay import User, db

    t = signalbus_plans.plan_subscriptions
    with app.app_context():
        emails = {str(u.id): u.email for u in db.session.scalars(select(User))}
        rows = db.session.execute(select(t.c.user_id, t.c.service, t.c.plan, t.c.active)
                                  .order_by(t.c.user_id, t.c.service)).all()
    return [(emails.get(str(r.user_id), f"user {r.user_id}"), r.service, r.plan, r.active)
            for r in rows]


def report(fired: Fired, smtp: Any, webhook: Any, app: Flask) -> None:
    print("\nsignals fired (committed):")
    for label, event in fired.events:
        detail = dict(event.changes) if event.op == "update" else {
            k: v for k, v in event.data.items()
            if k in ("email", "plan", "user_id", "service", "title")}
        print(f"  {label:9} {event.signal:18} {event.op:6} pk={event.pk!s:4} {detail}")
    print("\nmails received by the SMTP server:")
    for msg in smtp.messages:
        first = msg.get_body(("plain",)).get_content().strip().splitlines()[0]
        print(f"  to {msg['To']:28} {msg['Subject']!r}\n  {'':31}{first}")
    print("\nplan_subscriptions:")
    for email, service, plan, active in subscriptions(app):
        print(f"  {email:20} {service:18} {plan:5} {'active' if active else 'cancelled'}")
    print("\nSlack posts received by the webhook server:")
    for post in webhook.posts:
        print(f"  {post['text']}")


def check(fired: Fired, smtp: Any, webhook: Any, app: Flask) -> int:
    carol = "carol@example.com"
    got = {
        "signals": [e.signal for _, e in fired.events if carol in json.dumps(e.to_dict())],
        "mails": [m["To"] for m in smtp.messages if carol in str(m["To"])],
        "subscriptions": [s for s in subscriptions(app) if s[0] == carol],
        "slack posts": [p for p in webhook.posts if "Carol" in json.dumps(p)],
    }
    if any(got.values()):
        print(f"\nFAILED: the rolled-back user got something: {got}")
        return 1
    print(f"\nthe rolled-back user (carol) got nothing: no signal, no mail, no subscription, "
          f"no Slack post.\nin all: {len(fired.events)} events, {len(smtp.messages)} mails, "
          f"{len(webhook.posts)} Slack posts.")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delivery", choices=["inline", "outbox", "celery"], default="inline")
    parser.add_argument("--database-url", help="PostgreSQL URL (default: SQLite files)")
    parser.add_argument("--serve", action="store_true",
                        help="keep serving the outbox page until Ctrl-C")
    parser.add_argument("--port", type=int, default=0,
                        help="port of the outbox page on 127.0.0.1 (default: any free one)")
    parser.add_argument("--broker", default=os.environ.get("SIGNALBUS_CELERY_BROKER",
                                                           "redis://127.0.0.1:6379/0"),
                        help="the Celery broker of --delivery celery (default "
                             "$SIGNALBUS_CELERY_BROKER, else redis://127.0.0.1:6379/0)")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the webhook server's access log
    sys.exit(run(args.delivery, args.database_url, args.serve, args.port, args.broker))


if __name__ == "__main__":
    main()
