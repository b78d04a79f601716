"""signalbus-hello: greets every registered user (the plugin template).

Copy this package to start a plugin: an entry point in ``pyproject.toml``, a
``plugin(bus)`` function connecting receivers through ``bus``, and a test.
"""

from __future__ import annotations

import logging
from typing import Any

from signalbus import Event
from signalbus.plugins import PluginBus

__all__ = ["plugin", "requires"]

log = logging.getLogger("signalbus_hello")

requires = {"user_registered": {"email"}}
"""The ``data`` fields used; ``init_app`` checks them against the host's bindings."""


def plugin(bus: PluginBus) -> None:
    """Connect the greeting for the app ``bus`` belongs to."""
    greeting = bus.config.get("SIGNALBUS_HELLO_GREETING", "Hello")

    def greet(sender: Any, event: Event, **kwargs: Any) -> None:
        log.info("%s, %s! (event %s)", greeting, event.data["email"], event.id)

    # a stable name: the outbox tracks deliveries by it
    bus.connect("user_registered", greet, name="signalbus_hello.greet")
    bus.describe(f"greets with {greeting!r}")
