"""Outbox worker processes: no loss on a host crash, a worker killed mid-batch, three
workers sharing the work, graceful SIGTERM.

Every process here is a real ``python`` child: the host app and its receivers are a
module written to the test's directory (:data:`APP`), the workers are
``python -m signalbus worker --app outbox_app:make``. Receivers append a line per call
to a file (appends of one short line are atomic), so deliveries can be counted, and
their order checked, across processes.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

APP = '''
"""A host app for the outbox process tests (written by tests/test_outbox_processes.py)."""
import json, os, pathlib, signal, sys, time

from sqlalchemy import String, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus, signalbus.outbox, signalbus.sqlite

URL = os.environ["OUTBOX_TEST_URL"]
if URL.startswith("sqlite"):
    engine = signalbus.sqlite.configure(create_engine(URL, connect_args={"timeout": 60}))
else:
    engine = create_engine(
        URL, connect_args={"options": "-csearch_path=" + os.environ["OUTBOX_TEST_SCHEMA"]})


class Base(DeclarativeBase):
    pass


class Member(Base):
    __tablename__ = "ob_proc_members"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(default=0)



signalbus.bind(Member, "insert", "ob_proc_saved")
signalbus.bind(Member, "update", "ob_proc_saved")


RECEIVED = os.open(os.environ["OUTBOX_RECEIVED"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)


def record(name, event):
    line = [event.id, name, event.pk, event.data["version"], event.attempt, os.getpid()]
    os.write(RECEIVED, (json.dumps(line) + "\\n").encode())


def welcome(sender, event, **kw):
    record("welcome", event)
    if event.data["email"] == os.environ.get("OUTBOX_BLOCK_AT"):
        pathlib.Path(os.environ["OUTBOX_BLOCKED_FLAG"]).touch()
        time.sleep(600)  # until the test kills this worker
    time.sleep(float(os.environ.get("OUTBOX_SLOW", "0")))


def audit(sender, event, **kw):
    record("audit", event)


def count(sender, event, **kw):
    record("count", event)


Session = sessionmaker(engine)


def make():
    bus = signalbus.SignalBus()
    config = {"SIGNALBUS_DELIVERY": "outbox"}
    for key, value in os.environ.items():
        if key.startswith("SIGNALBUS_OUTBOX_"):
            config[key] = value
    runtime = bus.attach(Session, config=config, plugins=False)
    names = os.environ.get("OUTBOX_RECEIVERS", "welcome,audit").split(",")
    for name in names:
        runtime.connect("ob_proc_saved", globals()[name], name="app:" + name)
    return bus


def main(argv):
    command, *args = argv
    if command == "setup":
        Base.metadata.create_all(engine)
        signalbus.outbox.create_all(engine)
    elif command == "register":  # N registrations, one commit each; SIGKILL after the last
        n, kill = int(args[0]), args[1:] == ["--kill"]
        make()
        done = 0

        @event.listens_for(Session, "after_commit")
        def die(session):
            # after the database commit, before anything else runs in this process
            if kill and done == n - 1:
                os.kill(os.getpid(), signal.SIGKILL)

        for i in range(n):
            with Session() as s:
                s.add(Member(email=f"m{i}@example.com"))
                s.commit()
            done += 1
    elif command == "churn":  # N events, in commits of 1-20 changes: inserts, updates
        import random
        n, rng, made, ids = int(args[0]), random.Random(int(args[1])), 0, []
        make()
        while made < n:
            with Session() as s:
                new, touched = [], set()
                for _ in range(min(rng.randint(1, 20), n - made)):
                    old = [i for i in ids if i not in touched]
                    if old and rng.random() < 0.6:
                        pk = rng.choice(old)
                        touched.add(pk)
                        s.get(Member, pk).version += 1
                    else:
                        member = Member(email=f"c{made}@example.com")
                        s.add(member)
                        new.append(member)
                    made += 1
                s.commit()
                ids += [m.id for m in new]
    elif command == "versions":  # N rows, then V-1 updates of every row (one commit each)
        n, versions = int(args[0]), int(args[1])
        make()
        with Session() as s:
            s.add_all(Member(email=f"m{i}@example.com") for i in range(n))
            s.commit()
        for v in range(1, versions):
            with Session() as s:
                for member in s.query(Member):
                    member.version = v
                s.commit()

'''


@pytest.fixture
def app_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of the child processes: the app module, its database, short times."""
    from conftest import PG_SCHEMA  # the root conftest, on sys.path as rootdir

    (tmp_path / "outbox_app.py").write_text(APP)
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]),
        "OUTBOX_TEST_URL": database_url,
        "OUTBOX_TEST_SCHEMA": PG_SCHEMA,
        "OUTBOX_RECEIVED": str(tmp_path / "received.jsonl"),
        "SIGNALBUS_OUTBOX_POLL": "0.2",
        "SIGNALBUS_OUTBOX_LEASE": "3",
    })
    env.pop("SIGNALBUS_MUTED", None)
    run_app(env, tmp_path, "setup")
    return env


@pytest.fixture
def db(app_env: dict[str, str]) -> Engine:
    """The test's own view of the database the children use."""
    url = app_env["OUTBOX_TEST_URL"]
    if url.startswith("sqlite"):
        engine = create_engine(url)
    else:
        engine = create_engine(
            url, connect_args={"options": f"-csearch_path={app_env['OUTBOX_TEST_SCHEMA']}"})
    yield engine
    with engine.begin() as conn:
        for table in ("signalbus_outbox_deliveries", "signalbus_outbox",
                      "signalbus_outbox_schema", "ob_proc_members"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    engine.dispose()


def run_app(env: dict[str, str], cwd: Path, *args: str,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    # imported, not run as __main__, so that events name the model outbox_app:Member
    code = "import sys, outbox_app; outbox_app.main(sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        pytest.fail(f"outbox_app {args} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def worker(env: dict[str, str], cwd: Path, *args: str, **extra_env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "signalbus", "worker", "--app", "outbox_app:make", "--json",
         *args],
        env={**env, **extra_env}, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"worker exited {proc.returncode}:\n{err}"
    return json.loads(out)  # type: ignore[no-any-return]


class Call(NamedTuple):
    event_id: str
    receiver: str
    pk: int
    version: int
    attempt: int
    pid: int


def received(env: dict[str, str]) -> list[Call]:
    """Every receiver call, in the order they were made."""
    path = Path(env["OUTBOX_RECEIVED"])
    if not path.exists():
        return []
    text = path.read_text()
    # a worker may be writing the last line right now: it is read on the next call
    complete = text[:text.rfind("\n") + 1]
    return [Call(*json.loads(line)) for line in complete.splitlines()]


def scalar(db: Engine, sql: str) -> Any:
    with db.connect() as conn:
        return conn.execute(text(sql)).scalar()


def pairs(env: dict[str, str]) -> Counter[tuple[str, str]]:
    return Counter((r.event_id, r.receiver) for r in received(env))


def test_no_loss_when_the_host_dies_right_after_its_last_commit(app_env, db, tmp_path):
    host = run_app(app_env, tmp_path, "register", "500", "--kill", check=False)
    assert host.returncode == -signal.SIGKILL, host.stderr
    assert scalar(db, "SELECT count(*) FROM ob_proc_members") == 500
    assert received(app_env) == []  # nothing was delivered by the host
    assert scalar(db, "SELECT count(*) FROM signalbus_outbox") == 500
    stats = finish(worker(app_env, tmp_path, "--once"))
    assert stats["delivered"] == 1000
    got = pairs(app_env)
    assert len(got) == 1000
    assert set(got.values()) == {1}  # each receiver once per event
    assert Counter(receiver for _, receiver in got) == {"welcome": 500, "audit": 500}


def test_a_worker_killed_mid_batch_loses_nothing(app_env, db, tmp_path):
    run_app(app_env, tmp_path, "register", "60")
    flag = tmp_path / "blocked"
    batch, blocked_event = 20, 25
    # Successes are acknowledged at the end of each batch (or after ACK_INTERVAL, set
    # long here so that the count below is exact): batches of 20 events (each to
    # welcome then audit) are claimed in commit order, so the worker dies in its second
    # batch after 5 events (10 deliveries) not acknowledged, calling the 11th.
    first = worker(app_env, tmp_path, "--batch", str(batch),
                   OUTBOX_BLOCK_AT=f"m{blocked_event}@example.com",
                   OUTBOX_BLOCKED_FLAG=str(flag), SIGNALBUS_OUTBOX_ACK_INTERVAL="600")
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert first.poll() is None, first.communicate()[1]
        assert time.monotonic() < deadline, "the receiver never blocked"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)  # in the middle of its second batch
    first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL
    # in flight: claimed, called, not acknowledged (the calls since the last batch ended)
    in_flight = {(r.event_id, r.receiver) for r in received(app_env)} - delivered_pairs(db)
    acknowledged = 2 * (blocked_event // batch * batch)
    assert len(delivered_pairs(db)) == acknowledged
    assert len(in_flight) == 2 * blocked_event - acknowledged + 1
    left_claimed = scalar(db, "SELECT count(*) FROM signalbus_outbox "
                              "WHERE state = 'pending' AND claimed_by IS NOT NULL")
    assert left_claimed == batch  # its whole batch, until the lease expires

    time.sleep(float(app_env["SIGNALBUS_OUTBOX_LEASE"]) + 0.5)
    finish(worker(app_env, tmp_path, "--once"))
    got = pairs(app_env)
    assert len(got) == 120  # every (event, receiver) pair at least once
    repeats = {pair: n for pair, n in got.items() if n > 1}
    assert repeats == dict.fromkeys(in_flight, 2)  # only the in-flight ones, once more
    assert scalar(db, "SELECT count(*) FROM signalbus_outbox WHERE state <> 'done'") == 0
    assert scalar(db, "SELECT count(*) FROM signalbus_outbox_deliveries") == 0


def delivered_pairs(db: Engine) -> set[tuple[str, str]]:
    """The (event, receiver) pairs the outbox records as delivered: every receiver of a
    ``done`` event (none failed here), and delivered delivery rows."""
    with db.connect() as conn:
        done = [json.loads(p) if isinstance(p, str) else p for (p,) in conn.execute(text(
            "SELECT payload FROM signalbus_outbox WHERE state = 'done'"))]
        rows = {(r.event_id, r.receiver.removeprefix("app:")) for r in conn.execute(text(
            "SELECT event_id, receiver FROM signalbus_outbox_deliveries "
            "WHERE state = 'delivered'"))}
    return rows | {(p["id"], name) for p in done for name in ("welcome", "audit")}


def test_sigterm_finishes_the_current_delivery_and_releases_the_rest(app_env, db, tmp_path):
    run_app(app_env, tmp_path, "register", "40")
    proc = worker(app_env, tmp_path, "--batch", "80", OUTBOX_SLOW="0.05")
    deadline = time.monotonic() + 60
    while len(received(app_env)) < 4:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stats = finish(proc, timeout=30)
    assert stats["released"] > 0
    # the current event finishes (both its receivers), the other events are released
    assert stats["delivered"] % 2 == 0
    assert stats["delivered"] // 2 + stats["released"] == 40
    assert scalar(db, "SELECT count(*) FROM signalbus_outbox "
                      "WHERE claimed_by IS NOT NULL") == 0  # nothing left claimed
    assert len(received(app_env)) == stats["delivered"]  # no call without its result recorded
    finish(worker(app_env, tmp_path, "--once"))  # no lease to wait for
    got = pairs(app_env)
    assert len(got) == 80
    assert set(got.values()) == {1}


# PostgreSQL only: SQLite supports one worker at a time (docs/delivery.md)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_three_workers_share_5000_events_exactly_once_in_row_order(app_env, db, tmp_path):
    env = {**app_env, "OUTBOX_RECEIVERS": "welcome,audit,count", "SIGNALBUS_OUTBOX_POLL": "1",
           "SIGNALBUS_OUTBOX_LEASE": "30"}
    workers = [worker(env, tmp_path, "--batch", "50") for _ in range(3)]
    try:
        started = time.monotonic()
        run_app(env, tmp_path, "versions", "1000", "5")  # 1,000 inserts, 4,000 updates
        deadline = time.monotonic() + 180
        while scalar(db, "SELECT count(*) FROM signalbus_outbox "
                         "WHERE state = 'done'") < 5000:
            for proc in workers:
                assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the workers did not deliver everything"
            time.sleep(0.1)
        elapsed = time.monotonic() - started
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
    stats = [finish(proc, timeout=60) for proc in workers]
    rows = received(app_env)
    log.info("3 workers delivered 15,000 deliveries of 5,000 events in %.1fs; per worker %s",
             elapsed, [s["delivered"] for s in stats])
    assert sum(s["delivered"] for s in stats) == 15000
    assert scalar(db, "SELECT count(*) FROM signalbus_outbox") == 5000
    got = Counter((r.event_id, r.receiver) for r in rows)
    assert len(got) == 15000 and set(got.values()) == {1}  # every pair exactly once
    versions: dict[tuple[str, int], list[int]] = defaultdict(list)
    for r in rows:  # in the order the receivers ran
        versions[(r.receiver, r.pk)].append(r.version)
    assert len(versions) == 3000
    assert all(v == [0, 1, 2, 3, 4] for v in versions.values())  # each row in commit order


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_worker_killed_during_a_slow_delivery_repeats_only_that_one(app_env, db, tmp_path):
    """32 quick successes, then a receiver that blocks, SIGKILL seconds later: the 32
    were acknowledged meanwhile (ACK_INTERVAL, 0.5 s), so only the blocked one repeats."""
    run_app(app_env, tmp_path, "register", "33")
    flag = tmp_path / "blocked"
    first = worker(app_env, tmp_path, "--batch", "100", OUTBOX_BLOCK_AT="m32@example.com",
                   OUTBOX_BLOCKED_FLAG=str(flag))
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert first.poll() is None, first.communicate()[1]
        assert time.monotonic() < deadline, "the receiver never blocked"
        time.sleep(0.02)
    time.sleep(2.0)  # four acknowledgement intervals, and renewals of the 3 s lease
    assert len(delivered_pairs(db)) == 64  # acknowledged while the slow one runs
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    time.sleep(float(app_env["SIGNALBUS_OUTBOX_LEASE"]) + 0.5)
    finish(worker(app_env, tmp_path, "--once"))
    got = pairs(app_env)
    assert len(got) == 66
    blocked = {r.event_id for r in received(app_env) if r.pk == 33}
    assert {pair: n for pair, n in got.items() if n > 1} == {(blocked.pop(), "welcome"): 2}


CHAOS_SECONDS = 25.0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_chaos_workers_killed_and_stopped_at_random_lose_nothing(app_env, db, tmp_path):
    """3,000 events committed while three workers are SIGTERMed or SIGKILLed at random
    (and replaced) for 25 s: every (event, receiver) is delivered, nothing is left
    pending or claimed, repeats come only from killed workers, and each receiver sees
    each row's events in commit order (first deliveries)."""
    seed = int(os.environ.get("OUTBOX_CHAOS_SEED", random.randrange(10**6)))
    log.info("chaos seed %d (OUTBOX_CHAOS_SEED=%d to run it again)", seed, seed)
    rng = random.Random(seed)
    env = {**app_env, "SIGNALBUS_OUTBOX_LEASE": "2", "SIGNALBUS_OUTBOX_POLL": "0.2",
           "OUTBOX_SLOW": "0.002"}
    code = "import sys, outbox_app; outbox_app.main(sys.argv[1:])"
    host = subprocess.Popen([sys.executable, "-c", code, "churn", "3000", str(seed)],
                            env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    workers = [worker(env, tmp_path, "--batch", "20") for _ in range(3)]
    killed: set[int] = set()
    stopped: list[subprocess.Popen[str]] = []
    ended: dict[int, tuple[int, str, str]] = {}  # pid -> exit code, stdout, stderr
    early: set[int] = set()  # SIGTERMed while starting: died of it, with nothing claimed
    try:
        started = time.monotonic()
        deadline = started + CHAOS_SECONDS
        born = {proc.pid: started for proc in workers}
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.8, 2.0))
            i = rng.randrange(len(workers))
            victim = workers[i]
            # SIGTERM a worker old enough to be delivering (younger ones would die of it
            # while importing, before their handlers exist), SIGKILL any
            if rng.random() < 0.5 and time.monotonic() - born[victim.pid] > 2.5:
                victim.send_signal(signal.SIGTERM)
            else:
                victim.send_signal(signal.SIGKILL)
                killed.add(victim.pid)
            stopped.append(victim)
            workers[i] = worker(env, tmp_path, "--batch", "20")
            born[workers[i].pid] = time.monotonic()
        # correctness, not speed: a loaded machine may take longer to commit
        host_err = host.communicate(timeout=300)[1]
        assert host.returncode == 0, host_err
        committed = time.monotonic() - started
        assert scalar(db, "SELECT count(*) FROM signalbus_outbox") == 3000
        drained = time.monotonic() + 120
        while scalar(db, "SELECT count(*) FROM signalbus_outbox WHERE state <> 'done'"):
            for proc in workers:
                assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < drained, "the workers did not deliver everything"
            time.sleep(0.1)
        log.info("chaos: %.1fs of chaos, host done after %.1fs, all delivered after %.1fs",
                 CHAOS_SECONDS, committed, time.monotonic() - started)
    finally:  # every child ends and has its pipes closed, whatever happened above
        if host.poll() is None:
            host.kill()
            host.wait()
        if host.stderr is not None:
            host.stderr.close()
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*stopped, *workers]:
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            ended[proc.pid] = (proc.returncode, out, err)
    for pid, (code, out, err) in ended.items():
        if pid in killed:
            assert code == -signal.SIGKILL, err
        elif code == -signal.SIGTERM:  # stopped while starting, before run()
            assert '"delivered"' not in out, err
            early.add(pid)
        else:
            assert code == 0, f"worker exited {code}:\n{err}"
            json.loads(out)  # a stopped worker exits 0 with its counts
    log.info("chaos: %d workers replaced: %d SIGKILLed, %d SIGTERMed while starting, %d "
             "stopped by SIGTERM", len(stopped), len(killed), len(early),
             len(stopped) - len(killed) - len(early))
    killed |= early
    assert scalar(db, "SELECT count(*) FROM signalbus_outbox WHERE state = 'pending' "
                      "OR claimed_by IS NOT NULL") == 0
    assert scalar(db, "SELECT count(*) FROM signalbus_outbox_deliveries") == 0
    calls = received(app_env)
    got = Counter((r.event_id, r.receiver) for r in calls)
    assert len(got) == 6000  # every (event, receiver) pair at least once
    by_live = Counter((r.event_id, r.receiver) for r in calls if r.pid not in killed)
    # a repeat needs a killed worker (every delivering worker may have been killed)
    assert all(n == 1 for n in by_live.values())
    firsts: dict[tuple[str, int], list[int]] = defaultdict(list)
    for r in calls:
        seen = firsts[(r.receiver, r.pk)]
        if r.version not in seen:
            seen.append(r.version)
    assert all(v == sorted(v) for v in firsts.values())  # each row in commit order
