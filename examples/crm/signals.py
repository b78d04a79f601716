"""The CRM's declarations.

Two ``phase="flush"`` bindings fill the auto fields before the row is written (Django's
``pre_save``): a public id and the author on insert, the last author on update. Three
commit-phase bindings send ``contact_created``, ``contact_updated`` and
``contact_deleted``, which the journal plugin appends to its JSON Lines files.
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import g, has_app_context

import signalbus
from signalbus import Event

CONTACT = "examples.crm.models:Contact"

signalbus.bind(CONTACT, "insert", "contact_saving", phase="flush")
signalbus.bind(CONTACT, "update", "contact_updating", phase="flush")
signalbus.bind(CONTACT, "insert", "contact_created")
signalbus.bind(CONTACT, "update", "contact_updated")
signalbus.bind(CONTACT, "delete", "contact_deleted")


def current_author() -> str:
    """Who is making the change: ``g.author`` in a request, else ``"system"``."""
    return str(g.get("author", "system")) if has_app_context() else "system"


@signalbus.receiver("contact_saving", name="crm.auto_fields_on_insert")
def auto_fields_on_insert(sender: Any, event: Event, **kwargs: Any) -> None:
    contact = event.instance
    if not contact.public_id:
        contact.public_id = "C-" + secrets.token_hex(5)
    contact.created_by = contact.created_by or current_author()


@signalbus.receiver("contact_updating", name="crm.auto_fields_on_update")
def auto_fields_on_update(sender: Any, event: Event, **kwargs: Any) -> None:
    event.instance.updated_by = current_author()
