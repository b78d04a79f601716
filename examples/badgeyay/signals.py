"""Which changes of Badgeyay's models become which signals (imported by the app factory).

Strings, not imports: this module never needs ``models.py``.
"""

import signalbus
from signalbus import changed

USER = "examples.badgeyay.models:User"

signalbus.bind(USER, "insert", "user_registered")
signalbus.bind(USER, "update", "user_plan_changed", when=changed("plan"))
signalbus.bind(USER, "delete", "user_deleted")
