"""``python -m signalbus …``: the ``signalbus`` command (``worker``, ``status``, …).

``python -m signalbus worker --app module:factory`` runs the outbox worker without
Flask's CLI; :func:`signalbus.outbox.worker.spawn` starts it as a child process.
"""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
