"""user_registered: the user is subscribed to the services of their plan."""

from __future__ import annotations

import datetime as dt

import signalbus_plans


def test_registration_subscribes_to_the_services_of_the_plan(host):
    before = dt.datetime.now(dt.UTC)
    uid = host.register("ann@example.com", plan="pro")
    rows = host.rows(uid)
    assert [r["service"] for r in rows] == ["badge-export", "newsletter", "priority-support"]
    for row in rows:
        assert row["user_id"] == str(uid)
        assert row["plan"] == "pro"
        assert row["active"] is True
        assert row["created_at"] == row["updated_at"]
        assert before <= row["created_at"] <= dt.datetime.now(dt.UTC)
        assert row["created_at"].tzinfo is not None


def test_each_user_gets_their_own_rows(host):
    ann = host.register("ann@example.com", plan="pro")
    bob = host.register("bob@example.com", plan="free")
    assert host.subscriptions(ann) == {
        "newsletter": ("pro", True),
        "priority-support": ("pro", True),
        "badge-export": ("pro", True),
    }
    assert host.subscriptions(bob) == {"newsletter": ("free", True)}


def test_settings_defaults(host):
    config = host.app.config
    assert config["SIGNALBUS_PLANS_FIELD"] == "plan"
    assert config["SIGNALBUS_PLANS_USER_ID_FIELD"] == "id"
    assert config["SIGNALBUS_PLANS_DEFAULT"] is None
    settings = host.app.extensions[signalbus_plans.plugin.EXTENSION].settings
    assert settings.plans["pro"] == ("newsletter", "priority-support", "badge-export")


def test_without_a_plan_and_without_a_default_plan_nothing_is_subscribed(host):
    uid = host.register("ann@example.com", plan=None)
    assert host.rows(uid) == []


def test_default_plan_applies_when_the_plan_field_is_empty(make_host):
    host = make_host(SIGNALBUS_PLANS_DEFAULT="free")
    uid = host.register("ann@example.com", plan=None)
    assert host.subscriptions(uid) == {"newsletter": ("free", True)}
    empty = host.register("bob@example.com", plan="")
    assert host.subscriptions(empty) == {"newsletter": ("free", True)}


def test_custom_plan_field(make_host):
    # the host's User keeps its plan in "name" here, to show the field is configurable
    host = make_host(SIGNALBUS_PLANS_FIELD="name")
    uid = host.register("ann@example.com", plan=None, name="pro")
    assert set(host.subscriptions(uid)) == {"newsletter", "priority-support", "badge-export"}


def test_flask_signalbus_list_describes_the_plugin(host):
    from signalbus.cli import cli

    result = host.app.test_cli_runner().invoke(cli, args=["list"])
    assert result.exit_code == 0, result.output
    assert "plans [signalbus-plans]  loaded" in result.output
    assert (
        "plans: 'free', 'pro'; plan field 'plan', user id field 'id', default plan None"
        in result.output
    )
    assert "signalbus_plans:on_user_registered  (plugin plans)" in result.output
