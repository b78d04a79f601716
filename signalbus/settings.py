"""Settings: every ``SIGNALBUS_*`` key, its default, and the one parser of each kind.

Read once per runtime from the app config (or ``attach(config=...)``). A leaf module:
it imports nothing of signalbus but its errors, so every layer can read settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigurationError

__all__ = ["ALL", "BACKENDS", "DEFAULTS", "Settings", "comma_list", "fold", "parse_muted"]

_SEPARATORS = str.maketrans("", "", "_-. ")


def fold(name: str) -> str:
    """An attribute name (or a ``SIGNALBUS_REDACT`` pattern) as redaction compares it:
    lower case, without ``_``, ``-``, ``.`` and spaces — so that ``api_key`` matches
    ``sendGridApiKey``, ``APIKey`` and ``api-key`` alike."""
    return name.lower().translate(_SEPARATORS)


DEFAULTS: dict[str, Any] = {
    "SIGNALBUS_DELIVERY": "inline",
    "SIGNALBUS_REDACT": ("password", "passwd", "pwd", "secret", "token", "api_key",
                         "private_key", "credential"),
    "SIGNALBUS_MUTED": False,
    "SIGNALBUS_PLUGINS": None,
    "SIGNALBUS_DISABLED_PLUGINS": (),
    "SIGNALBUS_PLUGINS_STRICT": False,
    "SIGNALBUS_MAX_DEPTH": 10,
    # Flask: a callable returning the signalbus.context() values of each request
    "SIGNALBUS_CONTEXT": None,
    # the outbox and its worker (signalbus.outbox)
    "SIGNALBUS_OUTBOX_BATCH": 100,
    "SIGNALBUS_OUTBOX_LEASE": 60.0,
    "SIGNALBUS_OUTBOX_BACKOFF_BASE": 2.0,
    "SIGNALBUS_OUTBOX_BACKOFF_CAP": 3600.0,
    "SIGNALBUS_OUTBOX_MAX_ATTEMPTS": 10,
    "SIGNALBUS_OUTBOX_POLL": 2.0,
    "SIGNALBUS_OUTBOX_NOTIFY": True,
    "SIGNALBUS_OUTBOX_CHANNEL": "signalbus",
    "SIGNALBUS_OUTBOX_ACK_INTERVAL": 0.5,
}
"""Every setting a bus reads, with its default (backends may add their own)."""

BACKENDS: dict[str, str] = {
    "inline": "signalbus.delivery:Inline",
    "outbox": "signalbus.outbox:Outbox",
    "celery": "signalbus.celery.backend:CeleryOutbox",
}
"""Delivery modes (``SIGNALBUS_DELIVERY``) and the backend class each one loads."""

ALL = "*"
"""Stands for every signal in a set of muted names."""


def comma_list(value: Any) -> tuple[str, ...]:
    """A list setting: ``"a, b"`` (environment style) or any iterable of names."""
    if not value:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(str(v) for v in value)


def parse_muted(value: Any) -> frozenset[str]:
    """Turn a ``SIGNALBUS_MUTED`` value (bool, string or list of names) into names."""
    if value is None or value is False:
        return frozenset()
    if value is True:
        return frozenset({ALL})
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "0", "false", "no", "off"):
            return frozenset()
        if text in ("1", "true", "yes", "on", "all", "*"):
            return frozenset({ALL})
        return frozenset(comma_list(value))
    if isinstance(value, Iterable):
        return frozenset(comma_list(value))
    raise TypeError(f"SIGNALBUS_MUTED must be a bool, a string or a list of names, not {value!r}")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings of one runtime, read once from the app config (or ``attach``)."""

    delivery: str
    redact: tuple[str, ...]
    muted: frozenset[str]
    plugins: tuple[str, ...] | None
    disabled_plugins: tuple[str, ...]
    plugins_strict: bool
    max_depth: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        def get(key: str) -> Any:
            return config.get(key, DEFAULTS[key])

        delivery = str(get("SIGNALBUS_DELIVERY"))
        if delivery not in BACKENDS:
            raise ConfigurationError(
                f"SIGNALBUS_DELIVERY is {delivery!r}; use one of "
                f"{', '.join(map(repr, BACKENDS))}."
            )
        plugins = get("SIGNALBUS_PLUGINS")
        return cls(
            delivery=delivery,
            redact=tuple(fold(p) for p in comma_list(get("SIGNALBUS_REDACT"))),
            muted=parse_muted(get("SIGNALBUS_MUTED")),
            plugins=comma_list(plugins) if plugins is not None else None,
            disabled_plugins=comma_list(get("SIGNALBUS_DISABLED_PLUGINS")),
            plugins_strict=bool(get("SIGNALBUS_PLUGINS_STRICT")),
            max_depth=int(get("SIGNALBUS_MAX_DEPTH")),
        )
