"""A plain SQLAlchemy app, with neither Flask nor click installed, runs the outbox worker
(the README's example, in a child process where both imports fail)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PLAIN_APP = textwrap.dedent('''
    import sys
    for blocked in ("flask", "flask_sqlalchemy", "click"):
        sys.modules[blocked] = None  # "not installed": importing it raises ImportError

    from sqlalchemy import String, create_engine
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

    import signalbus
    import signalbus.outbox
    from signalbus.outbox.worker import Worker

    class Base(DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str] = mapped_column(String(200))

    engine = create_engine(sys.argv[1])
    Base.metadata.create_all(engine)
    signalbus.outbox.create_all(engine)
    Session = sessionmaker(engine)
    signalbus.bind(User, "insert", "user_registered")
    bus = signalbus.SignalBus()
    bus.attach(Session, config={"SIGNALBUS_DELIVERY": "outbox", "SIGNALBUS_PLUGINS": []})

    @signalbus.receiver("user_registered")
    def welcome(sender, event, **kw):
        print("welcome", event.data["email"], event.attempt)

    with Session() as session:
        session.add(User(email="ada@example.com"))
        session.commit()

    stats = Worker(bus.runtime()).run(once=True)  # a daemon: Worker(...).run()
    print("delivered", stats.delivered)
    loaded = [m for m in ("flask", "click") if sys.modules.get(m) is not None]
    print("loaded", loaded)
''')


def test_a_plain_sqlalchemy_app_runs_the_worker_without_flask_or_click(tmp_path: Path):
    script = tmp_path / "plain_app.py"
    script.write_text(PLAIN_APP)
    proc = subprocess.run([sys.executable, str(script), f"sqlite:///{tmp_path / 'app.db'}"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["welcome ada@example.com 1", "delivered 1", "loaded []"]
