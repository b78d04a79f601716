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
