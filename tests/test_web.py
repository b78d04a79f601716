"""The outbox page (signalbus.web) through Flask's test client: who gets in, which
POSTs count, what it shows and never shows, and its actions (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

import signalbus.web
from signalbus.errors import ConfigurationError
from signalbus.outbox import admin, browse, engine_of
from signalbus.outbox.worker import drain, runtime_of
from tests import webhost
from tests.webhost import FAIL, PERMANENT, SECRETS, join

PREFIX = "/ops/outbox"
PAGES = ["/", "/deliveries?show=dead", "/deliveries?show=failing", "/replay",
         "/events/0badc0de-0000-4000-8000-000000000001", "/search?event_id=x"]

pytestmark = pytest.mark.signalbus_receiver_errors("log")


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    with webhost.host(database_url) as app:
        yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.get("/login")
    return client


def token(client: FlaskClient, page: str = "/deliveries?show=dead") -> str:
    html = client.get(PREFIX + page).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def settle(app: Flask) -> None:
    """Run the worker once: ``FAIL`` emails fail (failing), ``PERMANENT`` ones go dead."""
    drain(app)


def engine(app: Flask) -> Any:
    return engine_of(runtime_of(app))


# who gets in --------------------------------------------------------------------------------


def test_registering_without_an_authorization_check_is_refused() -> None:
    app = Flask("no_check")
    with pytest.raises(ConfigurationError) as info:
        app.register_blueprint(signalbus.web.blueprint(), url_prefix="/ops")
    assert str(info.value) == (
        "the signalbus web page needs an authorization check, and nobody gets in without "
        "one. Pass signalbus.web.blueprint(authorize=check), or set "
        "app.config['SIGNALBUS_WEB_AUTHORIZE'] = check, where check() returns True for a "
        "request allowed in (e.g. lambda: current_user.is_authenticated and "
        "current_user.is_admin)."
    )


def test_the_setting_names_a_callable() -> None:
    app = Flask("bad_check")
    app.config["SIGNALBUS_WEB_AUTHORIZE"] = "admins only"
    with pytest.raises(ConfigurationError, match="SIGNALBUS_WEB_AUTHORIZE is 'admins only'; "
                                                 "it must be a callable"):
        app.register_blueprint(signalbus.web.blueprint())


def test_registering_without_a_secret_key_is_refused() -> None:
    app = Flask("no_key")
    with pytest.raises(ConfigurationError) as info:
        app.register_blueprint(signalbus.web.blueprint(authorize=lambda: True))
    assert str(info.value) == (
        "the signalbus web page keeps its CSRF token in Flask's signed session, which needs "
        "a secret key: set app.config['SECRET_KEY'] (a long random value kept out of the "
        "code) before registering the blueprint."
    )


def test_the_check_can_come_from_the_setting(database_url: str) -> None:
    with webhost.host(database_url) as app:
        other = Flask("from_setting")
        other.config.update(app.config)
        other.config["SIGNALBUS_WEB_AUTHORIZE"] = lambda: True
        other.register_blueprint(signalbus.web.blueprint(name="sb2"), url_prefix="/x")
        assert "sb2.overview" in other.view_functions


@pytest.mark.parametrize("page", PAGES)
def test_a_request_the_check_turns_down_gets_403(app: Flask, page: str) -> None:
    anonymous = app.test_client()
    assert anonymous.get(PREFIX + page).status_code == 403


def test_posts_the_check_turns_down_get_403_and_change_nothing(app: Flask) -> None:
    PERMANENT.add("a@example.com")
    join(app, "a@example.com")
    settle(app)
    anonymous = app.test_client()
    for path, data in [("/retry", {"all": "dead"}), ("/replay", {"signal": "x", "since": "1h"})]:
        assert anonymous.post(PREFIX + path, data=data).status_code == 403
    assert admin.status(engine(app))["deliveries"]["dead"] == 1


def test_a_check_that_raises_refuses(database_url: str) -> None:
    def broken() -> bool:
        raise RuntimeError("the user store is down")

    with webhost.host(database_url) as app:
        other = Flask("raising")
        other.config.update(app.config)
        other.register_blueprint(signalbus.web.blueprint(authorize=broken))
        assert other.test_client().get("/").status_code == 403


# CSRF ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("forged", ["missing", "wrong", "other session"])
def test_a_forged_post_is_refused(app: Flask, client: FlaskClient, forged: str) -> None:
    PERMANENT.add("a@example.com")
    join(app, "a@example.com")
    settle(app)
    data = {"all": "dead"}
    if forged == "wrong":
        token(client)
        data["csrf_token"] = "x" * 43
    elif forged == "other session":
        other = app.test_client()
        other.get("/login")
        data["csrf_token"] = token(other)
    response = client.post(PREFIX + "/retry", data=data)
    assert response.status_code == 400
    assert "CSRF token is missing or wrong" in response.get_data(as_text=True)
    assert admin.status(engine(app))["deliveries"]["dead"] == 1


def test_every_page_sends_protective_headers(client: FlaskClient) -> None:
    response = client.get(PREFIX + "/")
    assert response.status_code == 200
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"


# what it shows ------------------------------------------------------------------------------


def test_the_overview_counts_states_signals_and_receivers(app: Flask,
                                                          client: FlaskClient) -> None:
    FAIL.add("b@example.com")
    PERMANENT.add("c@example.com")
    join(app, "a@example.com", "b@example.com", "c@example.com")
    join(app, "d@example.com")
    html = client.get(PREFIX + "/").get_data(as_text=True)
    assert re.search(r'id="tile-pending">.*?class="value">4<', html, re.S)
    settle(app)
    html = client.get(PREFIX + "/").get_data(as_text=True)
    assert re.search(r'id="tile-pending">.*?class="value">0<', html, re.S)
    assert re.search(r'id="tile-done">.*?class="value">4<.*?4 settled in the last hour',
                     html, re.S)
    assert re.search(r'id="tile-retrying">.*?class="value">1<', html, re.S)
    assert re.search(r'id="tile-dead">.*?class="value">1<', html, re.S)
    row = re.search(r'<tr data-signal="web_member_joined">(.*?)</tr>', html, re.S)
    assert row and re.findall(r">(\d+)<", row.group(1)) == ["0", "4", "1", "1"]
    row = re.search(r'<tr data-receiver="tests.webhost:notify_slack">(.*?)</tr>', html, re.S)
    assert row and re.findall(r">(\d+)<", row.group(1)) == ["1", "0", "1"]


def test_the_last_hour_counts_what_was_settled(app: Flask) -> None:
    FAIL.add("b@example.com")
    join(app, "a@example.com", "b@example.com")
    settle(app)
    minutes = browse.throughput(engine(app), minutes=60)
    assert len(minutes) == 60
    assert sum(m["done"] for m in minutes) == 2
    assert sum(m["delivered"] + m["dead"] for m in minutes) == 0
    assert minutes[-1]["done"] + minutes[-2]["done"] == 2  # this minute (or the one before)


def test_dead_and_failing_lists(app: Flask, client: FlaskClient) -> None:
    FAIL.add("b@example.com")
    PERMANENT.add("c@example.com")
    join(app, "a@example.com", "b@example.com", "c@example.com")
    settle(app)
    dead = client.get(PREFIX + "/deliveries?show=dead").get_data(as_text=True)
    failing = client.get(PREFIX + "/deliveries?show=failing").get_data(as_text=True)
    assert dead.count("<tr data-delivery=") == 1 and failing.count("<tr data-delivery=") == 1
    assert "tests.webhost:notify_slack" in dead and "RuntimeError" in failing
    assert "Permanent" in dead


def test_the_page_never_shows_a_secret_or_a_redacted_column(app: Flask,
                                                            client: FlaskClient) -> None:
    FAIL.add("b@example.com")
    PERMANENT.add("c@example.com")
    join(app, "b@example.com", "c@example.com")
    seeded = webhost.seed_secret_event(app)
    settle(app)
    report = admin.status(engine(app))
    ids = [d["event_id"] for d in report["dead"]] + [seeded]
    failing = browse.problems(engine(app), dead=False)["items"]
    ids += [d["event_id"] for d in failing]
    pages = ["/", "/deliveries?show=dead", "/deliveries?show=failing", "/replay",
             *(f"/events/{i}" for i in ids)]
    for page in pages:
        response = client.get(PREFIX + page)
        assert response.status_code == 200, page
        html = response.get_data(as_text=True)
        for secret in (*SECRETS, "hunter2", "password", "api_token"):
            assert secret not in html, (page, secret)
    detail = client.get(f"{PREFIX}/events/{seeded}").get_data(as_text=True)
    assert "z@example.com" in detail and "https://hooks.example/…" in detail
    dead = client.get(PREFIX + "/deliveries?show=dead").get_data(as_text=True)
    assert "https://hooks.example/…" in dead and "Bearer …" in dead


def test_an_events_page_shows_each_receivers_attempts(app: Flask,
                                                      client: FlaskClient) -> None:
    FAIL.add("b@example.com")
    join(app, "b@example.com")
    settle(app)
    (item,) = browse.problems(engine(app), dead=False)["items"]
    html = client.get(f"{PREFIX}/events/{item['event_id']}").get_data(as_text=True)
    welcome = re.search(r'<tr data-receiver="tests.webhost:welcome">(.*?)</tr>', html, re.S)
    slack = re.search(r'<tr data-receiver="tests.webhost:notify_slack">(.*?)</tr>', html, re.S)
    assert welcome and "delivered" in welcome.group(1) and "with the event" in welcome.group(1)
    assert slack and "pending" in slack.group(1) and "RuntimeError" in slack.group(1)
    assert re.search(r'class="n">1<', slack.group(1))
    assert 'id="event-state" title="event row: done">retrying<' in html


def test_search_by_event_id(app: Flask, client: FlaskClient) -> None:
    event_id = webhost.seed_secret_event(app)
    response = client.get(f"{PREFIX}/search?event_id=+{event_id}+")
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/ops/outbox/events/{event_id}")
    assert f'id="event-id">{event_id}<' in client.get(
        response.headers["Location"]).get_data(as_text=True)
    missing = client.get(f"{PREFIX}/events/no-such-event")
    assert missing.status_code == 404
    assert "No stored event has the id" in missing.get_data(as_text=True)


# actions ------------------------------------------------------------------------------------


def test_retry_one_then_the_worker_delivers_it(app: Flask, client: FlaskClient) -> None:
    PERMANENT.update({"a@example.com", "b@example.com"})
    join(app, "a@example.com", "b@example.com")
    settle(app)
    PERMANENT.clear()
    items = browse.problems(engine(app), dead=True)["items"]
    assert len(items) == 2
    response = client.post(PREFIX + "/retry", data={
        "csrf_token": token(client), "one": str(items[0]["id"]),
        "next": "/ops/outbox/deliveries?show=dead"})
    assert response.status_code == 302
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "1 delivery will be tried again now." in page
    settle(app)
    with app.app_context():
        chosen = browse.event(engine(app), items[0]["event_id"])
    assert chosen is not None
    assert [c for c in webhost.CALLS if c[0] == "notify_slack"] == [
        ("notify_slack", chosen["payload"]["data"]["email"])]
    status = admin.status(engine(app))
    assert status["deliveries"] == {"pending": 0, "delivered": 1, "dead": 1}


def test_retry_a_selection_and_all(app: Flask, client: FlaskClient) -> None:
    PERMANENT.update({"a@example.com", "b@example.com", "c@example.com"})
    join(app, "a@example.com", "b@example.com", "c@example.com")
    settle(app)
    PERMANENT.clear()
    items = browse.problems(engine(app), dead=True)["items"]
    chosen = [str(items[0]["id"]), str(items[1]["id"])]
    client.post(PREFIX + "/retry", data={"csrf_token": token(client), "delivery": chosen})
    assert admin.status(engine(app))["deliveries"] == {"pending": 2, "delivered": 0, "dead": 1}
    client.post(PREFIX + "/retry", data={"csrf_token": token(client), "all": "dead"})
    assert admin.status(engine(app))["deliveries"] == {"pending": 3, "delivered": 0, "dead": 0}
    settle(app)
    assert sorted(e for n, e in webhost.CALLS if n == "notify_slack") == [
        "a@example.com", "b@example.com", "c@example.com"]


def test_replay_by_signal_and_time(app: Flask, client: FlaskClient) -> None:
    join(app, "a@example.com", "b@example.com")
    settle(app)
    webhost.CALLS.clear()
    csrf = token(client, "/replay")
    bad = client.post(PREFIX + "/replay", data={"csrf_token": csrf,
                                                "signal": "web_member_joined", "since": "soon"})
    assert "is neither an ISO 8601 time" in bad.get_data(as_text=True)
    response = client.post(PREFIX + "/replay", data={
        "csrf_token": csrf, "signal": "web_member_joined", "since": "1h"})
    assert response.status_code == 302
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Replay of web_member_joined: 2 events, 4 deliveries due now" in page
    settle(app)
    assert sorted(webhost.CALLS) == [("notify_slack", "a@example.com"),
                                     ("notify_slack", "b@example.com"),
                                     ("welcome", "a@example.com"), ("welcome", "b@example.com")]


def test_dead_list_pages_through_every_dead_delivery(app: Flask,
                                                     client: FlaskClient) -> None:
    emails = [f"m{i}@example.com" for i in range(120)]
    PERMANENT.update(emails)
    join(app, *emails)
    settle(app)
    seen: list[str] = []
    url = PREFIX + "/deliveries?show=dead"
    pages = 0
    while url:
        html = client.get(url).get_data(as_text=True)
        seen += re.findall(r'<tr data-delivery="(\d+)">', html)
        nxt = re.search(r'id="next-page" href="([^"]+)"', html)
        url = nxt.group(1).replace("&amp;", "&") if nxt else ""
        pages += 1
    assert pages == 3
    assert len(seen) == len(set(seen)) == 120


def test_a_database_without_the_outbox_says_how_to_create_it(database_url: str) -> None:
    with webhost.host(database_url) as app:
        with app.app_context():
            signalbus.outbox.drop_all(webhost.db.engine)
        client = app.test_client()
        client.get("/login")
        response = client.get(PREFIX + "/")
        assert response.status_code == 503
        assert "signalbus.outbox.create_all(engine)" in response.get_data(as_text=True)


def test_the_page_loads_nothing_from_another_site(app: Flask, client: FlaskClient) -> None:
    FAIL.add("b@example.com")
    join(app, "b@example.com")
    settle(app)
    (item,) = browse.problems(engine(app), dead=False)["items"]
    for page in ["/", "/deliveries?show=failing", "/replay", f"/events/{item['event_id']}"]:
        html = client.get(PREFIX + page).get_data(as_text=True)
        urls = re.findall(r'(?:src|href|action)="([^"]*)"', html)
        assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
        assert "<script>" not in html and " style=" not in html  # nothing inline (CSP)
    for asset in ("signalbus.css", "signalbus.js"):
        with client.get(f"{PREFIX}/static/{asset}") as response:
            text = response.get_data(as_text=True)
        assert response.status_code == 200
        assert "http" not in text and "@import" not in text


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_overview_shows_changes_captured_by_triggers(app: Flask,
                                                         client: FlaskClient) -> None:
    html = client.get(PREFIX + "/").get_data(as_text=True)
    assert 'id="tile-captured"' not in html  # nothing captured: no tile
    from signalbus.outbox.schema import changes

    with engine(app).begin() as conn:
        conn.execute(changes.insert(), [
            {"txid": 1, "source_table": "public.accounts", "op": "insert", "last_error": None},
            {"txid": 2, "source_table": "public.accounts", "op": "insert",
             "last_error": "reading postgresql://ops:s3cret@db/app failed"}])
    html = client.get(PREFIX + "/").get_data(as_text=True)
    tile = re.search(r'<div class="tile bad" id="tile-captured">(.*?)</div>', html, re.S)
    assert tile, html
    assert 'class="value">1<' in tile.group(1) and "1 failed" in tile.group(1)
    assert "s3cret" not in html
