"""Metrics, health checks and the lag check: a real worker process scraped over HTTP,
inline metrics served by the host, ``signalbus status --fail-if-lag``,
``signalbus health`` (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import signalbus.metrics
from signalbus import delivery
from signalbus.cli import cli
from tests import webhost
from tests.webhost import FAIL, join

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.signalbus_receiver_errors("log")

APP = '''
import os
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
import signalbus, signalbus.outbox, signalbus.sqlite
from signalbus import Permanent

URL = os.environ["OPS_TEST_URL"]
if URL.startswith("sqlite"):
    engine = signalbus.sqlite.configure(create_engine(URL))
else:
    engine = create_engine(
        URL, connect_args={"options": "-csearch_path=" + os.environ["OPS_SCHEMA"]})


class Base(DeclarativeBase):
    pass


class Member(Base):
    __tablename__ = "ops_members"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))


signalbus.bind(Member, "insert", "ops_joined")
Session = sessionmaker(engine)


def welcome(sender, event, **kw):
    pass


def slack(sender, event, **kw):
    if event.data["email"].startswith("dead"):
        raise Permanent("gone")
    if event.data["email"].startswith("flaky"):
        raise RuntimeError("try later")


def make():
    bus = signalbus.SignalBus()
    runtime = bus.attach(Session, config={"SIGNALBUS_DELIVERY": "outbox",
                                          "SIGNALBUS_OUTBOX_BACKOFF_BASE": 600,
                                          "SIGNALBUS_OUTBOX_POLL": 0.2}, plugins=False)
    runtime.connect("ops_joined", welcome, name="ops:welcome")
    runtime.connect("ops_joined", slack, name="ops:slack")
    return bus


def seed(*emails):
    Base.metadata.drop_all(engine)
    signalbus.outbox.drop_all(engine)
    Base.metadata.create_all(engine)
    signalbus.outbox.create_all(engine)
    make()
    with Session() as s:
        for email in emails:
            s.add(Member(email=email))
        s.commit()
'''


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def direct_get(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback
    with opener.open(url, timeout=10) as response:
        return str(response.read().decode())


@pytest.fixture
def app_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    from conftest import PG_SCHEMA

    (tmp_path / "opsapp.py").write_text(APP)
    env = {**os.environ, "OPS_TEST_URL": database_url, "OPS_SCHEMA": PG_SCHEMA,
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    return env


def test_a_worker_process_serves_its_metrics(app_env: dict[str, str], tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c",
                    "import opsapp; opsapp.seed('a@x', 'b@x', 'flaky@x', 'dead@x')"],
                   cwd=tmp_path, env=app_env, check=True, timeout=60)
    beat = tmp_path / "worker.alive"
    proc = subprocess.Popen(
        [sys.executable, "-m", "signalbus", "worker", "--app", "opsapp:make",
         "--metrics-port", "0", "--heartbeat-file", str(beat), "--log-level", "INFO"],
        cwd=tmp_path, env=app_env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")),
                              daemon=True)
    reader.start()
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            found = re.search(r"metrics served on 127\.0\.0\.1 port (\d+)", "".join(lines))
            url = f"http://127.0.0.1:{found.group(1)}/metrics" if found else None
            time.sleep(0.05)
        assert url, "".join(lines)
        values: dict[Any, float] = {}
        while time.monotonic() < deadline:
            values = samples(direct_get(url))
            delivered = sum(v for (n, labels), v in values.items()
                            if n == "signalbus_delivered_total")
            if delivered == 6 and values.get(("signalbus_dead_total", (
                    ("receiver", "ops:slack"), ("signal", "ops_joined")))) == 1:
                break
            time.sleep(0.1)

        def value(name: str, **labels: str) -> float | None:
            return values.get((name, tuple(sorted(labels.items()))))

        assert value("signalbus_delivered_total", signal="ops_joined",
                     receiver="ops:welcome") == 4
        assert value("signalbus_delivered_total", signal="ops_joined",
                     receiver="ops:slack") == 2
        assert value("signalbus_retried_total", signal="ops_joined", receiver="ops:slack") == 1
        assert value("signalbus_dead_total", signal="ops_joined", receiver="ops:slack") == 1
        assert value("signalbus_delivery_duration_seconds_count", signal="ops_joined",
                     receiver="ops:slack") == 4
        assert value("signalbus_delivery_lag_seconds_count", signal="ops_joined") == 8
        assert value("signalbus_outbox_up") == 1
        assert value("signalbus_outbox_pending", kind="events") == 0
        assert value("signalbus_outbox_pending", kind="deliveries") == 1  # flaky, waiting
        age = value("signalbus_outbox_oldest_pending_age_seconds")
        assert age is not None and age >= 0
        health = subprocess.run(
            [sys.executable, "-m", "signalbus", "health", "--heartbeat-file", str(beat),
             "--max-age", "30"], cwd=tmp_path, env=app_env, capture_output=True, text=True)
        assert health.returncode == 0, health.stdout + health.stderr
        assert health.stdout.startswith("OK: the worker's heartbeat")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(10)
        assert proc.stderr is not None
        proc.stderr.close()
    assert proc.returncode == 0, "".join(lines)


def test_health_says_a_stale_or_missing_heartbeat_is_not_alive(tmp_path: Path) -> None:
    beat = tmp_path / "worker.alive"
    runner = Flask("health").test_cli_runner()
    missing = runner.invoke(cli, ["health", "--heartbeat-file", str(beat)])
    assert missing.exit_code == 1
    assert missing.output == (f"NOT ALIVE: no heartbeat file {beat}: is the worker running "
                              f"with --heartbeat-file {beat}?\n")
    beat.touch()
    os.utime(beat, (time.time() - 120, time.time() - 120))
    stale = runner.invoke(cli, ["health", "--heartbeat-file", str(beat), "--max-age", "60"])
    assert stale.exit_code == 1
    assert re.fullmatch(r"NOT ALIVE: the worker's heartbeat \S+ is 1[23]\d\.\ds old \(more "
                        r"than 60s\): its loop is stuck or it stopped\n", stale.output)


@pytest.fixture
def host(database_url: str) -> Iterator[Flask]:
    with webhost.host(database_url) as app:
        yield app


def test_status_fail_if_lag_exits_1_when_the_oldest_pending_waits_too_long(
        host: Flask) -> None:
    runner = host.test_cli_runner()
    empty = runner.invoke(cli, ["status", "--fail-if-lag", "60"])
    assert empty.exit_code == 0
    assert empty.output == ("OK: oldest pending - (limit 1.0m); 0 events and 0 deliveries "
                            "pending\n")
    join(host, "a@example.com")
    time.sleep(0.05)
    lagging = runner.invoke(cli, ["status", "--fail-if-lag", "0", "--json"])
    assert lagging.exit_code == 1
    report = json.loads(lagging.output)
    assert report["ok"] is False and report["pending_events"] == 1
    assert report["oldest_pending_age_seconds"] > 0 and report["limit_seconds"] == 0
    ok = runner.invoke(cli, ["status", "--fail-if-lag", "3600"])
    assert ok.exit_code == 0 and ok.output.startswith("OK: oldest pending ")


@pytest.fixture
def metrics() -> Iterator[signalbus.metrics.Metrics]:
    """Metrics in a registry of their own, switched on for this test only."""
    found = signalbus.metrics.Metrics(CollectorRegistry())
    delivery.instruments.append(found)
    yield found
    delivery.instruments.remove(found)


def test_inline_delivery_is_counted_and_the_host_serves_it(
        database_url: str, metrics: signalbus.metrics.Metrics) -> None:
    from prometheus_client import generate_latest

    with webhost.host(database_url, SIGNALBUS_DELIVERY="inline") as app:
        FAIL.add("b@example.com")
        join(app, "a@example.com", "b@example.com")
    values = samples(generate_latest(metrics.registry).decode())
    assert values[("signalbus_delivered_total", (("receiver", "tests.webhost:welcome"),
                                                 ("signal", "web_member_joined")))] == 2
    assert values[("signalbus_delivered_total", (("receiver", "tests.webhost:notify_slack"),
                                                 ("signal", "web_member_joined")))] == 1
    assert values[("signalbus_dead_total", (("receiver", "tests.webhost:notify_slack"),
                                            ("signal", "web_member_joined")))] == 1
    assert values[("signalbus_delivery_lag_seconds_count",
                   (("signal", "web_member_joined"),))] == 4


def test_flask_view_serves_the_enabled_metrics(host: Flask) -> None:
    enabled = signalbus.metrics.enable()
    try:
        host.add_url_rule("/metrics", view_func=signalbus.metrics.flask_view)
        response = host.test_client().get("/metrics")
        assert response.status_code == 200
        assert response.mimetype == "text/plain"
        assert "# TYPE signalbus_delivered_total counter" in response.get_data(as_text=True)
    finally:
        delivery.instruments.remove(enabled)
        signalbus.metrics._enabled = None
        for collector in (enabled.delivered, enabled.retried, enabled.dead, enabled.duration,
                          enabled.lag):
            enabled.registry.unregister(collector)
