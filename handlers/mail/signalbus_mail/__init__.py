"""signalbus-mail: mails sent by Flask-Mail when named signalbus signals fire.

Installed, it is the ``mail`` plugin of the ``signalbus.plugins`` entry point group;
configure it with ``SIGNALBUS_MAIL_*`` and Flask-Mail's ``MAIL_*`` keys (see the
README and :mod:`signalbus_mail.plugin`).
"""

from __future__ import annotations

from .headers import check_address as check_address
from .headers import check_header as check_header
from .plugin import CONFIG_DEFAULTS as CONFIG_DEFAULTS
from .plugin import receiver_name as receiver_name
from .plugin import setup as setup
from .rules import DEFAULT_RULES as DEFAULT_RULES
from .rules import Rule as Rule
from .sending import Mailer as Mailer
from .sending import RuleReceiver as RuleReceiver
from .sending import message_id as message_id

__all__ = [
    "CONFIG_DEFAULTS",
    "DEFAULT_RULES",
    "Mailer",
    "Rule",
    "RuleReceiver",
    "check_address",
    "check_header",
    "message_id",
    "receiver_name",
    "setup",
]
