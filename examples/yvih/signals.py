"""YVIH's declarations: a new issue row raises ``issue_raised``."""

import signalbus
from signalbus import changed

signalbus.bind("examples.yvih.models:Data", "insert", "issue_raised")
signalbus.bind("examples.yvih.models:Data", "update", "issue_closed",
               when=changed("status", to="closed"))
