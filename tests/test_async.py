"""AsyncSession (through its sync session): delivery after commit, in the committing task."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import String, update
from sqlalchemy.ext.asyncio import (
    AsyncSession,
    async_scoped_session,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus


class Base(DeclarativeBase):
    pass


class Member(Base):
    __tablename__ = "members"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(100))


@pytest.fixture
def async_engine(tmp_path):
    engine = signalbus.sqlite.configure(
        create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'async.sqlite'}")
    )

    async def setup():
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)

    asyncio.run(setup())
    yield engine
    asyncio.run(engine.dispose())


def _received():
    got = []

    @signalbus.receiver("member_joined")
    def on_join(sender, event, **kw):
        got.append((event.data["email"], asyncio.current_task() is not None))

    return got


@pytest.mark.parametrize("kind", ["async_sessionmaker", "async_scoped_session", "AsyncSession"])
def test_async_session_delivers_after_commit(async_engine, kind):
    signalbus.bind(Member, "insert", "member_joined")
    got = _received()
    factory = async_sessionmaker(async_engine)

    async def main():
        if kind == "async_sessionmaker":
            signalbus.SignalBus().attach(factory, plugins=False)
            session = factory()
        elif kind == "async_scoped_session":
            scoped = async_scoped_session(factory, scopefunc=asyncio.current_task)
            signalbus.SignalBus().attach(scoped, plugins=False)
            session = scoped()
        else:
            session = AsyncSession(async_engine)
            signalbus.SignalBus().attach(session, plugins=False)
        async with session:
            session.add(Member(email="rolled@x"))
            await session.flush()
            await session.rollback()
            session.add(Member(email="a@x"))
            await session.flush()
            assert got == []
            await session.commit()
            assert got == [("a@x", True)]  # synchronously, in the committing task

    asyncio.run(main())


def test_async_sessionmaker_attach_leaves_other_factories_alone(async_engine):
    signalbus.bind(Member, "insert", "member_joined")
    got = _received()
    attached = async_sessionmaker(async_engine)
    other = async_sessionmaker(async_engine)
    signalbus.SignalBus().attach(attached, plugins=False)

    async def main():
        async with other() as s:
            s.add(Member(email="other@x"))
            await s.commit()
        async with attached() as s:
            s.add(Member(email="attached@x"))
            await s.commit()

    asyncio.run(main())
    assert got == [("attached@x", True)]


def test_bulk_statements_of_an_async_session_are_captured(async_engine):
    signalbus.bind(Member, "update", "member_renamed")
    got = []

    @signalbus.receiver("member_renamed")
    def on_rename(sender, event, **kw):
        got.append((event.pk, dict(event.changes), event.source, dict(event.context)))

    factory = async_sessionmaker(async_engine)
    signalbus.SignalBus().attach(factory, plugins=False)

    async def run():
        async with factory() as session:
            session.add_all([Member(id=1, email="a@x"), Member(id=2, email="b@x")])
            await session.commit()
            with signalbus.context(actor="ada"):
                await session.execute(update(Member).where(Member.id == 2).values(email="c@x"))
            await session.commit()

    asyncio.run(run())
    assert got == [(2, {"email": ("b@x", "c@x")}, "bulk", {"actor": "ada"})]
