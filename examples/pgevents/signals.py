"""The example's one binding and its receiver.

The original registered ``@PG.listens_for(UserAccount, {'insert'})`` and re-read the row
in the listener. Here the database's triggers capture every insert into ``useraccounts``
(``capture="trigger"``) into the outbox, in the writer's own transaction; the worker sends
``account_created`` with the row's values, so the receiver needs no query.
"""

from __future__ import annotations

from typing import Any

import signalbus

from .models import UserAccount

signalbus.bind(UserAccount, "insert", "account_created", capture="trigger")


@signalbus.receiver("account_created")
def announce(sender: Any, event: signalbus.Event, **kwargs: Any) -> None:
    """Print a line for each new account (the original's console message)."""
    d = event.data
    print(f"New user account created!!! <UserAccount {d['username']}, {d['email']}: "
          f"name:{d['first_name']} {d['last_name']} active:{d['active']}> "
          f"(event {event.id}, {event.source})", flush=True)
