"""user_plan_changed: services added by the new plan are subscribed, dropped ones cancelled."""

from __future__ import annotations


def test_upgrade_adds_the_new_services(host, signalbus_capture):
    uid = host.register("ann@example.com", plan="free")
    signalbus_capture.clear()
    host.change_plan(uid, "pro")
    assert host.subscriptions(uid) == {
        "newsletter": ("pro", True),  # kept, now under the new plan
        "priority-support": ("pro", True),
        "badge-export": ("pro", True),
    }
    assert signalbus_capture.names == ["user_plan_changed", "plan_subscribed", "plan_subscribed"]
    assert sorted(e.data["service"] for e in signalbus_capture.of("plan_subscribed")) == [
        "badge-export", "priority-support"]


def test_downgrade_cancels_the_dropped_services(host, signalbus_capture):
    uid = host.register("ann@example.com", plan="pro")
    signalbus_capture.clear()
    host.change_plan(uid, "free")
    assert host.subscriptions(uid) == {
        "newsletter": ("free", True),
        "priority-support": ("pro", False),  # kept as history, inactive
        "badge-export": ("pro", False),
    }
    assert signalbus_capture.names == ["user_plan_changed", "plan_cancelled", "plan_cancelled"]
    signalbus_capture.assert_sent("plan_cancelled", service="badge-export", plan="pro",
                                  user_id=uid, cause="user_plan_changed")


def test_upgrading_again_reactivates_the_cancelled_rows(host):
    uid = host.register("ann@example.com", plan="pro")
    host.change_plan(uid, "free")
    first = {r["service"]: r for r in host.rows(uid)}
    host.change_plan(uid, "pro")
    rows = {r["service"]: r for r in host.rows(uid)}
    assert {s: (r["plan"], r["active"]) for s, r in rows.items()} == {
        "newsletter": ("pro", True),
        "priority-support": ("pro", True),
        "badge-export": ("pro", True),
    }
    assert rows["badge-export"]["id"] == first["badge-export"]["id"]  # same row, reactivated
    assert rows["badge-export"]["created_at"] == first["badge-export"]["created_at"]
    assert rows["badge-export"]["updated_at"] > first["badge-export"]["updated_at"]


def test_clearing_the_plan_without_a_default_cancels_everything(host):
    uid = host.register("ann@example.com", plan="free")
    host.change_plan(uid, None)
    assert host.subscriptions(uid) == {"newsletter": ("free", False)}


def test_clearing_the_plan_falls_back_to_the_default_plan(make_host):
    host = make_host(SIGNALBUS_PLANS_DEFAULT="free")
    uid = host.register("ann@example.com", plan="pro")
    host.change_plan(uid, None)
    assert host.subscriptions(uid) == {
        "newsletter": ("free", True),
        "priority-support": ("pro", False),
        "badge-export": ("pro", False),
    }


def test_other_changes_of_the_user_change_nothing(host, signalbus_capture):
    uid = host.register("ann@example.com", plan="pro")
    before = host.rows(uid)
    signalbus_capture.clear()
    with host.app.app_context():
        host.db.session.get(host.User, uid).name = "Ann B."
        host.db.session.commit()
    assert signalbus_capture.names == []  # when=changed("plan") did not match
    assert host.rows(uid) == before
