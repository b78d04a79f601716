"""plan_subscribed / plan_cancelled: sent in the plugin's own transaction, breadth-first."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import event as sa_event

import signalbus


def test_plan_subscribed_carries_the_user_service_plan_and_cause(host, signalbus_capture):
    uid = host.register("ann@example.com", plan="pro")
    registered = signalbus_capture.assert_sent("user_registered", id=uid)
    assert signalbus_capture.names == ["user_registered"] + ["plan_subscribed"] * 3
    subscribed = signalbus_capture.of("plan_subscribed")
    assert [dict(e.data) for e in subscribed] == [
        {"user_id": uid, "service": service, "plan": "pro", "cause": "user_registered",
         "cause_id": registered.id}
        for service in ("badge-export", "newsletter", "priority-support")
    ]
    assert all(e.source == "emit" and e.model is None for e in subscribed)


def test_plan_events_are_delivered_after_the_events_already_being_delivered(host):
    order: list[str] = []

    def later_receiver(sender, event, **kwargs):
        order.append(f"{event.signal}: another receiver")

    @signalbus.receiver("plan_subscribed")
    def on_subscribed(sender, event, **kwargs):
        order.append(f"plan_subscribed: {event.data['service']}")

    # connected after the plugin's receiver, so it runs after the plugin has committed
    host.bus.runtime(host.app).connect("user_registered", later_receiver, name="t:later")
    host.register("ann@example.com", plan="pro")
    assert order == [
        "user_registered: another receiver",
        "plan_subscribed: badge-export",
        "plan_subscribed: newsletter",
        "plan_subscribed: priority-support",
    ]


def test_other_receivers_can_react_to_plan_cancelled(host):
    seen: list[tuple[object, str]] = []

    @signalbus.receiver("plan_cancelled")
    def on_cancelled(sender, event, **kwargs):
        seen.append((sender, event.data["service"]))

    uid = host.register("ann@example.com", plan="pro")
    host.change_plan(uid, "free")
    assert seen == [(None, "badge-export"), (None, "priority-support")]


@pytest.mark.signalbus_receiver_errors("log")
def test_plan_events_are_not_delivered_when_the_plugin_write_fails(
    host, signalbus_capture, caplog
):
    armed = {"fail": False}

    @signalbus.receiver("user_registered")  # runs before the plugin's receiver
    def arm(sender, event, **kwargs):
        armed["fail"] = True

    def fail_plugin_commit(session):
        if armed["fail"]:
            armed["fail"] = False
            raise RuntimeError("disk full while committing the subscriptions")

    caplog.set_level(logging.ERROR, logger="signalbus")
    factory = host.db.session.session_factory  # the plugin's session comes from it
    sa_event.listen(factory, "before_commit", fail_plugin_commit)
    try:
        uid = host.register("ann@example.com", plan="pro")
    finally:
        sa_event.remove(factory, "before_commit", fail_plugin_commit)
    signalbus_capture.assert_sent("user_registered", id=uid)
    signalbus_capture.assert_not_sent("plan_subscribed")
    assert host.rows(uid) == []
    errors = [r for r in caplog.records if r.exc_info]
    assert [str(r.exc_info[1]) for r in errors] == [
        "disk full while committing the subscriptions"]
    assert errors[0].getMessage().startswith(
        "receiver signalbus_plans:on_user_registered failed on user_registered event")
