"""Entry-point plugins, loaded from real ``*.dist-info`` directories on ``sys.path``."""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy.orm import sessionmaker

import signalbus
from signalbus import PluginError, SignalBus


class Site:
    """A directory of installed distributions, as pip would leave them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: list[str] = []

    def install(self, dist: str, module: str, source: str, *, entry: str | None = None,
                name: str | None = None) -> None:
        (self.root / f"{module}.py").write_text(textwrap.dedent(source))
        info = self.root / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(
            f"[signalbus.plugins]\n{name or module} = {entry or module}\n"
        )
        self.modules.append(module)


@pytest.fixture
def site(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    s = Site(root)
    yield s
    for module in s.modules:
        sys.modules.pop(module, None)


GOOD = """
    import signalbus

    requires = {"user_registered": {"email"}}

    def plugin(bus):
        @bus.receiver("user_registered", name="good:welcome")
        def welcome(sender, event, **kw):
            bus.config.setdefault("GOOD_SEEN", []).append(event.data["email"])
        bus.describe("welcomes new users")
"""

BROKEN = """
    import signalbus
    import no_such_dependency_xyz

    def plugin(bus):
        pass
"""

HALF = """
    def setup(bus):
        bus.connect("user_registered", lambda sender, event, **kw: None, name="half:first")
        raise RuntimeError("setup blew up half-way")
"""


def _attach(engine, **config):
    Session = sessionmaker(engine)
    bus = SignalBus()
    runtime = bus.attach(Session, config=config)
    return Session, runtime


def test_failing_plugin_is_reported_while_others_load(site, engine, models, caplog):
    site.install("good-plugin", "sb_good", GOOD, entry="sb_good:plugin", name="good")
    site.install("broken-plugin", "sb_broken", BROKEN, entry="sb_broken:plugin", name="broken")
    signalbus.bind(models.User, "insert", "user_registered")
    with caplog.at_level(logging.ERROR, logger="signalbus"):
        Session, runtime = _attach(engine, SIGNALBUS_PLUGINS=["broken", "good"])
    status = {p.name: (p.distribution, p.status, p.error) for p in runtime.plugins}
    assert status == {
        "broken": ("broken-plugin", "failed",
                   "ModuleNotFoundError: No module named 'no_such_dependency_xyz'"),
        "good": ("good-plugin", "loaded", None),
    }
    assert any(
        "signalbus plugin 'broken' (distribution broken-plugin) failed to load: "
        "ModuleNotFoundError: No module named 'no_such_dependency_xyz'" in r.getMessage()
        for r in caplog.records
    )
    with Session() as s:
        s.add(models.User(email="a@x"))
        s.commit()
    assert runtime.config["GOOD_SEEN"] == ["a@x"]
    assert [r.plugin for r in runtime.receivers()["user_registered"]] == ["good"]


def test_strict_mode_turns_a_failure_into_a_startup_error(site, engine):
    site.install("broken-plugin", "sb_broken", BROKEN, entry="sb_broken:plugin", name="broken")
    with pytest.raises(PluginError) as info:
        _attach(engine, SIGNALBUS_PLUGINS=["broken"], SIGNALBUS_PLUGINS_STRICT=True)
    assert str(info.value) == (
        "signalbus plugin 'broken' (distribution broken-plugin) failed to load: "
        "ModuleNotFoundError: No module named 'no_such_dependency_xyz'. Fix or uninstall "
        "it, or add it to SIGNALBUS_DISABLED_PLUGINS (SIGNALBUS_PLUGINS_STRICT is on)."
    )
    assert info.value.plugin == "broken"
    assert info.value.distribution == "broken-plugin"


def test_half_loaded_plugin_leaves_no_receiver(site, engine):
    site.install("half-plugin", "sb_half", HALF, name="half")
    signalbus.signal("user_registered")
    _, runtime = _attach(engine, SIGNALBUS_PLUGINS=["half"])
    assert runtime.plugins[0].status == "failed"
    assert runtime.plugins[0].error == "RuntimeError: setup blew up half-way"
    assert "user_registered" not in runtime.receivers()


def test_requirement_mismatch_names_plugin_signal_and_fields(site, engine, models):
    site.install("good-plugin", "sb_good", GOOD, entry="sb_good:plugin", name="good")
    signalbus.bind(models.User, "insert", "user_registered", fields=["id", "name"])
    with pytest.raises(PluginError) as info:
        _attach(engine, SIGNALBUS_PLUGINS=["good"])
    assert str(info.value) == (
        "plugin 'good' needs field(s) 'email' of signal 'user_registered', but "
        f"bind({signalbus.bindings.qualified_name(models.User)!r}, 'insert', "
        "'user_registered', fields=['id', 'name']) does not put them in the event's data. "
        "Name them in fields= (a redacted field must be named there), or stop excluding them."
    )


def test_disabled_and_explicit_order(site, engine):
    order = []
    for name in ("zeta", "alpha", "mid"):
        site.install(f"{name}-plugin", f"sb_{name}", f"""
            def plugin(bus):
                bus.config["ORDER"].append({name!r})
        """, entry=f"sb_{name}:plugin", name=name)
    _, runtime = _attach(engine, SIGNALBUS_PLUGINS=["zeta", "alpha", "mid"],
                         SIGNALBUS_DISABLED_PLUGINS=["mid"], ORDER=order)
    assert order == ["zeta", "alpha"]
    assert [(p.name, p.status) for p in runtime.plugins] == [
        ("zeta", "loaded"), ("alpha", "loaded"), ("mid", "disabled")]


def test_unknown_plugin_in_setting_is_named(site, engine):
    with pytest.raises(PluginError, match="SIGNALBUS_PLUGINS names 'nope', but no installed"):
        _attach(engine, SIGNALBUS_PLUGINS=["nope"])


def test_two_plugins_with_one_name_is_an_error(site, engine):
    site.install("first-dist", "sb_first", "def plugin(bus): pass", entry="sb_first:plugin",
                 name="same")
    site.install("second-dist", "sb_second", "def plugin(bus): pass",
                 entry="sb_second:plugin", name="same")
    with pytest.raises(PluginError) as info:
        _attach(engine, SIGNALBUS_PLUGINS=["same"])
    assert "two installed plugins are named 'same' (distributions: first-dist, second-dist)" \
        in str(info.value)


def test_receiver_to_an_undeclared_signal_is_warned_about(site, engine, caplog):
    site.install("typo-plugin", "sb_typo", """
        def plugin(bus):
            bus.connect("user_registred", lambda sender, event, **kw: None, name="typo:r")
    """, entry="sb_typo:plugin", name="typo")
    signalbus.signal("user_registered")
    with caplog.at_level(logging.WARNING, logger="signalbus"):
        _attach(engine, SIGNALBUS_PLUGINS=["typo"])
    assert any("plugin(s) typo connected to unknown signal 'user_registred'" in r.getMessage()
               and "Did you mean 'user_registered'?" in r.getMessage()
               for r in caplog.records)
    with pytest.raises(signalbus.ConfigurationError, match="unknown signal 'user_registred'"):
        _attach(engine, SIGNALBUS_PLUGINS=["typo"], SIGNALBUS_PLUGINS_STRICT=True)


def test_each_bus_reaches_only_its_own_plugins(site, engine, models):
    site.install("good-plugin", "sb_good", GOOD, entry="sb_good:plugin", name="good")
    signalbus.bind(models.User, "insert", "user_registered")
    with_plugin, runtime = _attach(engine, SIGNALBUS_PLUGINS=["good"])
    without, other = _attach(engine, SIGNALBUS_PLUGINS=[])
    for Session, email in ((with_plugin, "a@x"), (without, "b@x")):
        with Session() as s:
            s.add(models.User(email=email))
            s.commit()
    assert runtime.config["GOOD_SEEN"] == ["a@x"]
    assert "GOOD_SEEN" not in other.config


LAZY = """
    from signalbus.plugins import NotConfigured

    def plugin(bus):
        bus.connect("user_registered", on_user, name="lazy:on_user")
        if not bus.config.get("LAZY_URL"):
            raise NotConfigured("lazy needs LAZY_URL, the address to post to")

    def on_user(sender, event, **kw):
        pass
"""


def _lazy_records(caplog):
    return [r for r in caplog.records if r.name == "signalbus" and "'lazy'" in r.getMessage()]


def test_a_plugin_not_configured_here_is_skipped_and_said_once(site, engine, caplog):
    site.install("acme-lazy", "lazy", LAZY, entry="lazy:plugin")
    caplog.set_level(logging.INFO, logger="signalbus")
    signalbus.plugins._log_skip.cache_clear()  # once per process: this test's process
    for _ in range(2):
        _, runtime = _attach(engine)
        (record,) = [p for p in runtime.plugins if p.name == "lazy"]
        assert (record.status, record.error) == (
            "skipped", "lazy needs LAZY_URL, the address to post to")
        connected = [r.name for recs in runtime.receivers().values() for r in recs]
        assert "lazy:on_user" not in connected  # what it connected before is gone
    (logged,) = _lazy_records(caplog)
    assert logged.levelno == logging.INFO
    assert logged.getMessage() == (
        "signalbus plugin 'lazy' is installed but not configured here, skipped: "
        "lazy needs LAZY_URL, the address to post to")
    assert logged.exc_info is None


def test_a_plugin_asked_for_but_not_configured_is_a_failure(site, engine, caplog):
    site.install("acme-lazy", "lazy", LAZY, entry="lazy:plugin")
    _, runtime = _attach(engine, SIGNALBUS_PLUGINS=["lazy"])
    (record,) = runtime.plugins
    assert (record.status, record.error) == (
        "failed", "NotConfigured: lazy needs LAZY_URL, the address to post to")
    assert [r.levelno for r in _lazy_records(caplog)] == [logging.ERROR]
    with pytest.raises(PluginError) as info:
        _attach(engine, SIGNALBUS_PLUGINS=["lazy"], SIGNALBUS_PLUGINS_STRICT=True)
    assert str(info.value) == (
        "signalbus plugin 'lazy' is named in SIGNALBUS_PLUGINS but not configured: lazy "
        "needs LAZY_URL, the address to post to")


def test_a_configured_plugin_loads(site, engine):
    site.install("acme-lazy", "lazy", LAZY, entry="lazy:plugin")
    _, runtime = _attach(engine, LAZY_URL="http://127.0.0.1:9/")
    (record,) = [p for p in runtime.plugins if p.name == "lazy"]
    assert record.status == "loaded"


def test_installed_plugins_do_not_flood_a_plain_attach_with_errors(engine, caplog):
    """signalbus-plans without SIGNALBUS_PLANS, signalbus-journal without a directory:
    a plain attach() in a script or another service logs no error for them."""
    caplog.set_level(logging.INFO, logger="signalbus")
    _, runtime = _attach(engine)
    status = {p.name: (p.status, p.error) for p in runtime.plugins}
    assert status["plans"][0] == "skipped", status
    assert status["journal"][0] == "skipped", status
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
