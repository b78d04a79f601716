"""``flask signalbus relay`` (and ``signalbus relay --app …``): hand the outbox over to
Celery. Added to the ``signalbus`` command group by :data:`signalbus.cli.COMMAND_MODULES`;
imports neither Celery nor the relay until the command runs."""

from __future__ import annotations

import logging

import click

from ..cli import _app_option, _echo, _echo_json, _engine, _json_option, _opened, cli

__all__ = ["relay_command"]


@cli.command("relay", with_appcontext=False)
@click.option("--once", is_flag=True, help="Hand over everything due, then exit.")
@click.option("--batch", type=click.IntRange(min=1), help="Events and deliveries per round.")
@click.option("--poll", type=click.FloatRange(min=0.01, max=86400), help="Seconds between polls.")
@click.option("--lease", type=click.FloatRange(min=0.1, max=86400),
              help="Seconds a handed-over delivery may stay unreported before it is handed "
                   "over again (default SIGNALBUS_CELERY_LEASE).")
@click.option("--name", help="This relay's id (default relay:host:pid).")
@click.option("--no-listen", is_flag=True, help="Poll only; no PostgreSQL LISTEN.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@_json_option
@_app_option
def relay_command(once: bool, batch: int | None, poll: float | None, lease: float | None,
                  name: str | None, no_listen: bool, log_level: str, as_json: bool,
                  app_import: str | None) -> None:
    """Hand committed deliveries over to Celery (SIGNALBUS_DELIVERY = 'celery')."""
    from . import init_celery
    from .relay import Relay, backend_of

    if not logging.getLogger().handlers:
        logging.basicConfig(level=log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("signalbus").setLevel(log_level.upper())
    with _opened(app_import) as runtime:
        backend = backend_of(runtime)
        if backend.celery is None:
            host = runtime.app.extensions.get("celery") if runtime.app is not None else None
            init_celery(runtime, celery=host)
        relay = Relay(runtime, engine=_engine(runtime), name=name, listen=not no_listen,
                      batch=batch, poll=poll, lease=lease)
        logging.getLogger("signalbus").info(
            "signalbus relay %s started on %s, tasks to queue %r", relay.name,
            relay.engine.dialect.name, relay.celery_settings.queue)
        stats = relay.run(once=once)
    if as_json:
        _echo_json(stats.as_dict())
    else:
        _echo(f"signalbus relay {relay.name}: {stats.expanded} events expanded into "
              f"{stats.deliveries} deliveries, {stats.handed_over} tasks sent, "
              f"{stats.dead} dead, {stats.broker_errors} broker errors")
