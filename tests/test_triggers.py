"""Trigger capture (``bind(..., capture="trigger")``, PostgreSQL): writes from outside the
ORM — ``psql``, another process's own connection, Core statements — become the same
events as ORM capture, through the outbox, exactly once.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest
from sqlalchemy import (
    DateTime,
    Numeric,
    String,
    Uuid,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import signalbus
import signalbus.outbox
from conftest import PG_SCHEMA, PG_URL, pg_engine
from signalbus.capture import triggers
from signalbus.outbox import changes as outbox_changes
from signalbus.outbox.worker import Worker
from tests.conftest import Recorder


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "sb_accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    plan: Mapped[str] = mapped_column(String(20), default="free", server_default="free")
    balance: Mapped[decimal.Decimal] = mapped_column(
        Numeric(10, 2), default=decimal.Decimal("0.00"), server_default="0")
    password_hash: Mapped[str | None] = mapped_column(String(200))
    seen_at: Mapped[dt.datetime | None] = mapped_column("seen", DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True),
                                                    server_default=func.now())


class Membership(Base):
    """A composite string key in a schema of its own."""

    __tablename__ = "sb_memberships"
    __table_args__ = {"schema": "sb_crm"}
    team: Mapped[str] = mapped_column(String(40), primary_key=True)
    member: Mapped[str] = mapped_column(String(40), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))


class Token(Base):
    """A uuid key."""

    __tablename__ = "sb_tokens"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    label: Mapped[str] = mapped_column(String(40))


PSQL_ENV = {**os.environ, "PGOPTIONS": f"-csearch_path={PG_SCHEMA}"}


def psql(sql: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``sql`` with the ``psql`` client, as an operator would (one transaction)."""
    url = urlparse(PG_URL.replace("+psycopg", ""))
    proc = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
         "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 5432),
         "-U", url.username or "postgres", "-d", url.path.lstrip("/"), "-c", sql],
        capture_output=True, text=True, timeout=60, env=PSQL_ENV)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = pg_engine()
    with eng.begin() as conn:
        conn.execute(text("CREATE SCHEMA IF NOT EXISTS sb_crm"))
    Base.metadata.drop_all(eng)
    Base.metadata.create_all(eng)
    signalbus.outbox.drop_all(eng)
    signalbus.outbox.create_all(eng)
    yield eng
    with eng.begin() as conn:
        triggers.uninstall(conn, [], changes_table=outbox_changes.changes_table(conn),
                           discard=True)
    Base.metadata.drop_all(eng)
    signalbus.outbox.drop_all(eng)
    eng.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine)


@pytest.fixture
def bus(factory: sessionmaker[Session]) -> signalbus.SignalBus:
    b = signalbus.SignalBus()
    b.attach(factory, config={"SIGNALBUS_DELIVERY": "outbox"}, plugins=False)
    return b


def bind_accounts(**kw: Any) -> None:
    signalbus.bind(Account, "insert", "account_created", capture="trigger", **kw)
    signalbus.bind(Account, "update", "account_changed", capture="trigger", **kw)
    signalbus.bind(Account, "delete", "account_closed", capture="trigger", **kw)


def install(bus: signalbus.SignalBus, engine: Engine) -> list[triggers.TriggerTable]:
    with engine.begin() as conn:
        found = outbox_changes.trigger_tables(bus.runtime(), conn)
        triggers.install(conn, found)
    return found


def drain(bus: signalbus.SignalBus) -> Any:
    return Worker(bus.runtime(), listen=False, handle_signals=False).run(once=True)


class Received(Recorder):
    """What :func:`record` (a receiver with a durable name, as the outbox needs) got."""

    def listen(self, *names: str) -> Received:
        for name in names:
            signalbus.signal(name).connect(record)
        return self


RECEIVED = Received()


def record(sender: Any, event: signalbus.Event, **kw: Any) -> None:
    RECEIVED.calls.append((event.signal, sender, event))


@pytest.fixture
def recorder() -> Iterator[Received]:
    RECEIVED.calls.clear()
    yield RECEIVED.listen("account_created", "account_changed", "account_closed",
                          "membership_changed", "token_created")
    RECEIVED.calls.clear()


def changes_left(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(signalbus.outbox.schema.changes)))


def test_psql_insert_update_delete_are_delivered(bus, engine, recorder):
    bind_accounts()
    install(bus, engine)
    psql("INSERT INTO sb_accounts (id, email, plan, balance) VALUES (1, 'ada@example.com', "
         "'free', 9.90), (2, 'bob@example.com', 'free', 0)")
    psql("UPDATE sb_accounts SET plan = 'pro', balance = 12.50 WHERE id = 1")
    psql("DELETE FROM sb_accounts WHERE id = 2")
    assert recorder.calls == []  # nothing until a worker runs: stored, not lost
    stats = drain(bus)
    assert stats.converted == 3
    assert recorder.names == ["account_created", "account_created", "account_changed",
                              "account_closed"]
    created, _bob, changed, closed = recorder.events
    assert created.source == "trigger" and created.op == "insert" and created.pk == 1
    assert created.model == f"{__name__}:Account"
    assert created.data["email"] == "ada@example.com"
    assert created.data["balance"] == "9.90"  # numeric as the ORM gives it
    assert created.data["seen_at"] is None  # attribute names, not column names
    assert "password_hash" not in created.data  # redacted
    assert dt.datetime.fromisoformat(created.data["created_at"]).tzinfo is not None
    assert changed.changes == {"plan": ("free", "pro"), "balance": ("9.90", "12.50")}
    assert closed.op == "delete" and closed.pk == 2 and closed.data["email"] == "bob@example.com"
    assert changes_left(engine) == []


def test_a_rolled_back_psql_transaction_sends_nothing(bus, engine, recorder):
    bind_accounts()
    install(bus, engine)
    proc = psql("INSERT INTO sb_accounts (id, email) VALUES (1, 'ada@example.com'); "
                "SELECT 1/0;", check=False)
    assert proc.returncode != 0
    assert changes_left(engine) == []
    drain(bus)
    assert recorder.calls == []


def test_a_transaction_coalesces_like_orm_capture(bus, engine, recorder):
    bind_accounts()
    install(bus, engine)
    psql("INSERT INTO sb_accounts (id, email, plan) VALUES (1, 'a@x.org', 'free'), "
         "(2, 'b@x.org', 'free');"
         "UPDATE sb_accounts SET plan = 'pro' WHERE id = 1;"      # insert+update: one insert
         "DELETE FROM sb_accounts WHERE id = 2;")                  # insert+delete: nothing
    drain(bus)
    assert [(n, e.pk, e.data["plan"]) for n, _s, e in recorder.calls] == [
        ("account_created", 1, "pro")]
    recorder.calls.clear()
    psql("UPDATE sb_accounts SET plan = 'team' WHERE id = 1;"
         "UPDATE sb_accounts SET plan = 'gold' WHERE id = 1;"
         "UPDATE sb_accounts SET email = 'a@x.org' WHERE id = 1;")  # no change: ignored
    drain(bus)
    assert [(n, dict(e.changes)) for n, _s, e in recorder.calls] == [
        ("account_changed", {"plan": ("pro", "gold")})]
    recorder.calls.clear()
    psql("UPDATE sb_accounts SET plan = 'x' WHERE id = 1; UPDATE sb_accounts SET plan = 'gold' "
         "WHERE id = 1")  # changed and changed back: no event
    drain(bus)
    assert recorder.calls == []


def test_when_conditions_are_judged_on_old_and_new(bus, engine, recorder):
    signalbus.bind(Account, "update", "account_changed", capture="trigger",
                   when=signalbus.changed("plan", was="free", to="pro"))
    install(bus, engine)
    psql("INSERT INTO sb_accounts (id, email, plan) VALUES (1, 'a@x.org', 'free'), "
         "(2, 'b@x.org', 'team')")
    psql("UPDATE sb_accounts SET plan = 'pro'")
    drain(bus)
    assert [e.pk for e in recorder.of("account_changed")] == [1]


def test_a_raw_connection_in_another_process_is_captured(bus, engine, recorder, tmp_path):
    bind_accounts()
    install(bus, engine)
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(f"""
        import psycopg
        with psycopg.connect({PG_URL.replace('postgresql+psycopg', 'postgresql')!r},
                             options="-csearch_path={PG_SCHEMA}") as conn:
            conn.execute("INSERT INTO sb_accounts (id, email) VALUES (7, 'cron@x.org')")
    """))
    subprocess.run([sys.executable, str(script)], check=True, timeout=60)
    drain(bus)
    assert [(e.pk, e.data["email"]) for e in recorder.of("account_created")] == [
        (7, "cron@x.org")]


def test_orm_writes_to_a_trigger_captured_table_make_one_event_each(bus, engine, factory,
                                                                   recorder):
    bind_accounts()
    install(bus, engine)
    with factory() as session:
        session.add(Account(id=1, email="orm@x.org"))
        session.commit()
        account = session.get(Account, 1)
        assert account is not None
        account.plan = "pro"
        session.commit()
    psql("INSERT INTO sb_accounts (id, email) VALUES (2, 'psql@x.org')")
    with factory() as session:  # a Core statement through the session: captured too
        session.execute(update(Account.__table__).where(Account.__table__.c.id == 2)
                        .values(plan="team"))
        session.commit()
    drain(bus)
    # one row's events in commit order (rows are independent of each other)
    assert sorted([(e.pk, n, e.source) for n, _s, e in recorder.calls],
                  key=lambda item: item[0]) == [
        (1, "account_created", "trigger"), (1, "account_changed", "trigger"),
        (2, "account_created", "trigger"), (2, "account_changed", "trigger")]
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(signalbus.outbox.schema.outbox))
        assert stored.scalar() == 4


def test_the_same_change_makes_the_same_event_through_the_orm_and_psql(engine, factory):
    """Same model, same bindings: first captured by the ORM, then by triggers."""
    seen = dt.datetime(2026, 11, 30, 8, 15, 30, 123456, tzinfo=dt.UTC)
    RECEIVED.calls.clear()
    RECEIVED.listen("account_created", "account_changed", "account_closed")
    saved = signalbus.bindings.registry.snapshot()

    def run(capture: str) -> list[signalbus.Event]:
        RECEIVED.calls.clear()
        signalbus.bindings.registry.restore(saved)
        for op, name in (("insert", "account_created"), ("update", "account_changed"),
                         ("delete", "account_closed")):
            signalbus.bind(Account, op, name, capture=capture)  # type: ignore[arg-type]
        b = signalbus.SignalBus()
        b.attach(factory, config={"SIGNALBUS_DELIVERY": "outbox"}, plugins=False)
        if capture == "orm":
            with factory() as session:
                session.add(Account(id=5, email="ada@example.com", plan="free",
                                    balance=decimal.Decimal("9.90"), seen_at=seen))
                session.commit()
                account = session.get(Account, 5)
                assert account is not None
                account.plan, account.balance = "pro", decimal.Decimal("12.50")
                session.commit()
                session.delete(account)
                session.commit()
        else:
            install(b, engine)
            psql("INSERT INTO sb_accounts (id, email, plan, balance, seen) VALUES "
                 "(5, 'ada@example.com', 'free', 9.90, '2026-11-30 08:15:30.123456+00')")
            psql("UPDATE sb_accounts SET plan = 'pro', balance = 12.50 WHERE id = 5")
            psql("DELETE FROM sb_accounts WHERE id = 5")
        drain(b)
        return list(RECEIVED.events)

    orm, trig = run("orm"), run("trigger")
    assert [e.source for e in orm] == ["orm"] * 3 and [e.source for e in trig] == ["trigger"] * 3
    for a, b in zip(orm, trig, strict=True):
        mine = a.to_dict()
        theirs = b.to_dict()
        for name in ("id", "source", "occurred_at"):
            mine.pop(name), theirs.pop(name)
        # created_at is the server's now(): compare it by type, not by value
        for payload in (mine["data"], theirs["data"]):
            assert dt.datetime.fromisoformat(payload["created_at"]).tzinfo is not None
        mine["data"] = {k: v for k, v in mine["data"].items() if k != "created_at"}
        theirs["data"] = {k: v for k, v in theirs["data"].items() if k != "created_at"}
        assert mine == theirs


def test_composite_string_and_uuid_keys_and_another_schema(bus, engine, recorder):
    signalbus.bind(Membership, "update", "membership_changed", capture="trigger")
    signalbus.bind(Token, "insert", "token_created", capture="trigger")
    found = install(bus, engine)
    assert sorted(t.key for t in found) == sorted([f"{PG_SCHEMA}.sb_tokens",
                                                   "sb_crm.sb_memberships"])
    key = uuid.uuid4()
    psql("INSERT INTO sb_crm.sb_memberships VALUES ('core', 'ada', 'member');"
         f"INSERT INTO sb_tokens VALUES ('{key}', 'ci')")
    psql("UPDATE sb_crm.sb_memberships SET role = 'owner'")
    drain(bus)
    (changed,) = recorder.of("membership_changed")
    assert changed.pk == ("core", "ada") and changed.changes == {"role": ("member", "owner")}
    (token,) = recorder.of("token_created")
    assert token.pk == str(key) and token.data == {"id": str(key), "label": "ci"}


def test_a_bulk_update_of_ten_thousand_rows_is_ten_thousand_events(bus, engine, recorder):
    bind_accounts()
    install(bus, engine)
    psql("INSERT INTO sb_accounts (id, email, balance) "
         "SELECT g, 'u' || g || '@x.org', g FROM generate_series(1, 10000) g")
    with engine.connect() as conn:  # one outbox write for the 10,000-row statement
        assert conn.execute(select(func.count()).select_from(
            signalbus.outbox.schema.changes)).scalar() == 1
    psql("UPDATE sb_accounts SET plan = 'pro', balance = balance + 1")
    drain(bus)
    changed = recorder.of("account_changed")
    assert len(recorder.of("account_created")) == 10000 and len(changed) == 10000
    by_pk = {e.pk: e for e in changed}
    assert by_pk[1].changes == {"plan": ("free", "pro"), "balance": ("1.00", "2.00")}
    assert by_pk[10000].changes == {"plan": ("free", "pro"),
                                    "balance": ("10000.00", "10001.00")}


def test_redacted_columns_never_reach_the_outbox(bus, engine, recorder):
    signalbus.bind(Account, "update", "account_changed", capture="trigger")
    install(bus, engine)
    psql("INSERT INTO sb_accounts (id, email, password_hash) VALUES (1, 'a@x.org', 's3cret')")
    psql("UPDATE sb_accounts SET password_hash = 'n3w-s3cret'")
    with engine.connect() as conn:
        stored = " ".join(str(r) for r in conn.execute(select(signalbus.outbox.schema.changes)))
        stored += " ".join(str(r) for r in conn.execute(text(
            "SELECT * FROM signalbus_rows_sb_accounts")))
    assert "s3cret" not in stored and "password_hash" not in stored
    drain(bus)
    (event,) = recorder.of("account_changed")  # a redacted column changed: it fires,
    assert event.changes == {}                 # without showing the change
    assert "password_hash" not in event.data


def test_install_and_uninstall_are_idempotent_and_leave_nothing(bus, engine):
    bind_accounts()
    found = install(bus, engine)
    install(bus, engine)
    with engine.connect() as conn:
        assert [s.state for s in triggers.status(conn, found)] == ["installed"]
    with engine.begin() as conn:
        where = outbox_changes.changes_table(conn)
        assert triggers.uninstall(conn, found, changes_table=where) == [
            f"{PG_SCHEMA}.sb_accounts"]
        assert triggers.uninstall(conn, found, changes_table=where) == []
    with engine.connect() as conn:
        assert [s.state for s in triggers.status(conn, found)] == ["missing"]
        left = conn.execute(text(
            "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "  JOIN pg_namespace n ON n.oid = c.relnamespace "
            "  WHERE t.tgname LIKE 'signalbus%' AND n.nspname = :s "
            "UNION ALL SELECT count(*) FROM pg_proc p JOIN pg_namespace n "
            "  ON n.oid = p.pronamespace WHERE p.proname LIKE 'signalbus%' AND n.nspname = :s "
            "UNION ALL SELECT count(*) FROM pg_class c JOIN pg_namespace n "
            "  ON n.oid = c.relnamespace WHERE c.relname LIKE 'signalbus_rows%' "
            "  AND n.nspname = :s"), {"s": PG_SCHEMA}).scalars()
        assert list(left) == [0, 0, 0]
    psql("INSERT INTO sb_accounts (id, email) VALUES (1, 'a@x.org')")
    assert changes_left(engine) == []


def test_status_reports_triggers_that_differ_from_the_bindings(bus, engine, caplog):
    bind_accounts()
    install(bus, engine)
    signalbus.bind(Account, "update", "account_changed", capture="trigger",
                   fields=["plan"], when=signalbus.changed("password_hash"))
    with engine.connect() as conn:
        found = outbox_changes.trigger_tables(bus.runtime(), conn)
        (st,) = triggers.status(conn, found)
    assert st.state == "differs"
    with caplog.at_level("ERROR", logger="signalbus"):
        drain(bus)
    assert "differ from its bindings" in caplog.text and "signalbus triggers install" in caplog.text


def test_a_change_no_binding_claims_is_kept_with_its_error(bus, engine, recorder):
    bind_accounts()
    install(bus, engine)
    signalbus.bind(Token, "insert", "token_created", capture="trigger")
    install(bus, engine)
    psql(f"INSERT INTO sb_tokens VALUES ('{uuid.uuid4()}', 'a')")
    psql("INSERT INTO sb_accounts (id, email) VALUES (1, 'a@x.org')")
    signalbus.bindings.registry.restore(
        [b for b in signalbus.bindings.registry.bindings if b.cls is not Token])
    drain(bus)  # the other table's change goes through
    assert [e.pk for e in recorder.of("account_created")] == [1]
    (kept,) = changes_left(engine)
    assert kept.source_table == f"{PG_SCHEMA}.sb_tokens"
    assert "signalbus triggers uninstall" in kept.last_error


def test_trigger_capture_needs_a_single_table_and_the_commit_phase():
    with pytest.raises(signalbus.BindingError, match="phase='flush'"):
        signalbus.bind(Account, "insert", "x", capture="trigger", phase="flush")
    with pytest.raises(signalbus.BindingError, match="capture must be"):
        signalbus.bind(Account, "insert", "x", capture="sql")  # type: ignore[arg-type]


def test_orm_and_trigger_bindings_of_one_model_are_refused(bus, engine, factory):
    signalbus.bind(Account, "insert", "account_created", capture="trigger")
    signalbus.bind(Account, "update", "account_changed")
    with factory() as session, pytest.raises(signalbus.BindingError, match="capture='trigger'"):
        session.add(Account(id=1, email="a@x.org"))
        session.commit()


def test_schema_check_wants_the_changes_table(engine):
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE signalbus_outbox_changes"))
    with engine.connect() as conn, pytest.raises(signalbus.outbox.SchemaMismatch):
        signalbus.outbox.schema.check(conn)
    assert "signalbus_outbox_changes" not in inspect(engine).get_table_names()


# the CLI ------------------------------------------------------------------------------------

CURRENT: dict[str, signalbus.SignalBus] = {}


def current_bus() -> signalbus.SignalBus:
    """``--app tests.test_triggers:current_bus``: the test's bus."""
    return CURRENT["bus"]


def cli(*args: str, code: int = 0) -> str:
    from click.testing import CliRunner
    from flask.cli import ScriptInfo

    from signalbus.cli import cli as group

    result = CliRunner().invoke(group, [*args, "--app", "tests.test_triggers:current_bus"],
                                obj=ScriptInfo())
    assert result.exit_code == code, result.output + repr(result.exception)
    return result.output


def test_the_cli_prints_installs_reports_and_removes_the_triggers(bus, engine, recorder):
    CURRENT["bus"] = bus
    bind_accounts()
    ddl = cli("triggers", "sql")
    assert "CREATE OR REPLACE FUNCTION" in ddl and "FOR EACH STATEMENT" in ddl
    psql(ddl)
    psql(ddl)  # idempotent: a migration may run twice
    assert cli("triggers", "status").startswith(f"{PG_SCHEMA}.sb_accounts: installed")
    migration = cli("triggers", "sql", "--format", "alembic")
    compile(migration, "migration.py", "exec")
    assert "def upgrade():" in migration and "DROP FUNCTION IF EXISTS" in migration
    psql("INSERT INTO sb_accounts (id, email) VALUES (1, 'a@x.org')")
    status = cli("status")
    assert "captured by triggers: 1 changes waiting, 0 failed" in status
    drain(bus)
    assert [e.pk for e in recorder.of("account_created")] == [1]
    psql(cli("triggers", "sql", "--uninstall"))
    report = json.loads(cli("triggers", "status", "--json", code=1))
    assert [t["state"] for t in report["tables"]] == ["missing"]
    assert "triggers of " + f"{PG_SCHEMA}.sb_accounts: missing" in cli("status")
    assert cli("triggers", "install").strip() == (
        f"installed the capture triggers of {PG_SCHEMA}.sb_accounts")
    assert "removed the capture triggers" in cli("triggers", "uninstall")
    assert cli("triggers", "uninstall").strip() == "no capture triggers to remove."


def test_failed_changes_are_reported_and_retried_from_the_cli(bus, engine, recorder):
    CURRENT["bus"] = bus
    bind_accounts()
    install(bus, engine)
    psql("INSERT INTO sb_accounts (id, email) VALUES (1, 'a@x.org')")
    saved = signalbus.bindings.registry.snapshot()
    signalbus.bindings.registry.restore([])
    signalbus.bind(Token, "insert", "token_created", capture="trigger")
    drain(bus)  # the worker's app does not bind the table (an import missing)
    signalbus.bindings.registry.restore(saved)
    assert "1 failed" in cli("triggers", "status")
    assert cli("triggers", "retry").strip() == (
        "1 captured changes will be turned into events again.")
    drain(bus)
    assert [e.pk for e in recorder.of("account_created")] == [1]


def test_an_inline_app_warns_that_it_does_not_deliver_trigger_captured_changes(factory, caplog):
    bind_accounts()
    with caplog.at_level("WARNING", logger="signalbus"):
        signalbus.SignalBus().attach(factory, plugins=False)
    assert "SIGNALBUS_DELIVERY='inline' does not deliver" in caplog.text
    assert "capture='trigger'" in caplog.text


def test_captured_changes_are_never_dropped_by_uninstall_or_reinstall(bus, engine, recorder):
    CURRENT["bus"] = bus
    bind_accounts()
    install(bus, engine)
    psql("INSERT INTO sb_accounts (id, email) VALUES (1, 'a@x.org')")
    refused = cli("triggers", "uninstall", code=1)
    assert "no worker has turned into events yet" in refused
    assert "signalbus triggers uninstall --discard" in refused
    saved = signalbus.bindings.registry.snapshot()
    signalbus.bindings.registry.restore([])
    signalbus.bind(Account, "update", "account_changed", capture="trigger", fields=["plan"])
    assert "then install again" in cli("triggers", "install", code=1)  # another definition
    new = signalbus.bindings.registry.snapshot()
    signalbus.bindings.registry.restore(saved)
    drain(bus)  # the waiting change goes out with the bindings it was captured for
    assert [e.pk for e in recorder.of("account_created")] == [1]
    signalbus.bindings.registry.restore(new)
    cli("triggers", "install")  # nothing waits: the rows table is replaced
    with engine.connect() as conn:
        columns = [c["name"] for c in inspect(conn).get_columns("signalbus_rows_sb_accounts")]
    assert columns == ["change_id", "side", "id", "plan"]
    with engine.connect() as conn:
        found = outbox_changes.trigger_tables(bus.runtime(), conn)
        assert [s.state for s in triggers.status(conn, found)] == ["installed"]
    psql("UPDATE sb_accounts SET plan = 'pro'")
    assert "removed the capture triggers" in cli("triggers", "uninstall", "--discard")
    assert changes_left(engine) == []


def test_a_redacted_column_changed_after_a_no_op_update_still_fires(bus, engine, recorder):
    """Found by tests/test_trigger_properties.py: the two updates of one transaction were
    coalesced into no change, the redacted column's change being stored as a digest."""
    bind_accounts()
    install(bus, engine)
    psql("INSERT INTO sb_accounts (id, email) VALUES (1, 'a@x.org')")
    psql("UPDATE sb_accounts SET email = 'a@x.org'; UPDATE sb_accounts SET password_hash = 'h'")
    drain(bus)
    (changed,) = recorder.of("account_changed")
    assert changed.changes == {} and "password_hash" not in changed.data


def test_context_reaches_trigger_captured_events(bus, engine, factory, recorder):
    bind_accounts()
    install(bus, engine)
    with signalbus.context(actor="ada", request_id="r-1"), factory() as session:
        session.add(Account(id=1, email="orm@x.org"))
        session.commit()
        with signalbus.context(actor="grace"):  # the next transaction: another context
            account = session.get(Account, 1)
            assert account is not None
            account.plan = "pro"
            session.commit()
    with factory() as session:  # no context: none carried over from the last transaction
        session.add(Account(id=2, email="plain@x.org"))
        session.commit()
    psql("SET LOCAL signalbus.context = '{\"actor\": \"nightly\"}';"
         "INSERT INTO sb_accounts (id, email) VALUES (3, 'psql@x.org')")
    with signalbus.context(actor="core"), engine.begin() as conn:  # Core: shared by hand
        triggers.share_context(conn)
        conn.execute(text("INSERT INTO sb_accounts (id, email) VALUES (4, 'core@x.org')"))
    drain(bus)
    contexts = {(n, e.pk): dict(e.context) for n, _s, e in recorder.calls}
    assert contexts == {
        ("account_created", 1): {"actor": "ada", "request_id": "r-1"},
        ("account_changed", 1): {"actor": "grace", "request_id": "r-1"},
        ("account_created", 2): {},
        ("account_created", 3): {"actor": "nightly"},
        ("account_created", 4): {"actor": "core"},
    }


def test_a_writer_needs_no_privilege_on_signalbus_tables(bus, engine, recorder):
    """Another service's role may write the captured table and nothing of signalbus's:
    the trigger function runs as the role that installed it."""
    bind_accounts()
    install(bus, engine)
    role = f"sb_writer_{os.getpid()}"
    with engine.begin() as conn:
        conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        conn.execute(text(f'CREATE ROLE "{role}"'))
        conn.execute(text(f'GRANT USAGE ON SCHEMA "{PG_SCHEMA}" TO "{role}"'))
        conn.execute(text(f'GRANT SELECT, INSERT, UPDATE ON sb_accounts TO "{role}"'))
    try:
        psql(f'SET ROLE "{role}"; INSERT INTO sb_accounts (id, email) VALUES (1, \'a@x.org\')')
        refused = psql(f'SET ROLE "{role}"; SELECT count(*) FROM signalbus_outbox_changes',
                       check=False)
        assert "permission denied" in refused.stderr
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
    drain(bus)
    assert [e.pk for e in recorder.of("account_created")] == [1]
