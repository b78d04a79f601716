"""What an ORM delete of a parent produces for its children (the table in docs/events.md)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import ForeignKey, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

import signalbus

CASES = {
    # mapping: (relationship kwargs, foreign key kwargs, children left, events)
    "default": ({}, {}, [(1, None), (2, None)],
                [("child_updated", 1, {"parent_id": (1, None)}),
                 ("child_updated", 2, {"parent_id": (1, None)}), ("parent_deleted", 1, {})]),
    "orm cascade": ({"cascade": "all, delete-orphan"}, {}, [],
                    [("child_deleted", 1, {}), ("child_deleted", 2, {}),
                     ("parent_deleted", 1, {})]),
    "database cascade, passive_deletes": ({"passive_deletes": True}, {"ondelete": "CASCADE"},
                                          [], [("parent_deleted", 1, {})]),
    "database cascade, not passive": ({}, {"ondelete": "CASCADE"}, [(1, None), (2, None)],
                                      [("child_updated", 1, {"parent_id": (1, None)}),
                                       ("child_updated", 2, {"parent_id": (1, None)}),
                                       ("parent_deleted", 1, {})]),
}


@pytest.mark.parametrize("case", CASES)
def test_deleting_a_parent(case: str, engine: Engine, recorder: Any) -> None:
    rel_kwargs, fk_kwargs, left, expected = CASES[case]
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _foreign_keys(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.execute("PRAGMA foreign_keys=ON")
        engine.dispose()

    class Base(DeclarativeBase):
        pass

    class Parent(Base):
        __tablename__ = "cascade_parents"
        id: Mapped[int] = mapped_column(primary_key=True)
        children: Mapped[list[Child]] = relationship(back_populates="parent", **rel_kwargs)

    class Child(Base):
        __tablename__ = "cascade_children"
        id: Mapped[int] = mapped_column(primary_key=True)
        parent_id: Mapped[int | None] = mapped_column(
            ForeignKey("cascade_parents.id", **fk_kwargs))
        parent: Mapped[Parent | None] = relationship(back_populates="children")

    Base.metadata.create_all(engine)
    try:
        Session = sessionmaker(engine)
        signalbus.bind(Child, "update", "child_updated")
        signalbus.bind(Child, "delete", "child_deleted")
        signalbus.bind(Parent, "delete", "parent_deleted")
        signalbus.SignalBus().attach(Session, plugins=False)
        with Session() as session:
            session.add(Parent(id=1, children=[Child(id=1), Child(id=2)]))
            session.commit()
        recorder.listen("child_updated", "child_deleted", "parent_deleted")
        with Session() as session:
            session.delete(session.get(Parent, 1))
            session.commit()
        with Session() as session:
            rows = session.query(Child.id, Child.parent_id).order_by(Child.id).all()
        assert [tuple(r) for r in rows] == left
        assert [(n, e.pk, dict(e.changes)) for n, _, e in recorder.calls] == expected
    finally:
        Base.metadata.drop_all(engine)
