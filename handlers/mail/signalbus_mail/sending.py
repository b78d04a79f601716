"""Building a rule's message and handing it to the SMTP server.

The message is a :class:`flask_mail.Message` built from Flask-Mail's settings
(``MAIL_*``, ``app.extensions["mail"]``); Flask-Mail's ``email_dispatched`` signal is
sent for it, so ``mail.record_messages()`` sees it. The SMTP conversation itself is
ours because Flask-Mail's connection sets no timeout and drops the list of refused
recipients that :meth:`smtplib.SMTP.sendmail` returns, and both matter here.

Exception contract of :meth:`Mailer.send`: a bad header value, an empty recipient
field or a 5xx reply raises :class:`signalbus.Permanent`; a connection failure, a
timeout or a 4xx reply raises :class:`signalbus.Retry`; anything else (a template
error) propagates unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import uuid
import weakref
from collections.abc import Iterator, Mapping
from email.utils import formataddr
from typing import Any

from flask import current_app, has_app_context, render_template
from flask_mail import Message, email_dispatched, sanitize_address, sanitize_addresses
from jinja2 import Template

from signalbus import Event, Permanent, Retry

from .headers import check_header, check_header_name, parse_address
from .rules import Rule

__all__ = ["Mailer", "RuleReceiver", "message_id"]

log = logging.getLogger("signalbus_mail")

_NAMESPACE = uuid.UUID("7f0c5b0e-3c55-5d2e-9b1a-5a1f0e6b2c11")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def message_id(event_id: str, rule: str, domain: str) -> str:
    """The Message-ID of the mail ``rule`` sends for event ``event_id``.

    It depends on nothing else, so a redelivered event (a retry, a replay, a second
    worker) produces the same Message-ID and receiving systems can drop the duplicate.
    """
    token = uuid.uuid5(_NAMESPACE, f"{event_id}\x00{rule}")
    return f"<{token.hex}@{domain}>"


def _domain_of(address: str) -> str:
    domain = address.rpartition("@")[2]
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "localhost"
    return domain if _DOMAIN.fullmatch(domain) else "localhost"


class Mailer:
    """The mail plugin's state for one Flask app: its rules and SMTP settings.

    Stored as ``app.extensions["signalbus_mail"]``.
    """

    def __init__(self, app: Any, rules: list[Rule], *, timeout: float,
                 message_id_domain: str | None, html: Mapping[str, bool]) -> None:
        self._app = weakref.ref(app)
        self.rules = {rule.name: rule for rule in rules}
        """The active rules by name."""
        self.timeout = timeout
        """SMTP socket timeout in seconds (``SIGNALBUS_MAIL_TIMEOUT``)."""
        self.message_id_domain = message_id_domain
        self._html = dict(html)
        self._headers: dict[str, list[tuple[str, Template]]] = {
            rule.name: [(name, app.jinja_env.from_string(src)) for name, src in rule.headers]
            for rule in rules
        }

    @property
    def app(self) -> Any:
        """The Flask app the mails are sent for."""
        app = self._app()
        if app is None:
            raise RuntimeError("the Flask app of this signalbus-mail Mailer no longer exists")
        return app

    @contextlib.contextmanager
    def app_context(self) -> Iterator[None]:
        """The app's context: the active one if it is this app's, else a pushed one."""
        app = self.app
        if has_app_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]
            yield
            return
        with app.app_context():
            yield

    def build(self, rule: Rule, event: Event) -> Message:
        """The checked message ``rule`` sends for ``event`` (needs the app context).

        Raises :class:`Permanent` naming the field when a header value is unsafe.
        """
        where = f"signalbus-mail rule {rule.name!r} ({event.signal} event {event.id})"
        to = rule.to.resolve("recipient", event, where=where, name_field=rule.name_field)
        cc = rule.cc.resolve("cc", event, where=where) if rule.cc else []
        bcc = rule.bcc.resolve("bcc", event, where=where) if rule.bcc else []
        state = self.app.extensions["mail"]
        sender_name, sender = parse_address(
            "sender", rule.sender or state.default_sender, where=where
        )
        context = {"event": event, "data": event.data, "rule": rule.name}
        base = f"signalbus_mail/{rule.template}"
        subject = render_template(f"{base}.subject.txt", **context).strip()
        check_header("subject", subject, where=where)
        body = render_template(f"{base}.txt", **context)
        html = render_template(f"{base}.html", **context) if self._html[rule.name] else None
        headers = {}
        for name, template in self._headers[rule.name]:
            check_header_name(name, where=where)
            headers[name] = check_header(f"header {name!r}", template.render(**context).strip(),
                                         where=where)
        message = Message(
            subject=subject,
            recipients=list(to),
            body=body,
            html=html,
            sender=formataddr((sender_name, sender)) if sender_name else sender,
            cc=list(cc),
            bcc=list(bcc),
            extra_headers=headers or None,
        )
        message.msgId = message_id(
            event.id, rule.name, self.message_id_domain or _domain_of(sender)
        )
        if message.has_bad_headers():  # Flask-Mail's own check, as a second line
            raise Permanent(f"{where}: Flask-Mail found a bad header; no mail sent")
        return message

    def send(self, rule: Rule, event: Event) -> Message:
        """Build and send the mail of ``rule`` for ``event``; returns the message sent."""
        with self.app_context():
            message = self.build(rule, event)
            app = self.app
            state = app.extensions["mail"]
            where = f"signalbus-mail rule {rule.name!r} ({event.signal} event {event.id})"
            if not state.suppress:
                self._transmit(state, message, where)
            email_dispatched.send(app, message=message)
            log.info("%s: mail %s sent to %d recipient(s)%s", where, message.msgId,
                     len(message.send_to), " (MAIL_SUPPRESS_SEND)" if state.suppress else "")
            return message

    def _connect(self, state: Any) -> smtplib.SMTP:
        factory = smtplib.SMTP_SSL if state.use_ssl else smtplib.SMTP
        smtp = factory(state.server, state.port, timeout=self.timeout)
        try:
            if state.use_tls:
                smtp.starttls()
            if state.username and state.password:
                smtp.login(state.username, state.password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _transmit(self, state: Any, message: Message, where: str) -> None:
        server = f"SMTP server {state.server}:{state.port}"
        recipients = sorted(sanitize_addresses(message.send_to))
        try:
            smtp = self._connect(state)
            try:
                refused = smtp.sendmail(sanitize_address(message.sender), recipients,
                                        message.as_bytes())
            except BaseException:
                smtp.close()
                raise
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()  # the mail was accepted; a failed QUIT changes nothing
        except smtplib.SMTPRecipientsRefused as exc:
            _refused(where, server, exc.recipients, everyone=True)
        except smtplib.SMTPResponseException as exc:
            code, text = exc.smtp_code, _text(exc.smtp_error)
            if 500 <= code < 600:
                raise Permanent(f"{where}: {server} refused the mail: {code} {text}") from None
            raise Retry(message=f"{where}: {server} answered {code} {text}; will retry") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise Permanent(f"{where}: {server} does not support what MAIL_* asks: {exc}") from None
        except (smtplib.SMTPException, OSError) as exc:
            # connection refused, DNS failure, timeout, TLS failure, dropped connection
            raise Retry(
                message=f"{where}: could not talk to {server} "
                f"(timeout {self.timeout:g}s): {type(exc).__name__}: {exc}; will retry"
            ) from None
        if refused:
            _refused(where, server, refused, everyone=False)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _refused(where: str, server: str, refused: Mapping[str, tuple[int, Any]],
             *, everyone: bool) -> None:
    shown = ", ".join(f"{addr} ({code} {_text(text)})" for addr, (code, text)
                      in sorted(refused.items()))
    others = "" if everyone else " (the other recipients got the mail)"
    if any(500 <= code < 600 for code, _ in refused.values()):
        raise Permanent(f"{where}: {server} refused recipient(s) {shown}{others}")
    raise Retry(
        message=f"{where}: {server} temporarily refused recipient(s) {shown}{others}; "
        "will retry (with the same Message-ID)"
    )


class RuleReceiver:
    """The receiver a rule connects: ``fn(sender, event=event)`` sends the rule's mail."""

    def __init__(self, mailer: Mailer, rule: Rule) -> None:
        self.mailer = mailer
        self.rule = rule

    def __call__(self, sender: Any, event: Event, **kwargs: Any) -> Message:
        """Send the mail; see :class:`Mailer` for the exception contract."""
        return self.mailer.send(self.rule, event)

    def __repr__(self) -> str:
        return f"<signalbus-mail receiver for rule {self.rule.name!r}>"
