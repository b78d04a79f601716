"""A plan missing from SIGNALBUS_PLANS raises signalbus.Permanent naming it and the known ones."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

import signalbus


def _permanent(caplog) -> signalbus.Permanent:
    failures = [r for r in caplog.records if r.name == "signalbus" and r.exc_info]
    assert len(failures) == 1, [r.getMessage() for r in caplog.records]
    exc = failures[0].exc_info[1]
    assert isinstance(exc, signalbus.Permanent)
    return exc


@pytest.mark.signalbus_receiver_errors("log")
def test_unknown_plan_on_registration_is_permanent(host, signalbus_capture, caplog):
    caplog.set_level(logging.ERROR, logger="signalbus")
    uid = host.register("ann@example.com", plan="gold")
    event = signalbus_capture.assert_sent("user_registered", id=uid)
    assert str(_permanent(caplog)) == (
        f"signalbus-plans: unknown plan 'gold' in 'user_registered' event {event.id} "
        f"(user {uid}); known plans: 'free', 'pro'. Add it to SIGNALBUS_PLANS or correct "
        "the user's 'plan'."
    )
    assert host.rows() == []  # nothing written
    signalbus_capture.assert_not_sent("plan_subscribed")
    with host.app.app_context():  # the host's own commit stands
        assert host.db.session.get(host.User, uid).plan == "gold"


@pytest.mark.signalbus_receiver_errors("log")
def test_unknown_plan_on_change_keeps_the_old_subscriptions(host, signalbus_capture, caplog):
    uid = host.register("ann@example.com", plan="pro")
    before = host.rows(uid)
    caplog.set_level(logging.ERROR, logger="signalbus")
    host.change_plan(uid, "enterprise")
    event = signalbus_capture.assert_sent("user_plan_changed", id=uid)
    assert str(_permanent(caplog)) == (
        f"signalbus-plans: unknown plan 'enterprise' in 'user_plan_changed' event "
        f"{event.id} (user {uid}); known plans: 'free', 'pro'. Add it to SIGNALBUS_PLANS "
        "or correct the user's 'plan'."
    )
    assert host.rows(uid) == before
    signalbus_capture.assert_not_sent("plan_cancelled")


def test_the_receiver_raises_permanent_itself(host, signalbus_capture):
    """Called directly (as the outbox worker does), the receiver raises, not logs."""
    with host.app.app_context():
        plans = host.app.extensions["signalbus_plans"]
        event = signalbus.Event(
            id="e-1", signal="user_registered", model=None, op="insert", pk=1,
            data={"id": 1, "plan": "platinum"},
            occurred_at=dt.datetime.now(dt.UTC),
        )
        with pytest.raises(signalbus.Permanent, match=r"unknown plan 'platinum' .* "
                           r"known plans: 'free', 'pro'\."):
            plans.on_user_registered(host.User, event=event)
