"""Redelivery: the same event delivered twice changes nothing the second time."""

from __future__ import annotations

import dataclasses
import datetime as dt


def test_repeated_user_registered_changes_nothing(host, signalbus_capture):
    uid = host.register("ann@example.com", plan="pro")
    event = signalbus_capture.assert_sent("user_registered", id=uid)
    before = host.rows(uid)
    signalbus_capture.clear()
    host.deliver_again(event)
    assert host.rows(uid) == before  # timestamps and event ids included
    assert signalbus_capture.names == ["user_registered"]  # no plan_subscribed again


def test_repeated_plan_change_changes_nothing(host, signalbus_capture):
    uid = host.register("ann@example.com", plan="pro")
    host.change_plan(uid, "free")
    event = signalbus_capture.assert_sent("user_plan_changed", id=uid)
    before = host.rows(uid)
    signalbus_capture.clear()
    host.deliver_again(event)
    assert host.rows(uid) == before
    assert signalbus_capture.names == ["user_plan_changed"]


def test_repeated_user_deleted_changes_nothing(host, signalbus_capture):
    uid = host.register("ann@example.com", plan="pro")
    host.delete(uid)
    event = signalbus_capture.assert_sent("user_deleted", id=uid)
    before = host.rows(uid)
    signalbus_capture.clear()
    host.deliver_again(event)
    assert host.rows(uid) == before
    assert signalbus_capture.names == ["user_deleted"]


def test_a_late_redelivery_of_an_older_event_does_not_undo_a_newer_change(
    host, signalbus_capture
):
    uid = host.register("ann@example.com", plan="pro")
    registered = signalbus_capture.assert_sent("user_registered", id=uid)
    host.change_plan(uid, "free")
    after_change = host.rows(uid)
    signalbus_capture.clear()
    host.deliver_again(registered)  # says "pro", but the downgrade came later
    assert host.rows(uid) == after_change
    assert signalbus_capture.names == ["user_registered"]


def test_an_event_newer_than_the_rows_is_applied(host, signalbus_capture):
    uid = host.register("ann@example.com", plan="pro")
    registered = signalbus_capture.assert_sent("user_registered", id=uid)
    # the same facts with a later timestamp and id: a genuinely new event
    later = dataclasses.replace(
        registered, id="00000000-0000-4000-8000-000000000001",
        occurred_at=registered.occurred_at + dt.timedelta(seconds=1),
        data={**registered.data, "plan": "free"},
    )
    host.deliver_again(later)
    assert host.subscriptions(uid) == {
        "newsletter": ("free", True),
        "priority-support": ("pro", False),
        "badge-export": ("pro", False),
    }
