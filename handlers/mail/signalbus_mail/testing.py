"""pytest plugin of signalbus-mail (``pytest11`` entry point): the ``smtp_server`` fixture.

``smtp_server`` is a real SMTP server (aiosmtpd) on 127.0.0.1 and a free port, running
for one test. Point an app at it with ``smtp_server.configure(app)`` (before
``signalbus.init_app``, or afterwards: it also refreshes Flask-Mail's state), or merge
``smtp_server.config`` into the app's config. Then:

* ``smtp_server.messages``: every message received, parsed into
  :class:`email.message.EmailMessage` (``msg["Subject"]``, ``msg.get_body(...)``), its
  CRLF line ends turned into ``\n`` as a mailbox stores them;
* ``smtp_server.envelopes``: the SMTP envelopes (``mail_from``, ``rcpt_tos``, ``message``);
* ``smtp_server.refuse(address, reply)``: answer ``RCPT TO`` for that address with
  ``reply`` (``"550 5.1.1 ..."`` for a permanent, ``"450 ..."`` for a temporary refusal);
  ``smtp_server.accept(address)`` takes that back.

This module imports nothing heavy: aiosmtpd is imported when the fixture starts.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import socket
import threading
from collections.abc import Generator
from email.message import EmailMessage
from typing import Any

import pytest

__all__ = ["Envelope", "SMTPServer", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass(frozen=True)
class Envelope:
    """One accepted SMTP transaction."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage


class _Handler:
    def __init__(self, server: SMTPServer) -> None:
        self.server = server

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: list[str]) -> str:
        reply = self.server._refusals.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        # SMTP carries CRLF line ends; store them as a mailbox would, as plain newlines
        content = envelope.content.replace(b"\r\n", b"\n")
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.server._record(Envelope(envelope.mail_from, tuple(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


class SMTPServer:
    """A real SMTP server for one test; see the module docstring."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.port = 0
        """The port it listens on (set by :meth:`start`)."""
        self.envelopes: list[Envelope] = []
        """Accepted transactions, in order."""
        self._refusals: dict[str, str] = {}
        self._lock = threading.Lock()
        self._controller: Any = None

    @property
    def messages(self) -> list[EmailMessage]:
        """Every received message, parsed, in order."""
        with self._lock:
            return [e.message for e in self.envelopes]

    @property
    def config(self) -> dict[str, Any]:
        """Flask-Mail settings that send to this server (plain SMTP, no auth, not suppressed)."""
        return {
            "MAIL_SERVER": self.host,
            "MAIL_PORT": self.port,
            "MAIL_USE_TLS": False,
            "MAIL_USE_SSL": False,
            "MAIL_USERNAME": None,
            "MAIL_PASSWORD": None,
            "MAIL_SUPPRESS_SEND": False,
        }

    def configure(self, app: Any) -> Any:
        """Point ``app`` at this server; returns ``app``.

        Updates ``app.config`` and, when Flask-Mail is already set up on the app,
        rebuilds its state from the new config (Flask-Mail reads config only once).
        """
        app.config.update(self.config)
        if "mail" in app.extensions:
            from flask_mail import Mail

            Mail().init_app(app)
        return app

    def refuse(self, address: str, reply: str = "550 5.1.1 Mailbox unavailable") -> None:
        """Answer ``RCPT TO:<address>`` with ``reply`` from now on."""
        self._refusals[address.lower()] = reply

    def accept(self, address: str) -> None:
        """Accept ``address`` again after :meth:`refuse`."""
        self._refusals.pop(address.lower(), None)

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._lock:
            self.envelopes.clear()

    def _record(self, envelope: Envelope) -> None:
        with self._lock:
            self.envelopes.append(envelope)

    def start(self) -> None:
        """Start listening (on a free port, retried if another process takes it first)."""
        try:
            from aiosmtpd.controller import Controller
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                "the smtp_server fixture needs aiosmtpd: pip install 'signalbus-mail[test]'"
            ) from exc
        last: Exception | None = None
        for _ in range(5):
            self.port = free_port(self.host)
            controller = Controller(_Handler(self), hostname=self.host, port=self.port,
                                    ready_timeout=5.0, enable_SMTPUTF8=True)
            try:
                controller.start()
            except OSError as exc:  # the port was taken between the probe and the bind
                last = exc
                continue
            self._controller = controller
            return
        raise RuntimeError(f"could not start the SMTP test server: {last}")

    def stop(self) -> None:
        """Stop the server."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __repr__(self) -> str:
        return f"<SMTPServer {self.host}:{self.port} messages={len(self.envelopes)}>"


@pytest.fixture
def smtp_server() -> Generator[SMTPServer, None, None]:
    """A real SMTP server on 127.0.0.1 for this test (see :class:`SMTPServer`)."""
    server = SMTPServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
