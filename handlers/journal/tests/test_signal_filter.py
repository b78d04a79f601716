"""Which signals are journaled: every declared one by default, or those configured."""

from __future__ import annotations

import json
import logging
import sys
import textwrap
import uuid

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


def test_a_signal_declared_after_init_app_is_journaled_too(
    make_host, caplog, signalbus_capture
):
    host = make_host()
    signalbus.signal("report_sent")  # declared after init_app: connect_all still sees it
    with host.app.app_context():
        signalbus.emit("report_sent", {"n": 1})
    signalbus_capture.assert_sent("report_sent", n=1)
    assert _signals(host) == ["report_sent"]

    caplog.set_level(logging.WARNING, logger="signalbus")
    audit = f"audit_logged_{uuid.uuid4().hex[:8]}"  # never declared before in this process
    listed = make_host(SIGNALBUS_JOURNAL_SIGNALS=[audit], SIGNALBUS_PLUGINS_STRICT=False)
    assert f"unknown signal {audit!r}" in caplog.text  # not declared yet: a warning
    signalbus.signal(audit)
    before = _signals(listed)  # the same directory as the first host's
    with listed.app.app_context():
        signalbus.emit("report_sent", {"n": 2})
        signalbus.emit(audit, {"n": 3})
    assert _signals(listed)[len(before):] == [audit]


def test_signals_declared_by_other_enabled_plugins_are_journaled(
    make_host, tmp_path, monkeypatch
):
    """A plugin loaded after the journal (names sort after 'journal') declares its signal
    at import; the journal receives every committed event, so it is covered."""
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
