"""Badgeyay: registration with a welcome mail, plan subscriptions and a Slack post.

The models module has no side effects; ``signals.py`` says which changes become which
signals; the mail, plans and Slack plugins react from their own packages.
"""

from .app import create_app, init_db
from .models import User, db

__all__ = ["User", "create_app", "db", "init_db"]
