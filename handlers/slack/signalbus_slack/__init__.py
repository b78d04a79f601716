"""signalbus-slack: Slack incoming-webhook posts when named signalbus signals fire.

Installed, it is the ``slack`` plugin of the ``signalbus.plugins`` entry point group;
configure it with the ``SIGNALBUS_SLACK_*`` keys (see the README and
:mod:`signalbus_slack.plugin`).
"""

from __future__ import annotations

from .http import proxies_for as proxies_for
from .http import redact_url as redact_url
from .plugin import CONFIG_DEFAULTS as CONFIG_DEFAULTS
from .plugin import DEFAULT_RULES as DEFAULT_RULES
from .plugin import SlackPostError as SlackPostError
from .plugin import SlackRule as SlackRule
from .plugin import escape_mrkdwn as escape_mrkdwn
from .plugin import parse_retry_after as parse_retry_after
from .plugin import receiver_name as receiver_name
from .plugin import setup as setup

__all__ = [
    "CONFIG_DEFAULTS",
    "DEFAULT_RULES",
    "SlackPostError",
    "SlackRule",
    "escape_mrkdwn",
    "parse_retry_after",
    "proxies_for",
    "receiver_name",
    "redact_url",
    "setup",
]
