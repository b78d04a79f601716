"""user_deleted: every active subscription of the user is cancelled."""

from __future__ import annotations


def test_deleting_the_user_cancels_all_subscriptions(host, signalbus_capture):
    uid = host.register("ann@example.com", plan="pro")
    other = host.register("bob@example.com", plan="free")
    signalbus_capture.clear()
    host.delete(uid)
    assert host.subscriptions(uid) == {
        "newsletter": ("pro", False),
        "priority-support": ("pro", False),
        "badge-export": ("pro", False),
    }
    assert host.subscriptions(other) == {"newsletter": ("free", True)}
    assert signalbus_capture.names == ["user_deleted"] + ["plan_cancelled"] * 3
    for event in signalbus_capture.of("plan_cancelled"):
        assert event.data["user_id"] == uid
        assert event.data["cause"] == "user_deleted"
        assert event.data["cause_id"] == signalbus_capture.of("user_deleted")[0].id


def test_deleting_a_user_without_subscriptions_does_nothing(host, signalbus_capture):
    uid = host.register("ann@example.com", plan=None)
    host.delete(uid)
    assert host.rows(uid) == []
    signalbus_capture.assert_not_sent("plan_cancelled")
