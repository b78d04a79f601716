"""The signalbus pytest plugin (auto-loaded through the ``pytest11`` entry point).

* ``signalbus_capture``: records every event delivered during the test, in order. It
  sees exactly what receivers see: committed events only (``phase="flush"`` events are
  not recorded), nothing that was muted or rolled back.
* ``@pytest.mark.signalbus_muted(*names)``: mutes all signals (or those named) for the
  test, as :func:`signalbus.muted` does.
* ``signalbus_drain``: runs the real outbox worker in-process until nothing is due.
* ``signalbus_cli``: runs a ``flask signalbus …`` command against an app.
* A receiver that raises during a test fails that test, though inline delivery
  swallows the exception in production. Opt out for one test with
  ``@pytest.mark.signalbus_receiver_errors("log")``, or for a whole suite with the ini
  option ``signalbus_receiver_errors = log``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from . import delivery
from .errors import ConfigurationError
from .events import Event, normalise
from .muting import muted
from .signals import Receiver

__all__ = ["SignalCapture"]


class SignalCapture:
    """What ``signalbus_capture`` gives a test: the delivered events, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        """Every event delivered since the test started (or :meth:`clear`)."""
        self.senders: list[Any] = []

    def _record(self, sender: Any, event: Event) -> None:
        self.senders.append(sender)
        self.events.append(event)

    @property
    def names(self) -> list[str]:
        """The signal names of :attr:`events`, in order."""
        return [e.signal for e in self.events]

    def of(self, name: str) -> list[Event]:
        """The events of one signal, in order."""
        return [e for e in self.events if e.signal == name]

    def assert_sent(self, name: str, **data: Any) -> Event:
        """Assert that ``name`` was sent with ``data`` containing the given values.

        Values compare after normalisation, so ``price=Decimal("9.90")`` matches the
        ``"9.90"`` in the event. Returns the first matching event.
        """
        wanted = {k: normalise(v) for k, v in data.items()}
        candidates = self.of(name)
        for event in candidates:
            if all(k in event.data and event.data[k] == v for k, v in wanted.items()):
                return event
        if not candidates:
            sent = ", ".join(self.names) or "nothing"
            raise AssertionError(f"signal {name!r} was not sent; sent: {sent}")
        shown = "\n".join(f"  {dict(e.data)!r}" for e in candidates)
        raise AssertionError(
            f"signal {name!r} was sent {len(candidates)} time(s), but never with "
            f"{wanted!r}; its data was:\n{shown}"
        )

    def assert_not_sent(self, name: str) -> None:
        """Assert that no event of ``name`` was delivered."""
        found = self.of(name)
        if found:
            raise AssertionError(
                f"signal {name!r} was sent {len(found)} time(s): "
                + ", ".join(repr(dict(e.data)) for e in found)
            )

    def clear(self) -> None:
        """Forget the events recorded so far."""
        self.events.clear()
        self.senders.clear()

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)


@pytest.fixture
def signalbus_capture() -> Generator[SignalCapture, None, None]:
    """Record every signalbus event delivered during the test."""
    capture = SignalCapture()
    delivery.observers.append(capture._record)
    try:
        yield capture
    finally:
        delivery.observers.remove(capture._record)


@pytest.fixture
def signalbus_cli() -> Callable[..., Any]:
    """Run a ``flask signalbus …`` command against an app, in the test's process.

    Returns ``run(app, *args)``, which invokes the command group through the app's
    ``test_cli_runner()`` and returns click's ``Result`` (``exit_code``, ``output``);
    ``run(app, "status", "--json")`` is ``flask signalbus status --json``. (The group is
    registered through the ``flask.commands`` entry point, which ``test_cli_runner``
    does not load: ``app.test_cli_runner().invoke(signalbus.cli.cli, [...])`` is the
    same call without the fixture.)
    """

    def run(app: Any, *args: str) -> Any:
        from .cli import cli

        return app.test_cli_runner().invoke(cli, list(args))

    return run


_TEST_START = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    from .runtime import Runtime

    item.stash[_TEST_START] = Runtime.made.made  # runtimes made from here on are the test's


@pytest.fixture
def signalbus_drain(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Deliver the outbox with the real worker code, in the test's process and thread.

    Returns ``drain(target=None, **options)``, which runs
    :func:`signalbus.outbox.worker.drain`: the worker loop, claiming and delivering batches
    until nothing is due, then returns its :class:`~signalbus.outbox.worker.WorkerStats`.
    ``target`` is the Flask app, :class:`~signalbus.SignalBus` or runtime. Without it:
    the current Flask app's, else the one outbox-mode bus set up during this test
    (``init_app`` or ``attach``), else the default bus's; with several set up, the error
    asks for the one to drain. ``options`` go to :class:`~signalbus.outbox.worker.Worker`
    (``backoff_base=0`` makes retries due at once). Receiver exceptions fail the test, as
    in inline mode.
    """
    start = request.node.stash.get(_TEST_START, 0)

    def drain(target: Any = None, **options: Any) -> Any:
        from .outbox.worker import drain as run

        if target is None:
            target = _default_target(start)
        return run(target, **options)

    return drain


def _default_target(start: int) -> Any:
    """What ``signalbus_drain()`` drains when not told (see the fixture)."""
    from .flask import current_app_or_none
    from .runtime import Runtime

    app = current_app_or_none()
    if app is not None:
        return app
    mine = [rt for rt in Runtime.made.since(start) if rt.backend.name != "inline"]
    if len(mine) == 1:
        return mine[0]
    if len(mine) > 1:
        names = ", ".join(f"app {rt.app.name!r}" if rt.app is not None else "a plain bus"
                          for rt in mine)
        raise ConfigurationError(
            f"signalbus_drain() found {len(mine)} outbox-mode buses set up in this test "
            f"({names}): pass the one to drain, signalbus_drain(app) (a Flask app, a "
            "SignalBus or a runtime)."
        )
    import signalbus

    if signalbus.bus.attached:
        return signalbus.bus
    raise ConfigurationError(
        "signalbus_drain() found no outbox-mode bus to drain: none was set up during this "
        "test (init_app or attach with SIGNALBUS_DELIVERY='outbox'), no Flask app context "
        "is active, and the default bus is not attached. Pass the app: "
        "signalbus_drain(app) (a Flask app, a SignalBus or a runtime)."
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "signalbus_receiver_errors",
        "'fail' (default): a receiver exception fails the test; 'log': only logged.",
        default="fail",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "signalbus_muted(*names): mute all signalbus signals, or those named"
    )
    config.addinivalue_line(
        "markers",
        "signalbus_receiver_errors(mode): 'log' lets receiver exceptions pass the test",
    )


@pytest.fixture(autouse=True)
def _signalbus_muted_marker(request: pytest.FixtureRequest) -> Generator[None, None, None]:
    marker = request.node.get_closest_marker("signalbus_muted")
    if marker is None:
        yield
        return
    with muted(*marker.args):
        yield


def _mode(item: pytest.Item) -> str:
    marker = item.get_closest_marker("signalbus_receiver_errors")
    if marker is not None and marker.args:
        return str(marker.args[0])
    return str(item.config.getini("signalbus_receiver_errors"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    errors: list[tuple[Receiver | None, Event, BaseException]] = []

    def hook(receiver: Receiver | None, event: Event, exc: BaseException) -> None:
        errors.append((receiver, event, exc))

    delivery.error_hooks.append(hook)
    try:
        result = yield
    finally:
        delivery.error_hooks.remove(hook)
    if errors and _mode(item) != "log":
        receiver, event, exc = errors[0]
        who = f"receiver {receiver.name!r}" if receiver is not None else "signalbus"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise AssertionError(
            f"{who} raised {type(exc).__name__}: {exc} while handling {event.signal!r} "
            f"event {event.id}{more}. Receiver errors fail tests; mark the test "
            "@pytest.mark.signalbus_receiver_errors('log') if that is expected."
        ) from exc
    return result
