"""The pgevents example end to end: accounts created by ``psql`` while no worker runs are
announced once a worker process starts, exactly once, without their passwords."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import pytest
from sqlalchemy import create_engine, text

from conftest import PG_URL, require_postgres

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = f"sb_pgevents_{os.getpid()}"


@pytest.fixture
def env() -> Any:
    require_postgres()
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{SCHEMA}"'))
    url = f"{PG_URL}?options={quote(f'-csearch_path={SCHEMA}')}"
    yield dict(os.environ, DATABASE_URL=url, FLASK_APP="examples.pgevents.app",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
    admin.dispose()


def run(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "flask", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def psql(sql: str) -> None:
    url = urlparse(PG_URL.replace("+psycopg", ""))
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", url.hostname or "",
                    "-p", str(url.port or 5432), "-U", url.username or "postgres",
                    "-d", url.path.lstrip("/"), "-c", sql], check=True, timeout=60,
                   env=dict(os.environ, PGOPTIONS=f"-csearch_path={SCHEMA}"))


def test_accounts_created_by_psql_while_no_worker_runs_are_announced(env):
    assert run(env, "setup").strip() == f"capture triggers installed on {SCHEMA}.useraccounts"
    psql("INSERT INTO useraccounts (first_name, last_name, username, password, email) VALUES "
         "('Ada', 'Lovelace', 'ada', 'pw-of-ada', 'ada@example.com'), "
         "('Alan', 'Turing', 'alan', 'pw-of-alan', 'alan@example.com')")
    psql("BEGIN; INSERT INTO useraccounts (first_name, last_name, username, password, email) "
         "VALUES ('No', 'One', 'nobody', 'x', 'no@example.com'); ROLLBACK")
    assert "captured by triggers: 1 changes waiting" in run(env, "signalbus", "status")
    out = run(env, "signalbus", "worker", "--once")
    announced = [line for line in out.splitlines() if line.startswith("New user account")]
    assert [line.split(" (event ")[0] for line in announced] == [
        "New user account created!!! <UserAccount ada, ada@example.com: name:Ada Lovelace "
        "active:True>",
        "New user account created!!! <UserAccount alan, alan@example.com: name:Alan Turing "
        "active:True>",
    ]
    assert all(line.endswith(", trigger)") for line in announced)
    assert "pw-of" not in out
    again = run(env, "signalbus", "worker", "--once")
    assert "New user account" not in again  # delivered once
