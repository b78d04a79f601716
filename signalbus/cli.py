"""``flask signalbus …`` (through the ``flask.commands`` entry point) and ``signalbus …``.

This module is imported by Flask's CLI at start-up, so it imports nothing heavy at
module level: the commands import what they need when they run. The delivery modes
add their commands (``worker``, ``status``, …) to :data:`cli` from their own modules,
listed in :data:`COMMAND_MODULES`; plugin packages add theirs through the
``signalbus.commands`` entry point group.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import click
from flask.cli import AppGroup, ScriptInfo, with_appcontext

__all__ = ["cli", "main"]

COMMAND_MODULES = ("signalbus.worker",)
"""Modules that add commands to the group when they exist."""

cli = AppGroup("signalbus", help="Inspect signalbus and run its worker.")


def _runtime() -> Any:
    from flask import current_app

    ext = current_app.extensions.get("signalbus")
    if ext is None:
        raise click.ClickException(
            "signalbus is not set up on this app: call signalbus.init_app(app) in the app factory."
        )
    return ext.runtime(current_app._get_current_object())  # type: ignore[attr-defined]


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


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_appcontext
def list_command(as_json: bool) -> None:
    """Show signals, their bindings and receivers, and the plugins."""
    listing = _listing(_runtime())
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


@cli.command("catalog")
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown",
              show_default=True, help="Markdown for a docs site, or JSON for tools.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to this file instead of standard output.")
@with_appcontext
def catalog_command(fmt: str, output: str | None) -> None:
    """Write the catalog of every signal: producers, payload fields, consumers."""
    from . import catalog

    data = catalog.build(_runtime())
    text = (json.dumps(data, indent=2) + "\n" if fmt == "json"
            else catalog.to_markdown(data))
    if output is None:
        click.echo(text, nl=False)
    else:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)


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
    @click.option("--app", "app_import", default=None,
                  help="The app factory or instance, as 'module:factory' or 'module:app' "
                       "(the outbox commands also take --app after their name).")
    @click.pass_context
    def entry(ctx: click.Context, app_import: str) -> None:
        ctx.ensure_object(ScriptInfo).app_import_path = app_import

    entry(obj=ScriptInfo(), auto_envvar_prefix="SIGNALBUS")
