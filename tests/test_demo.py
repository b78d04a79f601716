"""``make demo`` runs end to end (the demo checks its own outcome and exits non-zero)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("delivery", ["inline", "outbox", "celery"])
def test_demo(delivery):
    # celery: real Celery workers and relays on the test Redis database of the celery tests
    broker = ["--broker", "redis://127.0.0.1:6379/7"] if delivery == "celery" else []
    result = subprocess.run(
        [sys.executable, "-m", "examples.demo", "--delivery", delivery, *broker],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "user_registered    insert pk=1    {'email': 'ada@example.com', 'plan': 'free'}" in out
    assert "user_plan_changed  update pk=1    {'plan': ('free', 'pro')}" in out
    assert "issue_raised       insert pk=1    {'title': 'Badge export times out'}" in out
    assert "'Welcome, Ada!'" in out and "'New issue: Badge export times out'" in out
    assert "ada@example.com      priority-support   pro   active" in out
    assert "New user registered: Bob (plan: pro)" in out
    assert "the rolled-back user (carol) got nothing" in out
    assert "carol@example.com" not in out.split("signals fired")[1]


def test_demo_serves_the_outbox_page_until_stopped():
    import re
    import signal
    import time
    import urllib.error
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "examples.demo", "--delivery", "outbox", "--serve"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url, seen = None, []
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            found = re.search(r"outbox page: (http://127\.0\.0\.1:\d+/ops/outbox/)", line)
            url = found.group(1) if found else None
        assert url, "".join(seen)
        import http.cookiejar
        import urllib.parse

        direct = urllib.request.build_opener(  # loopback: no proxy; the session cookie kept
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with direct.open(url, timeout=10) as response:
            html = response.read().decode()
        assert response.status == 200
        assert re.search(r'id="tile-done">.*?class="value">\d+<', html, re.S)
        assert "user_registered" in html
        with direct.open(url + "replay", timeout=10) as response:  # an action, CSRF and all
            token = re.search(r'name="csrf_token" value="([^"]+)"', response.read().decode())
        assert token
        form = urllib.parse.urlencode({"csrf_token": token.group(1),
                                       "signal": "user_registered", "since": "1h"}).encode()
        try:
            with direct.open(url + "replay", data=form, timeout=10) as response:
                done = response.read().decode()
        except urllib.error.HTTPError as exc:  # say what the server said
            proc.send_signal(signal.SIGTERM)
            rest, _ = proc.communicate(timeout=30)
            raise AssertionError(f"replay answered {exc.code}:\n{''.join(seen)}{rest}") from exc
        assert "Replay of user_registered: 2 events" in done
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, "".join(seen) + rest
        assert "stopped serving the outbox page" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
