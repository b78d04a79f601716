"""Mail rules: which signal sends which mail to whom (``SIGNALBUS_MAIL_RULES``).

A rule is a mapping; its key in ``SIGNALBUS_MAIL_RULES`` is the rule's name (part of
the receiver's durable name and of the Message-ID), and the signal it listens to
unless ``"signal"`` says otherwise::

    SIGNALBUS_MAIL_RULES = {
        "user_registered": {"to": "email", "template": "welcome"},
        "issue_raised": {"to": "@admins", "template": "issue_raised"},
    }

Keys: ``to`` (required), ``cc``, ``bcc``: a field of ``event.data`` holding an address
or a list of them, a literal list of addresses, or ``"@admins"``
(``SIGNALBUS_MAIL_ADMINS``); ``template`` (required): the template name;
``name``: a field of ``event.data`` holding the display name of a single ``to``
address; ``sender``: the From address (default ``MAIL_DEFAULT_SENDER``);
``headers``: extra headers, each value a Jinja template; ``signal``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from signalbus import ConfigurationError, Event, Permanent

from .headers import Address, parse_address

__all__ = ["DEFAULT_RULES", "GROUPS", "Recipients", "Rule", "parse_rules"]

DEFAULT_RULES: Mapping[str, Mapping[str, Any]] = {
    "user_registered": {"to": "email", "template": "welcome"},
    "issue_raised": {"to": "@admins", "template": "issue_raised"},
}
"""The rules used when ``SIGNALBUS_MAIL_RULES`` is not set. Setting it replaces them."""

GROUPS = {"@admins": "SIGNALBUS_MAIL_ADMINS"}
"""Recipient groups a rule may name, and the config key listing their addresses."""

_KEYS = frozenset({"signal", "to", "cc", "bcc", "name", "template", "sender", "headers"})


@dataclasses.dataclass(frozen=True)
class Recipients:
    """Where a rule's ``to``/``cc``/``bcc`` addresses come from (exactly one is set)."""

    field: str | None = None
    """A field of ``event.data``: one address or a list of them."""
    addresses: tuple[str | tuple[str, str], ...] = ()
    """Literal addresses from the rule, or the group's addresses."""
    group: str | None = None
    """``"@admins"`` when the addresses come from a group (for messages)."""

    def describe(self) -> str:
        """A short account for ``flask signalbus list`` (no addresses: they are personal)."""
        if self.field is not None:
            return f"data field {self.field!r}"
        if self.group is not None:
            return f"{self.group} ({len(self.addresses)} address(es))"
        return f"{len(self.addresses)} listed address(es)"

    def resolve(self, what: str, event: Event, *, where: str,
                name_field: str | None = None) -> list[Address]:
        """The checked ``(name, address)`` pairs for ``event``; :class:`Permanent` if none."""
        if self.field is None:
            return [parse_address(what, a, where=where) for a in self.addresses]
        field = f"{what} (data field {self.field!r})"
        value = event.data.get(self.field)
        if value is None or value == "" or value == ():
            raise Permanent(
                f"{where}: {field} is empty in the event, so there is nobody to mail; "
                "no mail sent"
            )
        if isinstance(value, str):
            name = ""
            if name_field is not None:
                raw = event.data.get(name_field)
                if raw is not None:
                    name = raw if isinstance(raw, str) else str(raw)
            return [parse_address(field, (name, value), where=where)]
        if isinstance(value, Sequence):
            return [parse_address(field, a, where=where) for a in value]
        raise Permanent(
            f"{where}: {field} must hold an address or a list of addresses, not "
            f"{type(value).__name__}; no mail sent"
        )


@dataclasses.dataclass(frozen=True)
class Rule:
    """One parsed mail rule."""

    name: str
    signal: str
    template: str
    to: Recipients
    cc: Recipients | None = None
    bcc: Recipients | None = None
    name_field: str | None = None
    sender: str | tuple[str, str] | None = None
    headers: tuple[tuple[str, str], ...] = ()
    """``(header name, Jinja template source)`` pairs."""

    @property
    def required_fields(self) -> frozenset[str]:
        """The ``event.data`` fields this rule cannot work without."""
        return frozenset(
            r.field for r in (self.to, self.cc, self.bcc) if r is not None and r.field
        )


def _recipients(rule: str, key: str, spec: Any, config: Mapping[str, Any]) -> Recipients:
    where = f"SIGNALBUS_MAIL_RULES[{rule!r}][{key!r}]"
    if isinstance(spec, str) and spec.startswith("@"):
        config_key = GROUPS.get(spec)
        if config_key is None:
            raise ConfigurationError(
                f"{where} is {spec!r}, an unknown recipient group; the groups are "
                f"{', '.join(map(repr, GROUPS))}."
            )
        addresses = config.get(config_key) or ()
        if isinstance(addresses, str):
            addresses = [a.strip() for a in addresses.split(",") if a.strip()]
        return Recipients(addresses=tuple(addresses), group=spec)
    if isinstance(spec, str) and spec:
        return Recipients(field=spec)
    if isinstance(spec, Sequence) and not isinstance(spec, str) and spec:
        return Recipients(addresses=tuple(spec))
    raise ConfigurationError(
        f"{where} must be the name of an event data field, a non-empty list of addresses, "
        f"or a group such as '@admins'; got {spec!r}."
    )


def parse_rules(rules: Mapping[str, Any], config: Mapping[str, Any]) -> list[Rule]:
    """Parse ``SIGNALBUS_MAIL_RULES``; raise :class:`ConfigurationError` naming the problem."""
    if not isinstance(rules, Mapping):
        raise ConfigurationError(
            f"SIGNALBUS_MAIL_RULES must be a mapping of rule name to rule, not "
            f"{type(rules).__name__}."
        )
    out = []
    for name, spec in rules.items():
        where = f"SIGNALBUS_MAIL_RULES[{name!r}]"
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"{where} must be a mapping, not {type(spec).__name__}.")
        unknown = sorted(set(spec) - _KEYS)
        if unknown:
            raise ConfigurationError(
                f"{where} has unknown key(s) {', '.join(map(repr, unknown))}; the keys are "
                f"{', '.join(sorted(_KEYS))}."
            )
        for key in ("to", "template"):
            if not spec.get(key):
                raise ConfigurationError(f"{where} needs {key!r}.")
        headers = spec.get("headers") or {}
        if not isinstance(headers, Mapping):
            raise ConfigurationError(f"{where}['headers'] must be a mapping of name to value.")
        sender = spec.get("sender")
        out.append(Rule(
            name=str(name),
            signal=str(spec.get("signal") or name),
            template=str(spec["template"]),
            to=_recipients(name, "to", spec["to"], config),
            cc=_recipients(name, "cc", spec["cc"], config) if spec.get("cc") else None,
            bcc=_recipients(name, "bcc", spec["bcc"], config) if spec.get("bcc") else None,
            name_field=spec.get("name"),
            sender=tuple(sender) if isinstance(sender, list | tuple) else sender,
            headers=tuple((str(k), str(v)) for k, v in headers.items()),
        ))
    return out
