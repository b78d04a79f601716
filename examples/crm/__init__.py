"""The CRM: auto fields set on flush, a JSON Lines journal of every change, muted loads."""

from .app import create_app, init_db
from .models import Contact, db

__all__ = ["Contact", "create_app", "db", "init_db"]
