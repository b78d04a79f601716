"""YVIH, the issue tracker: a new ``Data`` row raises ``issue_raised``.

Admins get a mail (the mail plugin's default ``issue_raised`` rule, to ``@admins``) and
Slack gets a post (the Slack plugin's default rule).
"""

from .app import create_app, init_db
from .models import Data, db

__all__ = ["Data", "create_app", "db", "init_db"]
