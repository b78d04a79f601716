"""The trigger shapes trigger capture was chosen from, measured side by side (PostgreSQL).

``python -m benchmarks.trigger_shapes`` creates one table per shape in a schema of its own
and times, against a table without a trigger (the floor), with the order shuffled every
repeat:

* 100 transactions of 100 single-row ``INSERT`` statements (psycopg's ``executemany``: what
  the ORM sends when the application sets the keys);
* 100 transactions of one 100-row ``INSERT ... VALUES ... RETURNING`` (the ORM's batched
  insert of server-generated keys);
* one ``UPDATE`` statement of 10,000 rows.

Shapes: ``row`` — ``FOR EACH ROW``, one changes row per changed row; ``stmt_rows`` —
``FOR EACH STATEMENT`` with transition tables, one changes row per changed row written by
one ``INSERT ... SELECT``; ``stmt_jsonb`` / ``stmt_json`` — ``FOR EACH STATEMENT``, one
changes row per statement holding the old and new rows as one ``jsonb`` / ``json`` array
each; ``stmt_table`` — ``FOR EACH STATEMENT``, one header row per statement and the rows
copied into a typed table of the same columns (one ``INSERT ... SELECT`` per side: what
signalbus generates); ``stmt_table_indexed`` — the same with an index on the rows table.
Not part of ``make bench``: the choice is made, ``benchmarks/triggers.py`` measures the
chosen shape in every run.
"""

from __future__ import annotations

import os
import random
import statistics
import time

from sqlalchemy import create_engine, text

from .databases import postgres_url

COLUMNS = ("id bigint PRIMARY KEY, email text NOT NULL, name text, plan text, "
           "balance numeric(10,2), created_at timestamptz DEFAULT now(), password text")
CAPTURED = ("id", "email", "name", "plan", "balance", "created_at")
SHAPES = ("floor", "row", "stmt_rows", "stmt_jsonb", "stmt_json", "stmt_table",
          "stmt_table_indexed")


def _cols(alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in CAPTURED)


def _ddl(shape: str, t: str) -> list[str]:
    out = [f"CREATE TABLE {t} ({COLUMNS})"]
    if shape == "floor":
        return out
    if shape == "row":
        old = f"(SELECT json_agg(r) FROM (SELECT {_cols('OLD')}) r)"
        new = f"(SELECT json_agg(r) FROM (SELECT {_cols('NEW')}) r)"
        into = "INSERT INTO changes_json (txid, op, old_rows, new_rows) VALUES (txid_current()"
        out.append(f"""CREATE FUNCTION {t}_f() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    {into}, 'delete', {old}, NULL);
  ELSIF TG_OP = 'UPDATE' THEN
    {into}, 'update', {old}, {new});
  ELSE
    {into}, 'insert', NULL, {new});
  END IF;
  RETURN NULL;
END $$""")
        out.append(f"CREATE TRIGGER tr AFTER INSERT OR UPDATE OR DELETE ON {t} "
                   f"FOR EACH ROW EXECUTE FUNCTION {t}_f()")
        return out
    if shape.startswith("stmt_table"):
        cols = ("id bigint, email text, name text, plan text, balance numeric(10,2), "
                "created_at timestamptz")
        out.append(f"CREATE TABLE {t}_rows (change_id bigint NOT NULL, side smallint NOT NULL, "
                   f"{cols})")
        if shape.endswith("_ix"):
            out.append(f"CREATE INDEX ON {t}_rows (change_id)")
        head = ("INSERT INTO changes_json (txid, op) VALUES (txid_current(), '{}') "
                "RETURNING id INTO cid;")
        new = f" INSERT INTO {t}_rows SELECT cid, 1, {_cols('n')} FROM nt n;"
        old = f" INSERT INTO {t}_rows SELECT cid, 0, {_cols('o')} FROM ot o;"
        ins = head.format("insert") + new
        upd = head.format("update") + old + new
        out.append(f"CREATE FUNCTION {t}_i() RETURNS trigger LANGUAGE plpgsql AS "
                   f"$$ DECLARE cid bigint; BEGIN {ins} RETURN NULL; END $$")
        out.append(f"CREATE FUNCTION {t}_u() RETURNS trigger LANGUAGE plpgsql AS "
                   f"$$ DECLARE cid bigint; BEGIN {upd} RETURN NULL; END $$")
        out.append(f"CREATE TRIGGER tri AFTER INSERT ON {t} REFERENCING NEW TABLE AS nt "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {t}_i()")
        out.append(f"CREATE TRIGGER tru AFTER UPDATE ON {t} REFERENCING OLD TABLE AS ot "
                   f"NEW TABLE AS nt FOR EACH STATEMENT EXECUTE FUNCTION {t}_u()")
        return out
    if shape == "stmt_rows":
        ins = (f"INSERT INTO changes_json (txid, op, new_rows) SELECT txid_current(), 'insert', "
               f"json_build_array(to_json(r)) FROM (SELECT {_cols('n')} FROM nt n) r;")
        upd = (f"INSERT INTO changes_json (txid, op, old_rows, new_rows) SELECT txid_current(), "
               f"'update', json_build_array(to_json(a)), json_build_array(to_json(b)) FROM ot o "
               f"JOIN nt n USING (id), LATERAL (SELECT {_cols('o')}) a, "
               f"LATERAL (SELECT {_cols('n')}) b;")
    else:
        kind = "jsonb" if shape == "stmt_jsonb" else "json"
        target = f"changes_{kind}"
        new = f"(SELECT {kind}_agg(r) FROM (SELECT {_cols('n')} FROM nt n) r)"
        old = f"(SELECT {kind}_agg(r) FROM (SELECT {_cols('o')} FROM ot o) r)"
        ins = (f"INSERT INTO {target} (txid, op, new_rows) SELECT txid_current(), 'insert', "
               f"{new} WHERE EXISTS (SELECT 1 FROM nt);")
        upd = (f"INSERT INTO {target} (txid, op, old_rows, new_rows) SELECT txid_current(), "
               f"'update', {old}, {new} WHERE EXISTS (SELECT 1 FROM nt);")
    out.append(f"CREATE FUNCTION {t}_i() RETURNS trigger LANGUAGE plpgsql AS "
               f"$$ BEGIN {ins} RETURN NULL; END $$")
    out.append(f"CREATE FUNCTION {t}_u() RETURNS trigger LANGUAGE plpgsql AS "
               f"$$ BEGIN {upd} RETURN NULL; END $$")
    out.append(f"CREATE TRIGGER tri AFTER INSERT ON {t} REFERENCING NEW TABLE AS nt "
               f"FOR EACH STATEMENT EXECUTE FUNCTION {t}_i()")
    out.append(f"CREATE TRIGGER tru AFTER UPDATE ON {t} REFERENCING OLD TABLE AS ot "
               f"NEW TABLE AS nt FOR EACH STATEMENT EXECUTE FUNCTION {t}_u()")
    return out


def main() -> int:
    import psycopg

    schema = f"signalbus_bench_shapes_{os.getpid()}"
    url = postgres_url()
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    dsn = admin.url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(dsn, autocommit=True, options=f"-csearch_path={schema}") as c:
            for kind in ("json", "jsonb"):
                c.execute(f"CREATE TABLE changes_{kind} (id bigserial PRIMARY KEY, txid bigint "
                          f"NOT NULL, op text NOT NULL, old_rows {kind}, new_rows {kind})")
            for shape in SHAPES:
                for statement in _ddl(shape, f"t_{shape}"):
                    c.execute(statement)
            times: dict[str, dict[str, list[float]]] = {s: {"many": [], "values": [],
                                                            "update": []} for s in SHAPES}
            rng = random.Random(3)
            for _repeat in range(5):
                order = list(SHAPES)
                rng.shuffle(order)
                for shape in order:
                    t = f"t_{shape}"
                    for form in ("many", "values"):
                        c.execute(f"TRUNCATE {t}")
                        started = time.perf_counter()
                        for b in range(100):
                            rows = [(b * 100 + i, f"u{b * 100 + i}@x.org") for i in range(100)]
                            with c.transaction():
                                if form == "many":
                                    with c.cursor() as cur:
                                        cur.executemany(
                                            f"INSERT INTO {t} (id, email, name, plan, balance, "
                                            "password) VALUES (%s, %s, 'Ada', 'free', 9.90, 'x')",
                                            rows)
                                else:
                                    values = ", ".join(f"({i}, '{e}', 'Ada', 'free', 9.90, 'x')"
                                                       for i, e in rows)
                                    c.execute(f"INSERT INTO {t} (id, email, name, plan, balance, "
                                              f"password) VALUES {values} RETURNING id")
                        times[shape][form].append(time.perf_counter() - started)
                    started = time.perf_counter()
                    with c.transaction():
                        c.execute(f"UPDATE {t} SET plan = CASE WHEN plan = 'free' THEN 'pro' "
                                  "ELSE 'free' END, balance = balance + 1")
                    times[shape]["update"].append(time.perf_counter() - started)
                c.execute("TRUNCATE changes_json, changes_jsonb, t_stmt_table_rows, "
                          "t_stmt_table_indexed_rows")
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
    print("| shape | 100 × 100 single-row INSERTs | 100 × one 100-row INSERT | one "
          "10,000-row UPDATE |")
    print("|---|---:|---:|---:|")
    for shape in SHAPES:
        cells = []
        for form in ("many", "values", "update"):
            mine = statistics.median(times[shape][form])
            floor = statistics.median(times["floor"][form])
            cells.append(f"{mine * 1000:.0f} ms ({mine / floor:.2f}×)")
        print(f"| {shape} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
