"""Columns the database (or an ``onupdate=`` default) computes during an update are in
``data`` with their new value and left out of ``changes``: signalbus never loaded their
old value, and ``changes`` holds what the transaction set (docs/events.md)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import DateTime, Integer, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus


def test_onupdate_columns_are_in_data_not_in_changes(engine: Any, recorder: Any) -> None:
    class Base(DeclarativeBase):
        pass

    class Doc(Base):
        __tablename__ = "onupdate_docs"
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str] = mapped_column(String(50))
        revision: Mapped[int] = mapped_column(Integer, default=1,
                                              onupdate=lambda ctx: 99)
        updated_at: Mapped[dt.datetime] = mapped_column(
            DateTime, server_default=func.current_timestamp(),
            onupdate=func.current_timestamp())

    Base.metadata.create_all(engine)
    try:
        Session = sessionmaker(engine)
        signalbus.bind(Doc, "update", "doc_edited")
        signalbus.SignalBus().attach(Session, plugins=False)
        with Session() as session:
            session.add(Doc(id=1, title="draft"))
            session.commit()
        recorder.listen("doc_edited")
        with Session() as session:
            session.get(Doc, 1).title = "final"
            session.commit()
            row = session.get(Doc, 1)
            revision, updated_at = row.revision, row.updated_at
        (event,) = recorder.events
        assert dict(event.changes) == {"title": ("draft", "final")}
        assert event.data["title"] == "final"
        assert event.data["revision"] == revision == 99
        assert event.data["updated_at"] == updated_at.isoformat()
    finally:
        Base.metadata.drop_all(engine)
