"""The plugin under SIGNALBUS_DELIVERY="outbox": delivered by the worker, plan events stored too."""

from __future__ import annotations

import pytest
import signalbus_plans
from sqlalchemy import select

import signalbus
import signalbus.outbox

seen: list[tuple[str, str]] = []


@signalbus.receiver("plan_subscribed", name="plans-tests:on_subscribed")
def on_subscribed(sender, event, **kwargs):
    seen.append(("plan_subscribed", event.data["service"]))


@signalbus.receiver("plan_cancelled", name="plans-tests:on_cancelled")
def on_cancelled(sender, event, **kwargs):
    seen.append(("plan_cancelled", event.data["service"]))


def test_the_worker_delivers_and_the_plan_events_follow(make_host, signalbus_drain):
    seen.clear()
    host = make_host(SIGNALBUS_DELIVERY="outbox")
    uid = host.register("ann@example.com", plan="pro")
    assert host.rows(uid) == []  # nothing runs in the committing process
    signalbus_drain(host.app)
    assert set(host.subscriptions(uid)) == {"newsletter", "priority-support", "badge-export"}
    # stored by the plugin's own transaction, then delivered by the same drain
    assert sorted(seen) == [("plan_subscribed", "badge-export"),
                            ("plan_subscribed", "newsletter"),
                            ("plan_subscribed", "priority-support")]
    host.change_plan(uid, "free")
    signalbus_drain(host.app)
    with host.app.app_context():
        assert signalbus_plans.active_services(uid) == {"newsletter"}
    assert sorted(seen[3:]) == [("plan_cancelled", "badge-export"),
                                ("plan_cancelled", "priority-support")]


@pytest.mark.signalbus_receiver_errors("log")
def test_an_unknown_plan_is_dead_at_once(make_host, signalbus_drain):
    host = make_host(SIGNALBUS_DELIVERY="outbox")
    uid = host.register("ann@example.com", plan="gold")
    stats = signalbus_drain(host.app, backoff_base=0)
    assert (stats.dead, stats.retried) == (1, 0)  # Permanent: no retry
    d = signalbus.outbox.deliveries
    with host.app.app_context():
        state, attempts, error = host.db.session.execute(
            select(d.c.state, d.c.attempts, d.c.last_error)
            .where(d.c.receiver == "signalbus_plans:on_user_registered")).one()
    assert (state, attempts) == ("dead", 1)
    assert "unknown plan 'gold'" in error and "known plans: 'free', 'pro'" in error
    assert host.rows(uid) == []
