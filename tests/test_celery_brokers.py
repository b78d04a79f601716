"""Celery mode on other brokers and through broker failures, with real processes:
a RabbitMQ smoke test, and a Redis server of the test's own (port 6390) killed and
started again, empty, while tasks are queued: the relay hands the lost tasks over again
after their lease, and every (event, receiver) is delivered once.
"""

from __future__ import annotations

import collections
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

sys.path.append(str(Path(__file__).parent))  # the suite imports tests by path (importlib)

from celery_support import (  # noqa: E402
    received,
    run_app,
    start_relay,
    start_worker,
    stop,
    wait_for,
    write_app,
)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
VHOST = "signalbus_test"


def _missing(message: str) -> None:
    if IN_CI:
        pytest.fail(message + " (CI=true: the celery tests must run)", pytrace=False)
    pytest.skip(message)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def host(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The app written to the test's directory, its tables created, its environment."""
    from conftest import PG_SCHEMA, pg_engine

    engine = pg_engine()
    write_app(tmp_path)
    (tmp_path / "flags").mkdir()
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]),
        "CEL_DB_URL": engine.url.render_as_string(hide_password=False),
        "CEL_DB_SCHEMA": PG_SCHEMA,
        "CEL_RECEIVED": str(tmp_path / "received.jsonl"),
        "CEL_FLAGS": str(tmp_path / "flags"),
        "SIGNALBUS_CELERY_QUEUE": f"signalbus_brokers_{os.getpid()}",
        "SIGNALBUS_OUTBOX_POLL": "0.2",
    })
    env.pop("SIGNALBUS_MUTED", None)
    procs: list[subprocess.Popen[bytes]] = []
    yield {"dir": tmp_path, "env": env, "engine": engine, "procs": procs}
    for proc in procs:
        stop(proc)
    with engine.begin() as conn:
        for table in ("signalbus_outbox_deliveries", "signalbus_outbox",
                      "signalbus_outbox_schema", "cel_members"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    engine.dispose()


def _start(host: dict[str, Any], broker: str, *relay_args: str) -> list[Path]:
    env, directory = host["env"], host["dir"]
    env["CEL_BROKER"] = broker
    run_app(env, directory, "setup")
    logs = [directory / "worker.log", directory / "relay.log"]
    host["procs"].append(start_worker(env, directory, "w1", env["SIGNALBUS_CELERY_QUEUE"],
                                      logs[0]))
    host["procs"].append(start_relay(env, directory, logs[1], *relay_args))
    wait_for(lambda: logs[0].exists() and "ready." in logs[0].read_text(), 60,
             "the worker to be ready", logs)
    return logs


def _pairs(host: dict[str, Any]) -> collections.Counter[tuple[str, str]]:
    return collections.Counter((c[0], c[1]) for c in received(Path(host["env"]["CEL_RECEIVED"])))


def test_rabbitmq_smoke(host):
    if shutil.which("rabbitmqctl") is None or not _port_open(5672):
        _missing("RabbitMQ is not running on 127.0.0.1:5672")
    for args in (["add_vhost", VHOST], ["set_permissions", "-p", VHOST, "guest", ".*", ".*",
                                        ".*"]):
        subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, timeout=60)
    logs = _start(host, f"amqp://guest:guest@127.0.0.1:5672/{VHOST}")
    run_app(host["env"], host["dir"], "many", "20", "rabbit")
    wait_for(lambda: len(_pairs(host)) == 40, 60, "40 deliveries through RabbitMQ", logs)
    assert set(_pairs(host).values()) == {1}
    assert "amqp://" in logs[0].read_text()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A Redis server of this test's own on port 6390 (never the shared one), without
    persistence: restarting it loses what was queued."""
    if shutil.which("redis-server") is None:
        _missing("redis-server is not installed")
    port = 6390
    if _port_open(port):
        _missing(f"port {port} is taken; the broker-restart test needs it for its own Redis")
    state: dict[str, Any] = {"port": port, "proc": None}

    def start() -> None:
        state["proc"] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _port_open(port), 20, "the own Redis to listen", [])

    def kill() -> None:
        state["proc"].kill()
        state["proc"].wait(10)

    state["start"], state["kill"] = start, kill
    start()
    yield state
    if state["proc"].poll() is None:
        kill()


def test_a_broker_restarted_while_work_is_queued_loses_nothing(host, own_redis):
    # a short lease, and few tasks in the broker at once so that none waits in the queue
    # that long (a lease shorter than the queue's wait hands over again what is only slow)
    host["env"].update({"SIGNALBUS_CELERY_LEASE": "4", "SIGNALBUS_CELERY_MAX_HANDED_OVER": "20"})
    logs = _start(host, f"redis://127.0.0.1:{own_redis['port']}/0")
    run_app(host["env"], host["dir"], "many", "150", "restart")
    wait_for(lambda: len(_pairs(host)) >= 10, 60, "the first deliveries", logs)
    own_redis["kill"]()  # queued tasks are lost with it
    lost_at = len(_pairs(host))
    time.sleep(1.0)
    own_redis["start"]()
    wait_for(lambda: len(_pairs(host)) == 300, 120, "all 300 deliveries", logs)
    assert lost_at < 300, "the restart came after the work: it tested nothing"
    with host["engine"].connect() as conn:
        pending = conn.execute(text(
            "SELECT count(*) FROM signalbus_outbox_deliveries WHERE state <> 'delivered'"
        )).scalar()
    assert pending == 0
    assert set(_pairs(host).values()) == {1}
