"""The ``mail`` entry point: reads the config and connects one receiver per rule.

Config keys (read with ``app.config.setdefault``):

``SIGNALBUS_MAIL_RULES``
    rule name → rule (see :mod:`signalbus_mail.rules`); default :data:`DEFAULT_RULES`.
``SIGNALBUS_MAIL_ADMINS``
    the addresses ``"@admins"`` stands for; default ``[]``.
``SIGNALBUS_MAIL_TIMEOUT``
    SMTP socket timeout in seconds, for connect and every command; default ``10``.
    Must be a positive number: an SMTP call without a timeout can hang a worker.
``SIGNALBUS_MAIL_MESSAGE_ID_DOMAIN``
    the domain of generated Message-IDs; default: the sender address's domain.

plus Flask-Mail's own ``MAIL_*`` keys (``MAIL_SERVER``, ``MAIL_PORT``,
``MAIL_DEFAULT_SENDER``, ``MAIL_USE_TLS``, ``MAIL_USE_SSL``, ``MAIL_USERNAME``,
``MAIL_PASSWORD``, ``MAIL_SUPPRESS_SEND``). If the host app has not set up Flask-Mail,
the plugin does (``flask_mail.Mail(app)``), so set them before ``signalbus.init_app``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from flask import Blueprint
from jinja2 import TemplateNotFound, TemplateSyntaxError

from signalbus import ConfigurationError, signals
from signalbus.plugins import PluginBus

from .rules import DEFAULT_RULES, GROUPS, Rule, parse_rules
from .sending import Mailer, RuleReceiver

__all__ = ["CONFIG_DEFAULTS", "receiver_name", "setup"]

log = logging.getLogger("signalbus_mail")

CONFIG_DEFAULTS: dict[str, Any] = {
    "SIGNALBUS_MAIL_RULES": DEFAULT_RULES,
    "SIGNALBUS_MAIL_ADMINS": [],
    "SIGNALBUS_MAIL_TIMEOUT": 10.0,
    "SIGNALBUS_MAIL_MESSAGE_ID_DOMAIN": None,
}
"""Every ``SIGNALBUS_MAIL_*`` key with its default."""


def receiver_name(rule: str) -> str:
    """The durable receiver name of a rule: ``"signalbus_mail:<rule>"``."""
    return f"signalbus_mail:{rule}"


def _timeout(value: Any) -> float:
    try:
        timeout = float(value)
    except (TypeError, ValueError):
        timeout = 0.0
    if not timeout > 0:
        raise ConfigurationError(
            f"SIGNALBUS_MAIL_TIMEOUT is {value!r}; it must be a positive number of seconds "
            "(an SMTP call without a timeout can block a worker forever). Default: 10."
        )
    return timeout


def _templates(app: Any, rule: Rule) -> bool:
    """Check that a rule's templates exist and compile; return whether it has HTML."""
    base = f"signalbus_mail/{rule.template}"
    html = True
    for suffix, required in ((".subject.txt", True), (".txt", True), (".html", False)):
        try:
            app.jinja_env.get_template(base + suffix)
        except TemplateNotFound:
            if required:
                raise ConfigurationError(
                    f"SIGNALBUS_MAIL_RULES[{rule.name!r}] uses template {rule.template!r}, but "
                    f"'{base}{suffix}' was found neither in the app's templates folder nor "
                    "in signalbus-mail. Add it (with '.txt' and, optionally, '.html')."
                ) from None
            html = False
        except TemplateSyntaxError as exc:
            raise ConfigurationError(
                f"template '{base}{suffix}' of SIGNALBUS_MAIL_RULES[{rule.name!r}] does not "
                f"compile: {exc.message} (line {exc.lineno})"
            ) from None
    return html


def _skip_reason(rule: Rule, app: Any, default_sender: Any) -> str | None:
    for recipients in (rule.to, rule.cc, rule.bcc):
        if recipients is not None and recipients.group and not recipients.addresses:
            return f"{GROUPS[recipients.group]} is empty ({recipients.group})"
    if not (rule.sender or default_sender):
        return "no sender: set MAIL_DEFAULT_SENDER (or the rule's 'sender')"
    return None


def setup(bus: PluginBus) -> None:
    """Connect a receiver per mail rule to the app's bus (the ``mail`` entry point).

    Without a Flask app (a plain ``attach``) the plugin stays inactive. A default rule
    that cannot work (no sender configured, ``@admins`` with no admins) is skipped and
    shown as skipped by ``flask signalbus list``; an explicitly configured one raises
    :class:`signalbus.ConfigurationError`.
    """
    app = bus.app
    if app is None:
        bus.describe("inactive: signalbus-mail sends through Flask-Mail and needs a Flask "
                     "app (signalbus.init_app)")
        return
    explicit = "SIGNALBUS_MAIL_RULES" in app.config
    for key, value in CONFIG_DEFAULTS.items():
        app.config.setdefault(key, copy.deepcopy(value))
    config = app.config
    timeout = _timeout(config["SIGNALBUS_MAIL_TIMEOUT"])
    rules = parse_rules(config["SIGNALBUS_MAIL_RULES"], config)
    default_sender = (app.extensions["mail"].default_sender if "mail" in app.extensions
                      else config.get("MAIL_DEFAULT_SENDER"))
    active: list[Rule] = []
    for rule in rules:
        reason = _skip_reason(rule, app, default_sender)
        if reason is None and not explicit and not signals.is_declared(rule.signal):
            # a default rule for a signal this app never sends (no bind() or signal())
            reason = f"signal {rule.signal!r} is not declared by the app"
        if reason is None:
            active.append(rule)
        elif explicit:
            raise ConfigurationError(f"SIGNALBUS_MAIL_RULES[{rule.name!r}] cannot send: {reason}.")
        else:
            bus.describe(f"default rule {rule.name!r} skipped: {reason}")
            log.info("signalbus-mail: default rule %r skipped: %s", rule.name, reason)
    if not active:
        return
    if "mail" not in app.extensions:
        from flask_mail import Mail

        Mail(app)
    # The package's templates, behind the app's own: Flask's loader searches the app's
    # templates folder first, so templates/signalbus_mail/<name>... there override these.
    app.register_blueprint(Blueprint("signalbus_mail", __name__, template_folder="templates"))
    html = {rule.name: _templates(app, rule) for rule in active}
    mailer = Mailer(app, active, timeout=timeout, html=html,
                    message_id_domain=config["SIGNALBUS_MAIL_MESSAGE_ID_DOMAIN"])
    app.extensions["signalbus_mail"] = mailer
    state = app.extensions["mail"]
    bus.describe(f"SMTP {state.server}:{state.port}, timeout {timeout:g}s"
                 + (" (MAIL_SUPPRESS_SEND: not sending)" if state.suppress else ""))
    for rule in active:
        bus.connect(rule.signal, RuleReceiver(mailer, rule), name=receiver_name(rule.name))
        if rule.required_fields:
            bus.requires({rule.signal: rule.required_fields})
        bus.describe(f"rule {rule.name!r}: {rule.signal} -> {rule.to.describe()}, "
                     f"template {rule.template!r}")
