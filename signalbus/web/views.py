"""The blueprint and its views: each calls an operator function of
:mod:`signalbus.outbox` and renders what it returns."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.sansio.blueprints import BlueprintSetupState
from sqlalchemy.engine import Engine
from werkzeug.wrappers import Response as BaseResponse

from ..errors import ConfigurationError
from ..outbox import admin, browse
from ..outbox.schema import SchemaMismatch
from ..outbox.settings import OutboxSettings, aware, engine_of, utcnow
from ..runtime import Runtime
from . import security

__all__ = ["AUTHORIZE_KEY", "blueprint"]

AUTHORIZE_KEY = "SIGNALBUS_WEB_AUTHORIZE"
"""The app setting holding the page's authorization check (when ``authorize=`` is not
given to :func:`blueprint`)."""

PAGE_SIZE = 50
"""Deliveries per page of the dead and failing lists."""

_NO_CHECK = (
    "the signalbus web page needs an authorization check, and nobody gets in without one. "
    "Pass signalbus.web.blueprint(authorize=check), or set app.config['"
    + AUTHORIZE_KEY + "'] = check, where check() returns True for a request allowed in "
    "(e.g. lambda: current_user.is_authenticated and current_user.is_admin)."
)


def blueprint(authorize: Callable[[], Any] | None = None, *,
              name: str = "signalbus") -> Blueprint:
    """The outbox page as a blueprint; register it under the prefix of your choice.

    ``authorize`` (else the app setting ``SIGNALBUS_WEB_AUTHORIZE``) is called for every
    request of the page and must return true to let it in; without either,
    ``app.register_blueprint`` raises :class:`~signalbus.errors.ConfigurationError`.
    """
    if authorize is not None and not callable(authorize):
        raise ConfigurationError(f"authorize must be a callable returning True or False, "
                                 f"not {authorize!r}.")
    bp = Blueprint(name, __name__, template_folder="templates", static_folder="static",
                   static_url_path="/static")
    checks: dict[Any, Callable[[], Any]] = {}

    @bp.record
    def _require_check(state: BlueprintSetupState) -> None:
        check = authorize if authorize is not None else state.app.config.get(AUTHORIZE_KEY)
        if check is None:
            raise ConfigurationError(_NO_CHECK)
        if not callable(check):
            raise ConfigurationError(f"{AUTHORIZE_KEY} is {check!r}; it must be a callable "
                                     "returning True for a request allowed in.")
        if not (state.app.secret_key or state.app.config.get("SECRET_KEY")):
            raise ConfigurationError(
                "the signalbus web page keeps its CSRF token in Flask's signed session, "
                "which needs a secret key: set app.config['SECRET_KEY'] (a long random "
                "value kept out of the code) before registering the blueprint."
            )
        checks[state.app] = check

    @bp.before_request
    def _gate() -> None:
        check = checks.get(current_app._get_current_object())  # type: ignore[attr-defined]
        if check is None or not security.authorized(check):
            abort(403)
        if request.method == "POST":
            security.check_csrf()

    bp.after_request(security.harden)
    bp.app_template_global("signalbus_csrf_token")(security.csrf_token)
    bp.add_app_template_filter(_age, "signalbus_age")
    bp.add_app_template_filter(_when, "signalbus_when")

    @bp.errorhandler(SchemaMismatch)
    def _no_outbox(exc: SchemaMismatch) -> tuple[str, int]:
        return render_template("signalbus/problem.html", message=str(exc)), 503

    bp.add_url_rule("/", "overview", overview)
    bp.add_url_rule("/deliveries", "deliveries", deliveries)
    bp.add_url_rule("/events/<event_id>", "event", event)
    bp.add_url_rule("/search", "search", search)
    bp.add_url_rule("/retry", "retry", retry, methods=["POST"])
    bp.add_url_rule("/replay", "replay", replay, methods=["GET", "POST"])
    return bp


# helpers ------------------------------------------------------------------------------------


def _runtime() -> Runtime:
    from ..outbox.worker import runtime_of

    return runtime_of(current_app._get_current_object())  # type: ignore[attr-defined]


def _engine() -> Engine:
    return engine_of(_runtime())


def _settings() -> OutboxSettings:
    return OutboxSettings.from_config(_runtime().config)


def _age(value: Any) -> str:
    """Seconds, or a past datetime, as a short age: ``42 s``, ``3 min``, ``2 h 5 min``."""
    if value is None:
        return "—"
    if isinstance(value, dt.datetime):
        value = (utcnow() - aware(value)).total_seconds()
    seconds = max(0, int(value))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _when(value: Any) -> str:
    """A datetime (or ISO text) as ``2024-05-01 12:00:03 UTC``."""
    if value is None:
        return "—"
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    return aware(value).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _after(text: str | None) -> tuple[dt.datetime, int] | None:
    """The ``after`` of a page link: ``<ISO time>_<id>``."""
    if not text:
        return None
    when, _, ident = text.rpartition("_")
    try:
        return aware(dt.datetime.fromisoformat(when)), int(ident)
    except ValueError:
        abort(400, description=f"{text!r} is not a page of this list; start from the "
                               "first page.")


def _hidden() -> tuple[str, ...]:
    return tuple(str(part) for part in _runtime().redact)


def _receivers_of(signal: str | None) -> list[str]:
    if not signal:
        return []
    names: list[str] = []
    for rec in _runtime().receivers().get(signal, ()):
        if rec.name not in names:
            names.append(rec.name)
    return names


# views --------------------------------------------------------------------------------------


def overview() -> str:
    """Counts per state, per signal and per receiver; oldest pending; the last hour."""
    engine = _engine()
    report = browse.overview(engine, dead_limit=5)
    minutes = browse.throughput(engine, minutes=60)
    peak = max((m["done"] + m["delivered"] + m["dead"] for m in minutes), default=0)
    return render_template(
        "signalbus/overview.html", report=report, minutes=minutes, peak=peak,
        settled_last_hour=sum(m["done"] + m["delivered"] for m in minutes),
        dead_last_hour=sum(m["dead"] for m in minutes),
        receivers=report["receivers"], page="overview",
    )


def deliveries() -> str:
    """Dead (``?show=dead``, the default) or failing deliveries, one page."""
    show = request.args.get("show", "dead")
    if show not in ("dead", "failing"):
        abort(404)
    after = _after(request.args.get("after"))
    found = browse.problems(_engine(), dead=show == "dead", limit=PAGE_SIZE, after=after)
    nxt = found["next"]
    return render_template(
        "signalbus/deliveries.html", show=show, found=found, page=show, first=after is None,
        next_after=f"{nxt[0].isoformat()}_{nxt[1]}" if nxt else None,
    )


def event(event_id: str) -> tuple[str, int] | str:
    """One event: its payload and what became of each receiver."""
    engine = _engine()
    found = browse.event(engine, event_id, hidden=_hidden())
    if found is None:
        return render_template("signalbus/missing.html", event_id=event_id,
                               page="search"), 404
    if found["signal"]:
        found = browse.event(engine, event_id, receivers=_receivers_of(found["signal"]),
                             hidden=_hidden()) or found
    shown = json.dumps(found["payload"], indent=2, ensure_ascii=False, sort_keys=True,
                       default=str)
    return render_template("signalbus/event.html", event=found, payload=shown, page="search")


def search() -> BaseResponse | tuple[str, int] | str:
    """Go to the event with the id typed in the search box."""
    event_id = request.args.get("event_id", "").strip()
    if not event_id:
        return redirect(url_for(".overview"))
    return redirect(url_for(".event", event_id=event_id))


def retry() -> BaseResponse:
    """Retry the chosen deliveries (``delivery``, repeated), or every dead one
    (``all=dead``); back to where the form was."""
    back = request.form.get("next") or ""
    if not back.startswith("/") or back.startswith("//"):
        back = url_for(".deliveries")
    if request.form.get("all") == "dead":
        counts = admin.retry(_engine(), _settings())
        flash(f"{counts['deliveries']} dead deliveries and {counts['events']} dead events "
              "are pending again; a worker will deliver them.", "ok")
        return redirect(back)
    try:
        one = request.form.get("one")
        ids = [int(one)] if one else [int(v) for v in request.form.getlist("delivery")]
    except ValueError:
        abort(400, description="a delivery to retry is not a number; reload the page.")
    if not ids:
        flash("Nothing chosen: tick the deliveries to retry.", "warn")
        return redirect(back)
    n = browse.retry_deliveries(_engine(), _settings(), ids)
    left = len(ids) - n
    note = f" ({left} already delivered, pending or being worked on: left alone)" if left else ""
    flash(f"{n} {'delivery' if n == 1 else 'deliveries'} will be tried again now{note}.", "ok")
    return redirect(back)


def replay() -> BaseResponse | str:
    """A form (GET), and the replay by signal and time range it posts."""
    runtime = _runtime()
    signals = sorted(name for name in runtime.receivers() if name != "*")
    if request.method == "GET":
        return render_template("signalbus/replay.html", signals=signals, page="replay",
                               form={})
    form = request.form
    signal = form.get("signal", "").strip()
    since_text, until_text = form.get("since", "").strip(), form.get("until", "").strip()
    now = utcnow()
    try:
        if not signal:
            raise admin.BadValue("choose the signal whose events are delivered again.")
        if not since_text:
            raise admin.BadValue("give the start of the time range (e.g. 2h, or "
                                 "2024-05-01T12:00).")
        since = admin.parse_when(since_text, now)
        until = admin.parse_when(until_text, now) if until_text else None
        if until is not None and until <= since:
            raise admin.BadValue("the end of the time range is not after its start.")
    except admin.BadValue as exc:
        flash(str(exc), "error")
        return render_template("signalbus/replay.html", signals=signals, page="replay",
                               form=form)
    counts = admin.replay(runtime, _engine(), _settings(), signals=[signal], since=since,
                          until=until)
    flash(f"Replay of {signal}: {counts['events']} events, {counts['inserted'] + counts['reset']}"
          f" deliveries due now ({counts['already_pending']} already pending).", "ok")
    return redirect(url_for(".overview"))
