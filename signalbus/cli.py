"""``flask signalbus …`` (through the ``flask.commands`` entry point) and ``signalbus …``.

This module is imported by Flask's CLI at start-up, so it imports nothing heavy at
module level: the commands import what they need when they run. The outbox commands
(``worker``, ``status``, ``retry``, ``replay``, ``purge``) are thin: they parse options,
call :mod:`signalbus.outbox.worker` or :mod:`signalbus.outbox.admin` and print what
those return (redacted). Plugin packages add commands through the
``signalbus.commands`` entry point group.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click
from flask.cli import AppGroup, ScriptInfo

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from .runtime import Runtime

__all__ = ["cli", "main"]

COMMAND_MODULES: tuple[str, ...] = ("signalbus.celery.cli",)
"""Modules that add commands to the group when they exist."""

cli = AppGroup("signalbus", help="Inspect signalbus and run its worker.")


def _listing(runtime: Any) -> dict[str, Any]:
    from . import signals
    from .bindings import registry

    receivers = runtime.receivers()
    names = sorted(set(signals.declared()) | set(receivers))
    out: dict[str, Any] = {"delivery": runtime.settings.delivery, "signals": []}
    for name in names:
        out["signals"].append({
            "name": name,
            "bindings": [b.describe() for b in registry.bindings if b.signal == name],
            "receivers": [
                {"name": r.name, "plugin": r.plugin} for r in receivers.get(name, ())
            ],
        })
    out["plugins"] = [
        {"name": p.name, "distribution": p.distribution, "status": p.status,
         "error": p.error, "details": list(p.details)}
        for p in runtime.plugins
    ]
    return out


@cli.command("list", with_appcontext=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option(
    "--app", "app_import", metavar="IMPORT", default=None,
    help="The app, as for every signalbus command (see 'signalbus --help').",
)
def list_command(as_json: bool, app_import: str | None) -> None:
    """Show signals, their bindings and receivers, and the plugins."""
    with _opened(app_import) as runtime:
        listing = _listing(runtime)
    if as_json:
        click.echo(json.dumps(listing, indent=2))
        return
    click.echo(f"delivery: {listing['delivery']}")
    click.echo("signals:")
    for sig in listing["signals"]:
        label = " (every signal)" if sig["name"] == "*" else ""
        click.echo(f"  {sig['name']}{label}")
        for b in sig["bindings"]:
            click.echo(f"    bound by   {b}")
        for r in sig["receivers"]:
            origin = f"plugin {r['plugin']}" if r["plugin"] else "declared"
            click.echo(f"    receiver   {r['name']}  ({origin})")
        if not sig["bindings"] and not sig["receivers"]:
            click.echo("    (declared; no binding, no receiver)")
    click.echo("plugins:")
    if not listing["plugins"]:
        click.echo("  (none installed)")
    for p in listing["plugins"]:
        line = f"  {p['name']} [{p['distribution'] or '?'}]  {p['status']}"
        if p["error"]:
            line += f": {p['error']}"
        click.echo(line)
        for detail in p["details"]:
            click.echo(f"    {detail}")


@cli.command("catalog", with_appcontext=False)
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown",
              show_default=True, help="Markdown for a docs site, or JSON for tools.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to this file instead of standard output.")
@click.option(
    "--app", "app_import", metavar="IMPORT", default=None,
    help="The app, as for every signalbus command (see 'signalbus --help').",
)
def catalog_command(fmt: str, output: str | None, app_import: str | None) -> None:
    """Write the catalog of every signal: producers, payload fields, consumers."""
    from . import catalog

    with _opened(app_import) as runtime:
        data = catalog.build(runtime)
    text = (json.dumps(data, indent=2) + "\n" if fmt == "json"
            else catalog.to_markdown(data))
    if output is None:
        click.echo(text, nl=False)
    else:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)


# the outbox commands ---------------------------------------------------------------

def _import_target(path: str) -> Any:
    """``module:attr`` imported (with the working directory on ``sys.path``, as Flask)."""
    module_name, _, attr = path.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.ClickException(
            f"cannot import {module_name!r} (from --app {path!r}): {exc}"
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise click.ClickException(
                f"module {module_name!r} has no attribute {attr!r} (from --app {path!r})."
            ) from None
    return obj


def _load(ctx: click.Context, app_import: str | None) -> Runtime:
    """The runtime the command works on."""
    from .bus import SignalBus
    from .errors import ConfigurationError
    from .outbox.worker import runtime_of
    from .runtime import Runtime

    info = ctx.find_object(ScriptInfo)
    path = app_import or (info.app_import_path if info is not None else None)
    target: Any = None
    if not app_import and info is not None and info._loaded_app is not None:
        target = info.load_app()  # Flask's CLI has loaded it already
    elif path and ":" in path and "(" not in path:
        # our own lookup, which also accepts a plain-SQLAlchemy SignalBus or Runtime
        target = _import_target(path)
        if not isinstance(target, SignalBus | Runtime) and callable(target) \
                and not hasattr(target, "extensions"):
            target = target()
    else:
        if app_import or info is None:
            info = ScriptInfo(app_import_path=app_import)
        target = info.load_app()
    try:
        return runtime_of(target)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None


@contextlib.contextmanager
def _opened(app_import: str | None) -> Iterator[Runtime]:
    """The runtime of the command's app (in its app context), with signalbus's errors
    (and database errors) turned into one redacted line."""
    from sqlalchemy import exc as sa_exc

    from .errors import ConfigurationError
    from .redaction import redact

    runtime = _load(click.get_current_context(), app_import)
    context = runtime.app.app_context() if runtime.app is not None else contextlib.nullcontext()
    with context:
        try:
            yield runtime
        except ConfigurationError as exc:
            raise click.ClickException(redact(str(exc))) from None
        except sa_exc.DBAPIError as exc:
            raise click.ClickException(
                f"the database refused the command: {redact(str(exc.orig).strip())}"
            ) from None


def _engine(runtime: Runtime) -> Engine:
    from .outbox import engine_of

    return engine_of(runtime)


def _settings(runtime: Runtime) -> Any:
    from .outbox import OutboxSettings

    return OutboxSettings.from_config(runtime.config)


def _value(parse: Any, text: str, *args: Any, name: str) -> Any:
    from .outbox.admin import BadValue

    try:
        return parse(text, *args)
    except BadValue as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


_app_option = click.option(
    "--app", "app_import", metavar="IMPORT", default=None,
    help="The app: 'module:factory' (Flask app factory), 'module:app', or a plain "
         "SQLAlchemy 'module:bus' (a SignalBus) or function returning one. Default: "
         "Flask's --app / FLASK_APP.",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _echo(text: str) -> None:
    from .redaction import redact

    click.echo(redact(text))


def _echo_json(value: Any) -> None:
    _echo(json.dumps(value, indent=2, sort_keys=False, default=str))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


@cli.command("worker", with_appcontext=False)
@click.option("--once", is_flag=True, help="Deliver everything due, then exit.")
@click.option("--batch", type=click.IntRange(min=1), help="Events claimed at once.")
@click.option("--poll", type=click.FloatRange(min=0.01, max=86400), help="Seconds between polls.")
@click.option("--lease", type=click.FloatRange(min=0.1, max=86400), help="Seconds a claim lasts.")
@click.option("--name", help="This worker's id in claimed_by (default host:pid).")
@click.option("--no-listen", is_flag=True, help="Poll only; no PostgreSQL LISTEN.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--metrics-port", type=click.IntRange(min=0, max=65535), default=None,
              help="Serve Prometheus metrics on this port (needs the 'metrics' extra).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Address the metrics are served on.")
@click.option("--heartbeat-file", type=click.Path(dir_okay=False), default=None,
              help="Touch this file at every round (see `signalbus health`).")
@_json_option
@_app_option
def worker_command(once: bool, batch: int | None, poll: float | None, lease: float | None,
                   name: str | None, no_listen: bool, log_level: str, metrics_port: int | None,
                   metrics_host: str, heartbeat_file: str | None, as_json: bool,
                   app_import: str | None) -> None:
    """Deliver the outbox: run until SIGTERM/SIGINT, or with --once until nothing is due."""
    from .outbox.worker import Worker

    if not logging.getLogger().handlers:
        logging.basicConfig(level=log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("signalbus").setLevel(log_level.upper())
    with _opened(app_import) as runtime:
        delivery = runtime.config.get("SIGNALBUS_DELIVERY", "inline")
        if delivery != "outbox":
            raise click.ClickException(
                f"SIGNALBUS_DELIVERY is {delivery!r}; the worker delivers the outbox. "
                "Set SIGNALBUS_DELIVERY = 'outbox'."
            )
        engine = _engine(runtime)
        worker = Worker(runtime, engine=engine, name=name, listen=not no_listen,
                        batch=batch, poll=poll, lease=lease)
        if heartbeat_file is not None:
            from .health import Heartbeat

            worker.heartbeat = Heartbeat(heartbeat_file)
        if metrics_port is not None:
            from . import metrics

            metrics.enable(engine=engine)
            server = metrics.serve(metrics_port, metrics_host)
            logging.getLogger("signalbus").info(
                "signalbus worker %s: Prometheus metrics served on %s port %d (path "
                "/metrics)", worker.name, metrics_host, server.server_port)
        how = (f"LISTEN {worker.settings.channel!r}, " if worker.listen else "") + \
            f"poll every {worker.settings.poll:g}s"
        logging.getLogger("signalbus").info(
            "signalbus worker %s started on %s (%s)", worker.name, engine.dialect.name,
            "once" if once else how)
        stats = worker.run(once=once)
    if as_json:
        _echo_json(stats.as_dict())
    else:
        _echo(f"signalbus worker {worker.name}: delivered {stats.delivered}, retrying "
              f"{stats.retried}, dead {stats.dead}, released {stats.released}")


@cli.command("status", with_appcontext=False)
@click.option("--fail-if-lag", "fail_if_lag", type=click.FloatRange(min=0), default=None,
              metavar="SECONDS", help="Only check the lag (cheap): exit 1 if the oldest "
              "pending event or delivery waits longer than SECONDS (for cron monitors).")
@click.option("--exact", is_flag=True, help="Count done events too, in all and per signal, "
              "on a large PostgreSQL outbox (estimated by default: counting reads every "
              "stored event, seconds per million).")
@_json_option
@_app_option
def status_command(as_json: bool, app_import: str | None,
                   fail_if_lag: float | None = None, exact: bool = False) -> None:
    """Show the outbox: events and deliveries per state and signal, the oldest pending,
    the latest dead."""
    from .outbox import admin

    if fail_if_lag is not None:
        _lag_command(fail_if_lag, as_json, app_import)
        return
    with _opened(app_import) as runtime:
        engine = _engine(runtime)
        report = admin.status(engine, exact=exact)
        captured = _captured(runtime, engine)
    if captured is not None:
        report["captured"] = captured
    if as_json:
        _echo_json(report)
        return
    ev, de = report["events"], report["deliveries"]
    about = "~" if report["estimated"] else ""
    lines = [
        f"outbox ({report['database']}, schema {report['schema_version']}): "
        f"{about}{sum(ev.values())} events stored",
        f"  events      pending {ev['pending']}  done {about}{ev['done']}  dead {ev['dead']}",
        f"  deliveries  pending {de['pending']}  delivered {de['delivered']}  dead {de['dead']}"
        "  (rows of receivers tracked on their own: retries, replays)",
        f"  due now {report['due']}, claimed by a worker {report['claimed']}, oldest pending: "
        f"{_age(report['oldest_pending_age_seconds'])}",
    ]
    if report.get("handed_over"):
        lines.append(f"  handed over to Celery, not yet reported: {report['handed_over']}")
    if report["signals"]:
        width = max(len(s) for s in report["signals"])
        lines.append(f"  {'signal'.ljust(width)}  {'pending':>8}  {'done':>8}  "
                     f"{'retrying':>8}  {'dead':>6}")
        for signal, c in report["signals"].items():
            lines.append(f"  {signal.ljust(width)}  {c['pending']:>8}  "
                         f"{about + str(c['done']):>8}  {c['retrying']:>8}  {c['dead']:>6}")
        if about:
            lines.append("  (~: estimated from the table's statistics and a sample; "
                         "--exact counts them)")
    if captured is not None:
        changes = captured["changes"]
        lines.append(f"  captured by triggers: {changes['waiting']} changes waiting, "
                     f"{changes['failed']} failed" + (
                         f" (latest: {changes['latest_error']}; 'signalbus triggers retry' "
                         "once fixed)" if changes["latest_error"] else ""))
        for st in captured["tables"]:
            if st["state"] != "installed":
                lines.append(f"  triggers of {st['table']}: {st['state']} (see 'signalbus "
                             "triggers status')")
    if report["dead"]:
        lines.append("latest dead (signalbus retry --event ID to try again):")
        for item in report["dead"]:
            target = f" -> {item['receiver']}" if item["receiver"] else " (event row)"
            lines.append(f"  {item['event_id']}  {item['signal']}{target}  after "
                         f"{item['attempts']} attempt(s): {item['last_error']}")
    _echo("\n".join(lines))


def _captured(runtime: Runtime, engine: Engine) -> dict[str, Any] | None:
    """Trigger capture's part of ``status``: the tables' triggers and the captured
    changes (``None`` without capture='trigger' bindings)."""
    from .capture import triggers
    from .outbox import sql
    from .outbox.changes import trigger_tables

    if engine.dialect.name != "postgresql" or not triggers.trigger_bindings():
        return None
    with engine.connect() as conn:
        found = trigger_tables(runtime, conn)
        return {"tables": [st.as_dict() for st in triggers.status(conn, found)],
                "changes": sql.changes_summary(conn)}


def _lag_command(limit: float, as_json: bool, app_import: str | None) -> None:
    from .health import check_lag

    with _opened(app_import) as runtime:
        ok, found = check_lag(_engine(runtime), limit)
    if as_json:
        _echo_json({**found, "limit_seconds": limit, "ok": ok})
    else:
        age = found["oldest_pending_age_seconds"]
        _echo(f"{'OK' if ok else 'LAGGING'}: oldest pending {_age(age)} (limit "
              f"{_age(limit)}); {found['pending_events']} events and "
              f"{found['pending_deliveries']} deliveries pending")
    if not ok:
        raise SystemExit(1)


@cli.command("health", with_appcontext=False)
@click.option("--heartbeat-file", required=True, type=click.Path(dir_okay=False),
              help="The file a worker touches (signalbus worker --heartbeat-file).")
@click.option("--max-age", type=click.FloatRange(min=0), default=60.0, show_default=True,
              metavar="SECONDS", help="Older than this: the worker is not alive.")
def health_command(heartbeat_file: str, max_age: float) -> None:
    """Worker liveness for process supervisors: exit 1 unless the worker's heartbeat
    file was touched within --max-age seconds."""
    from .health import check_heartbeat

    ok, message = check_heartbeat(heartbeat_file, max_age)
    _echo(("OK: " if ok else "NOT ALIVE: ") + message)
    if not ok:
        raise SystemExit(1)


@cli.command("retry", with_appcontext=False)
@click.option("--all", "everything", is_flag=True, help="Every dead delivery and event.")
@click.option("--event", "event_ids", multiple=True, metavar="ID", help="By event id.")
@click.option("--signal", "signal_names", multiple=True, metavar="NAME", help="By signal.")
@click.option("--receiver", "receivers", multiple=True, metavar="NAME",
              help="Only deliveries to this receiver.")
@click.option("--failed", is_flag=True,
              help="Also deliveries waiting for their next attempt: make them due now.")
@_json_option
@_app_option
def retry_command(everything: bool, event_ids: tuple[str, ...], signal_names: tuple[str, ...],
                  receivers: tuple[str, ...], failed: bool, as_json: bool,
                  app_import: str | None) -> None:
    """Make dead deliveries (and dead events) pending again, with a fresh count of attempts."""
    from .outbox import admin

    if not (everything or event_ids or signal_names or receivers):
        raise click.UsageError(
            "say which dead deliveries to retry: --all, --event ID, --signal NAME or "
            "--receiver NAME."
        )
    with _opened(app_import) as runtime:
        counts = admin.retry(_engine(runtime), _settings(runtime), event_ids=event_ids,
                             signals=signal_names, receivers=receivers, waiting=failed)
    if as_json:
        _echo_json({"retried": counts["deliveries"], "events": counts["events"],
                    "due_now": counts["due_now"]})
    else:
        _echo(f"{counts['deliveries']} dead deliveries and {counts['events']} dead events are "
              "pending again" + (f"; {counts['due_now']} waiting deliveries are due now"
                                 if failed else "") + ".")


@cli.command("replay", with_appcontext=False)
@click.option("--signal", "signal_names", multiple=True, metavar="NAME", help="By signal.")
@click.option("--since", metavar="WHEN", help="Events stored at or after WHEN "
              "(ISO 8601, or a duration ago: 2h, 7d).")
@click.option("--until", metavar="WHEN", help="Events stored before WHEN.")
@click.option("--event", "event_ids", multiple=True, metavar="ID", help="By event id.")
@click.option("--receiver", "receivers", multiple=True, metavar="NAME",
              help="Only to this receiver (default: every receiver the signal has now).")
@click.option("--all", "everything", is_flag=True, help="Every stored event (no filter).")
@_json_option
@_app_option
def replay_command(signal_names: tuple[str, ...], since: str | None, until: str | None,
                   event_ids: tuple[str, ...], receivers: tuple[str, ...], everything: bool,
                   as_json: bool, app_import: str | None) -> None:
    """Deliver stored events again, to the receivers their signals have now."""
    from .outbox import admin, utcnow

    if not (everything or signal_names or since or until or event_ids):
        raise click.UsageError(
            "say which events to replay: --signal NAME, --since/--until WHEN, --event ID, "
            "or --all."
        )
    now = utcnow()
    since_at = _value(admin.parse_when, since, now, name="--since") if since else None
    until_at = _value(admin.parse_when, until, now, name="--until") if until else None
    with _opened(app_import) as runtime, \
            click.progressbar(length=1, label="replaying events", file=sys.stderr,
                              show_pos=True) as bar:

        def progress(done: int, total: int) -> None:
            bar.length = max(total, 1)
            bar.update(done - bar.pos)

        counts = admin.replay(runtime, _engine(runtime), _settings(runtime), signals=signal_names,
                              since=since_at, until=until_at, event_ids=event_ids,
                              receivers=receivers, progress=progress)
    if as_json:
        _echo_json(counts)
    else:
        _echo(f"replayed {counts['events']} events: {counts['reset'] + counts['inserted']} "
              f"deliveries queued ({counts['inserted']} new, {counts['reset']} again), "
              f"{counts['already_pending']} were still pending.")


@cli.command("purge", with_appcontext=False)
@click.option("--older-than", "older_than", required=True, metavar="AGE",
              help="Delete delivered events and deliveries older than AGE: 7d, 12h, 3600.")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@_json_option
@_app_option
def purge_command(older_than: str, dry_run: bool, as_json: bool, app_import: str | None) -> None:
    """Delete delivered deliveries and settled events older than an age (pending and
    dead ones are kept)."""
    from .outbox import admin

    age = _value(admin.parse_duration, older_than, name="--older-than")
    with _opened(app_import) as runtime:
        try:
            result = admin.purge(_engine(runtime), age, dry_run=dry_run)
        except admin.BadValue as exc:
            raise click.BadParameter(str(exc), param_hint="--older-than") from None
    if as_json:
        _echo_json(result)
    else:
        verb = "would delete" if dry_run else "deleted"
        _echo(f"{verb} {result['deliveries']} delivered deliveries and {result['events']} "
              f"events settled before {result['before']}.")


@cli.group("triggers")
def triggers_group() -> None:
    """Trigger capture (PostgreSQL): the database triggers of bind(..., capture='trigger')."""


def _trigger_tables(runtime: Runtime, conn: Any) -> list[Any]:
    from .outbox.changes import trigger_tables

    if conn.dialect.name != "postgresql":
        raise click.ClickException(
            f"trigger capture needs PostgreSQL; this app's database is {conn.dialect.name}.")
    found = trigger_tables(runtime, conn)
    if not found:
        click.echo("signalbus: no model is bound with capture='trigger' in this app.", err=True)
    return found


_ALEMBIC = """\
# signalbus trigger capture v{version}, generated by 'signalbus triggers sql --format alembic'.
# Regenerate (and add a new migration) whenever 'signalbus triggers status' says "differs".
SIGNALBUS_TRIGGERS_UP = {up}

SIGNALBUS_TRIGGERS_DOWN = {down}


def upgrade():
    for statement in SIGNALBUS_TRIGGERS_UP:
        op.execute(statement)


def downgrade():
    for statement in SIGNALBUS_TRIGGERS_DOWN:
        op.execute(statement)
"""


def _py_list(statements: list[str]) -> str:
    if not statements:
        return "[]"
    items = "".join(f'    """\n{s}\n""",\n' for s in statements)
    return f"[\n{items}]"


@triggers_group.command("sql", with_appcontext=False)
@click.option("--uninstall", is_flag=True, help="The statements that remove the triggers.")
@click.option("--format", "fmt", type=click.Choice(["sql", "alembic"]), default="sql",
              show_default=True, help="Plain SQL, or the body of an Alembic migration.")
@_app_option
def triggers_sql_command(uninstall: bool, fmt: str, app_import: str | None) -> None:
    """Print the DDL of the capture triggers (idempotent, versioned) for a migration."""
    from .capture import triggers

    with _opened(app_import) as runtime, _engine(runtime).connect() as conn:
        found = _trigger_tables(runtime, conn)
    up, down = triggers.install_sql(found), triggers.uninstall_sql(found)
    if fmt == "alembic":
        click.echo(_ALEMBIC.format(version=triggers.VERSION, up=_py_list(up),
                                   down=_py_list(down)))
        return
    for statement in (down if uninstall else up):
        click.echo(statement + ";\n")


@triggers_group.command("install", with_appcontext=False)
@_app_option
def triggers_install_command(app_import: str | None) -> None:
    """Install (or replace) the capture triggers of every capture='trigger' model."""
    from .capture import triggers

    with _opened(app_import) as runtime, _engine(runtime).begin() as conn:
        found = _trigger_tables(runtime, conn)
        triggers.install(conn, found)
    for t in found:
        _echo(f"installed the capture triggers of {t.key}")


@triggers_group.command("uninstall", with_appcontext=False)
@click.option("--keep-unbound", is_flag=True,
              help="Only the bound tables' triggers; keep those no binding claims.")
@click.option("--discard", is_flag=True,
              help="Delete captured changes no worker has turned into events yet (without "
                   "it, uninstall refuses while there are any).")
@_app_option
def triggers_uninstall_command(keep_unbound: bool, discard: bool,
                               app_import: str | None) -> None:
    """Remove the capture triggers and rows tables (of bound tables, and those no binding
    claims)."""
    from .capture import triggers

    with _opened(app_import) as runtime, _engine(runtime).begin() as conn:
        from .outbox.changes import changes_table, trigger_tables

        removed = triggers.uninstall(conn, trigger_tables(runtime, conn),
                                     changes_table=changes_table(conn),
                                     unbound=not keep_unbound, discard=discard)
    for key in removed:
        _echo(f"removed the capture triggers of {key}")
    if not removed:
        _echo("no capture triggers to remove.")


@triggers_group.command("status", with_appcontext=False)
@_json_option
@_app_option
def triggers_status_command(as_json: bool, app_import: str | None) -> None:
    """Each capture='trigger' table: installed, missing, differs (from its bindings) or
    unbound; the captured changes waiting or failed. Exits 1 unless all are installed."""
    from .capture import triggers
    from .outbox import sql

    with _opened(app_import) as runtime, _engine(runtime).connect() as conn:
        from .outbox.changes import trigger_tables

        found = trigger_tables(runtime, conn)
        report = [st.as_dict() for st in triggers.status(conn, found)]
        summary = sql.changes_summary(conn)
    if as_json:
        _echo_json({"tables": report, "changes": summary})
    else:
        for st in report:
            _echo(f"{st['table']}: {st['state']}")
        _echo(f"captured changes: {summary['waiting']} waiting, {summary['failed']} failed"
              + (f" (latest: {summary['latest_error']})" if summary["latest_error"] else ""))
    if any(st["state"] != "installed" for st in report):
        raise SystemExit(1)


@triggers_group.command("retry", with_appcontext=False)
@_app_option
def triggers_retry_command(app_import: str | None) -> None:
    """Make captured changes that could not be turned into events eligible again."""
    from .outbox import sql

    with _opened(app_import) as runtime, _engine(runtime).begin() as conn:
        count = sql.retry_changes(conn)
    _echo(f"{count} captured changes will be turned into events again.")


def _load_command_modules() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    # Plugin packages add subcommands (``flask signalbus journal …``) through the
    # ``signalbus.commands`` entry point group: a click command or group each.
    from importlib import metadata

    for ep in metadata.entry_points(group="signalbus.commands"):
        try:
            command = ep.load()
        except Exception as exc:  # a broken plugin must not take the whole CLI down
            click.echo(f"signalbus: command {ep.name!r} could not be loaded: {exc}", err=True)
            continue
        cli.add_command(command, ep.name)


_load_command_modules()


def main() -> None:
    """``signalbus --app module:factory COMMAND``: the same commands without ``flask``."""

    @click.group(cls=AppGroup, commands=cli.commands, help=cli.help)
    @click.option("--app", "app_import", default=None, envvar="SIGNALBUS_APP",
                  help="The app: 'module:factory' (Flask app factory), 'module:app', or a "
                       "plain SQLAlchemy 'module:bus' (a SignalBus). Every command also "
                       "takes --app after its name; SIGNALBUS_APP (or FLASK_APP) in the "
                       "environment does the same.")
    @click.pass_context
    def entry(ctx: click.Context, app_import: str | None) -> None:
        app_import = app_import or os.environ.get("FLASK_APP") or None
        ctx.ensure_object(ScriptInfo).app_import_path = app_import

    entry(obj=ScriptInfo(), auto_envvar_prefix="SIGNALBUS")
