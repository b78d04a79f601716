"""SIGNALBUS_DELIVERY = "celery" with real processes: two Celery workers (prefork, one
child each) on Redis, a ``signalbus relay``, and host processes that commit.

The workers and the relay are started once for the module; each test starts from
empty tables, an empty Redis database and an empty record of receiver calls.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

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

REDIS_DB = 7
BROKER = f"redis://127.0.0.1:6379/{REDIS_DB}"


def _redis() -> Any:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    try:
        client.ping()
    except Exception as exc:
        message = f"Redis at 127.0.0.1:6379 is not available: {exc}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + " (CI=true: the celery tests must run)", pytrace=False)
        pytest.skip(message)
    return client


@dataclasses.dataclass
class Cluster:
    dir: Path
    env: dict[str, str]
    engine: Engine
    redis: Any
    queue: str
    workers: list[subprocess.Popen[bytes]]
    relay: subprocess.Popen[bytes]
    logs: list[Path]

    @property
    def received_path(self) -> Path:
        return Path(self.env["CEL_RECEIVED"])

    def calls(self) -> list[list[Any]]:
        return received(self.received_path)

    def run(self, *args: str) -> None:
        run_app(self.env, self.dir, *args)

    def wait(self, check: Any, timeout: float, what: str) -> Any:
        return wait_for(check, timeout, what, self.logs)

    def scalar(self, query: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(query)).scalar()

    def settled(self) -> bool:
        """Nothing pending in the outbox (events nor deliveries)."""
        return self.scalar(
            "SELECT (SELECT count(*) FROM signalbus_outbox WHERE state = 'pending') + "
            "(SELECT count(*) FROM signalbus_outbox_deliveries WHERE state = 'pending')") == 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from conftest import PG_SCHEMA, pg_engine

    engine = pg_engine()  # skips (fails under CI) without PostgreSQL
    client = _redis()
    client.flushdb()
    directory = tmp_path_factory.mktemp("celery")
    write_app(directory)
    (directory / "flags").mkdir()
    queue = f"signalbus_test_{os.getpid()}"
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": os.pathsep.join([str(directory), env.get("PYTHONPATH", "")]),
        "CEL_DB_URL": str(engine.url.render_as_string(hide_password=False)),
        "CEL_DB_SCHEMA": PG_SCHEMA,
        "CEL_BROKER": BROKER,
        "CEL_RECEIVED": str(directory / "received.jsonl"),
        "CEL_FLAGS": str(directory / "flags"),
        "SIGNALBUS_CELERY_QUEUE": queue,
        "SIGNALBUS_CELERY_LEASE": "20",
        "SIGNALBUS_CELERY_MAX_HANDED_OVER": "100",
        "SIGNALBUS_OUTBOX_POLL": "0.2",
        "SIGNALBUS_OUTBOX_MAX_ATTEMPTS": "3",
        "SIGNALBUS_OUTBOX_BACKOFF_BASE": "0.2",
        "SIGNALBUS_OUTBOX_BACKOFF_CAP": "10",
    })
    env.pop("SIGNALBUS_MUTED", None)
    run_app(env, directory, "setup")
    logs = [directory / "worker1.log", directory / "worker2.log", directory / "relay.log"]
    workers = [start_worker(env, directory, f"w{i}", queue, logs[i - 1]) for i in (1, 2)]
    relay = start_relay(env, directory, logs[2])
    c = Cluster(directory, env, engine, client, queue, workers, relay, logs)
    try:
        for log in logs[:2]:
            c.wait(lambda log=log: log.exists() and "ready." in log.read_text(), 60,
                   f"{log.name} to be ready")
        yield c
    finally:
        for proc in [relay, *workers]:
            stop(proc)
        client.flushdb()
        with engine.begin() as conn:
            for table in ("signalbus_outbox_deliveries", "signalbus_outbox",
                          "signalbus_outbox_changes", "signalbus_outbox_schema", "cel_members",
                          "cel_entries"):
                conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()


@pytest.fixture
def celery(cluster: Cluster) -> Cluster:
    """The cluster, idle, with empty tables and no record of earlier calls."""
    cluster.wait(cluster.settled, 60, "the previous test's deliveries to settle")
    with cluster.engine.begin() as conn:
        conn.execute(text("TRUNCATE signalbus_outbox_deliveries, signalbus_outbox, cel_members, "
                          "cel_entries, signalbus_outbox_changes RESTART IDENTITY"))
    cluster.received_path.write_text("")  # truncated: the workers keep it open
    for flag in (cluster.dir / "flags").iterdir():
        flag.unlink()
    for proc in [cluster.relay, *cluster.workers]:
        assert proc.poll() is None, "a process of the cluster died; see its log"
    return cluster


def pairs(calls: list[list[Any]], *names: str) -> collections.Counter[tuple[str, str]]:
    return collections.Counter((c[0], c[1]) for c in calls if not names or c[1] in names)


def test_importing_signalbus_never_imports_celery():
    code = ("import sys, signalbus, signalbus.celery, signalbus.cli, signalbus.outbox.worker;"
            "import signalbus.celery.relay, signalbus.celery.backend;"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu'));"
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_rollback_enqueues_nothing_and_nothing_is_sent_inside_a_transaction(celery):
    # the host flushes a row and keeps its transaction open for 1.5 s while the relay
    # polls every 0.2 s, then rolls back; the committing process never imports Celery
    # (checked by the app's main)
    celery.run("rollback", "1.5")
    celery.wait(lambda: len(celery.calls()) == 2, 30, "kept@ to be delivered")
    calls = celery.calls()
    assert {c[8]["data"]["email"] for c in calls} == {"kept@example.com"}
    assert celery.scalar("SELECT count(*) FROM signalbus_outbox") == 1
    assert celery.scalar("SELECT count(*) FROM signalbus_outbox_deliveries") == 2
    assert celery.redis.llen(celery.queue) == 0


def test_two_workers_deliver_2000_events_every_pair_exactly_once(celery):
    celery.run("many", "2000", "bulk")
    calls = celery.wait(lambda: (c := celery.calls()) and len(c) >= 4000 and c, 180,
                        "4,000 deliveries")
    celery.wait(celery.settled, 30, "the outbox to settle")
    time.sleep(0.5)  # a duplicate would show up now
    calls = celery.calls()
    counts = pairs(calls)
    assert len(counts) == 4000
    assert set(counts.values()) == {1}
    assert {c[4] for c in calls} == {1}  # every first attempt succeeded
    assert len({c[5] for c in calls}) == 2, "both workers took part"
    assert {c[7] for c in calls} == {"celery_app"}  # run inside the Flask app context
    assert celery.scalar("SELECT count(*) FROM signalbus_outbox_deliveries "
                         "WHERE state = 'delivered' AND attempts = 1") == 4000


def test_retry_after_2_delays_the_next_attempt_2_seconds(celery):
    celery.run("register", "retry2@example.com")
    celery.wait(lambda: any(c[1] == "welcome" for c in celery.calls()), 30,
                "the second attempt")
    calls = celery.calls()
    first = next(c for c in calls if c[1] == "welcome-retry")
    second = next(c for c in calls if c[1] == "welcome")
    assert (first[4], second[4]) == (1, 2)
    assert second[6] - first[6] >= 2.0
    assert pairs(calls, "audit") == {(first[0], "audit"): 1}


def test_dead_after_max_attempts_then_retry_revives_it(celery):
    (celery.dir / "flags" / "broken").touch()
    celery.run("register", "broken@example.com")
    celery.wait(lambda: celery.scalar("SELECT count(*) FROM signalbus_outbox_deliveries "
                                      "WHERE state = 'dead'") == 1, 30, "the delivery to die")
    attempts = [c[4] for c in celery.calls() if c[1] == "welcome-broken"]
    assert attempts == [1, 2, 3]
    error = celery.scalar("SELECT last_error FROM signalbus_outbox_deliveries "
                          "WHERE state = 'dead'")
    assert "still broken" in error
    (celery.dir / "flags" / "broken").unlink()
    proc = subprocess.run([sys.executable, "-m", "signalbus", "retry", "--all",
                           "--app", "celery_app:create_app"], env=celery.env, cwd=celery.dir,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "1 dead deliveries" in proc.stdout
    celery.wait(lambda: any(c[1] == "welcome" for c in celery.calls()), 30, "the revival")
    assert [c[4] for c in celery.calls() if c[1] == "welcome"] == [1]  # a fresh count
    celery.wait(celery.settled, 10, "the outbox to settle")


def test_per_row_order_is_kept_across_workers(celery):
    celery.run("versions", "10", "8")  # 10 rows, 8 versions each: 80 events, 160 deliveries
    celery.wait(lambda: len(celery.calls()) >= 160, 120, "160 deliveries")
    seen: dict[tuple[Any, str], list[int]] = collections.defaultdict(list)
    for c in celery.calls():
        seen[(c[2], c[1])].append(c[3])
    assert len(seen) == 20
    for key, versions in seen.items():
        assert versions == list(range(8)), key
    assert len({c[5] for c in celery.calls()}) == 2


def test_status_shows_what_is_handed_over_and_not_done(celery):
    (celery.dir / "flags" / "broken").touch()
    celery.run("register", "block@example.com")
    flag = celery.wait(lambda: next((celery.dir / "flags").glob("blocked-*"), None), 30,
                       "the receiver to block")
    proc = subprocess.run([sys.executable, "-m", "signalbus", "status", "--json",
                           "--app", "celery_app:create_app"], env=celery.env, cwd=celery.dir,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    import json

    report = json.loads(proc.stdout)
    assert report["handed_over"] == 1
    assert report["deliveries"]["pending"] == 1
    os.kill(int(flag.read_text()), signal.SIGKILL)  # let the test end: see the kill test
    celery.wait(lambda: any(c[1] == "welcome" for c in celery.calls()), 60, "completion")


def test_a_worker_child_killed_mid_task_the_delivery_completes_once(celery):
    celery.run("register", "block@example.com", "other@example.com")
    flag = celery.wait(lambda: next((celery.dir / "flags").glob("blocked-*"), None), 30,
                       "the receiver to block")
    os.kill(int(flag.read_text()), signal.SIGKILL)  # the pool child running the task
    event_id = flag.name.removeprefix("blocked-")
    celery.wait(lambda: pairs(celery.calls(), "welcome")[(event_id, "welcome")] >= 1, 60,
                "the delivery to complete elsewhere")
    celery.wait(celery.settled, 30, "the outbox to settle")
    time.sleep(0.5)
    counts = pairs(celery.calls())
    assert counts[(event_id, "welcome")] == 1
    assert counts[(event_id, "audit")] == 1
    assert len(counts) == 4 and set(counts.values()) == {1}


def test_dropped_broker_connections_lose_nothing(celery):
    celery.run("many", "300", "drop")

    def kill_clients() -> int:
        killed = 0
        for client in celery.redis.client_list():
            if client.get("db") == str(REDIS_DB) and client["id"] != str(
                    celery.redis.client_id()):
                try:
                    celery.redis.client_kill_filter(_id=client["id"])
                    killed += 1
                except Exception:
                    pass
        return killed

    for _ in range(3):  # while work is queued and running
        time.sleep(0.3)
        kill_clients()
    celery.wait(lambda: len(pairs(celery.calls())) == 600, 120, "600 deliveries")
    celery.wait(celery.settled, 60, "the outbox to settle")
    assert len(pairs(celery.calls())) == 600


def test_the_same_event_reaches_the_receiver_as_inline(celery):
    celery.run("parity")
    celery.wait(lambda: len(celery.calls()) == 4, 30, "the celery deliveries")
    via_celery = [c[8] for c in celery.calls() if c[1] == "audit"]
    celery.wait(celery.settled, 10, "the outbox to settle")
    with celery.engine.begin() as conn:
        conn.execute(text("TRUNCATE cel_members"))
    celery.received_path.write_text("")
    celery.run("inline")
    inline = [c[8] for c in celery.calls() if c[1] == "audit"]
    assert len(inline) == len(via_celery) == 2

    def comparable(event: dict[str, Any]) -> dict[str, Any]:  # a new transaction each
        return {k: v for k, v in event.items() if k not in ("id", "occurred_at")}

    assert [comparable(e) for e in via_celery] == [comparable(e) for e in inline]
    assert via_celery[0]["data"]["balance"] == "12.50"
    assert via_celery[1]["changes"] == {"version": [0, 5]}
    assert [(e["source"], e["context"]) for e in via_celery] == [
        ("orm", {"actor": "ada", "request_id": "r-1"}),
        ("bulk", {"actor": "ada", "request_id": "r-2"}),
    ]


def test_changes_captured_by_triggers_are_delivered_through_celery(celery):
    """A trigger-captured table written outside the ORM: the relay turns the captured
    changes into events, the Celery workers deliver them."""
    with celery.engine.begin() as conn:
        conn.execute(text("INSERT INTO cel_entries (id, email) VALUES (1, 'a@x.org'), "
                          "(2, 'b@x.org')"))
    celery.wait(lambda: len(celery.calls()) == 2, 30, "the captured changes' deliveries")
    events = sorted((c[8] for c in celery.calls()), key=lambda e: e["pk"])
    assert [(e["signal"], e["pk"], e["source"], e["data"]["email"]) for e in events] == [
        ("cel_entry", 1, "trigger", "a@x.org"), ("cel_entry", 2, "trigger", "b@x.org")]
    assert celery.scalar("SELECT count(*) FROM signalbus_outbox_changes") == 0
