"""The retry policy: when a failed delivery is tried again, and when it is given up."""

from __future__ import annotations

import math
import random

from .settings import OutboxSettings

__all__ = ["backoff", "delay", "gives_up"]


def backoff(settings: OutboxSettings, attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): exponential,
    capped at ``SIGNALBUS_OUTBOX_BACKOFF_CAP``, with up to half of it taken off at
    random (equal jitter)."""
    exponent = min(max(attempt - 1, 0), 1024)  # 2.0 ** 1024 overflows
    try:
        raw = settings.backoff_base * 2.0 ** exponent
    except OverflowError:
        raw = math.inf
    capped = min(settings.backoff_cap, raw)
    return capped - random.uniform(0, capped / 2)


def delay(settings: OutboxSettings, attempt: int, after: float | None) -> float:
    """The delay before the next attempt: ``Retry(after=…)`` when the receiver asked
    for one, clamped to ``[0, SIGNALBUS_OUTBOX_BACKOFF_CAP]`` (an infinite, huge or
    NaN ``after`` gets the cap), else :func:`backoff`."""
    if after is None:
        return backoff(settings, attempt)
    try:
        value = float(after)
    except (TypeError, ValueError, OverflowError):
        return settings.backoff_cap
    if math.isnan(value):
        return settings.backoff_cap
    return min(max(value, 0.0), settings.backoff_cap)


def gives_up(settings: OutboxSettings, attempt: int, *, permanent: bool) -> bool:
    """Whether a failure at attempt number ``attempt`` makes the delivery ``dead``."""
    return permanent or attempt >= settings.max_attempts
