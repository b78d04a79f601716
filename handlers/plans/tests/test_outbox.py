"""The plugin under SIGNALBUS_DELIVERY="outbox": delivered by the worker, plan events stored too."""

from __future__ import annotations

import signalbus_plans

import signalbus

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
