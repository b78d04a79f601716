"""Which signals are journaled: every declared one by default, or those configured."""

from __future__ import annotations

import json
import logging
import sys
import textwrap

import pytest

import signalbus


def _signals(host) -> list[str]:
    return [json.loads(line)["signal"] for line in host.lines()]


def test_listed_signals_only(make_host):
    host = make_host(SIGNALBUS_JOURNAL_SIGNALS=["user_deleted"])
    uid = host.register("ann@example.com")
    host.change_plan(uid, "pro")
    host.delete(uid)
    assert _signals(host) == ["user_deleted"]


def test_a_comma_separated_list(make_host):
    host = make_host(SIGNALBUS_JOURNAL_SIGNALS="user_registered, user_deleted")
    uid = host.register("ann@example.com")
    host.change_plan(uid, "pro")
    host.delete(uid)
    assert _signals(host) == ["user_registered", "user_deleted"]


def test_excluded_signals(make_host):
    host = make_host(SIGNALBUS_JOURNAL_EXCLUDE=["user_plan_changed"])
    uid = host.register("ann@example.com")
    host.change_plan(uid, "pro")
    host.delete(uid)
    assert _signals(host) == ["user_registered", "user_deleted"]


def test_a_bad_setting_names_the_key(make_host):
    with pytest.raises(signalbus.PluginError) as info:
        make_host(SIGNALBUS_JOURNAL_SIGNALS=[3])
    assert "SIGNALBUS_JOURNAL_SIGNALS must be a list of signal names (or a comma-separated " \
           "string), not [3]." in str(info.value)


def test_a_signal_declared_after_init_app_is_not_journaled_unless_listed(
    make_host, caplog, signalbus_capture
):
    host = make_host()
    signalbus.signal("report_sent")  # too late for "every declared signal"
    with host.app.app_context():
        signalbus.emit("report_sent", {"n": 1})
    signalbus_capture.assert_sent("report_sent", n=1)
    assert host.lines() == []

    caplog.set_level(logging.WARNING, logger="signalbus")
    listed = make_host(SIGNALBUS_JOURNAL_SIGNALS=["audit_logged"], SIGNALBUS_PLUGINS_STRICT=False)
    assert "unknown signal 'audit_logged'" in caplog.text  # not declared yet: a warning
    signalbus.signal("audit_logged")
    with listed.app.app_context():
        signalbus.emit("audit_logged", {"n": 2})
    assert _signals(listed) == ["audit_logged"]


def test_signals_declared_by_other_enabled_plugins_are_journaled(
    make_host, tmp_path, monkeypatch
):
    """A plugin loaded after the journal (names sort after 'journal') declares its signal
    at import; the journal imports the enabled plugins' modules first, so it is covered."""
    site = tmp_path / "site"
    (site / "zz_reporting").mkdir(parents=True)
    (site / "zz_reporting" / "__init__.py").write_text(textwrap.dedent("""
        import signalbus

        report_sent = signalbus.signal("zz_report_sent")

        def setup(bus):
            pass
    """))
    dist = site / "zz_reporting-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zz-reporting\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[signalbus.plugins]\nzz_reporting = zz_reporting\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "zz_reporting", raising=False)
    try:
        host = make_host(SIGNALBUS_PLUGINS=["journal", "zz_reporting"])
        records = host.bus.runtime(host.app).plugins
        assert [(p.name, p.status) for p in records] == [
            ("journal", "loaded"), ("zz_reporting", "loaded")]
        with host.app.app_context():
            signalbus.emit("zz_report_sent", {"n": 1})
        assert _signals(host) == ["zz_report_sent"]
    finally:
        sys.modules.pop("zz_reporting", None)
