"""Pure retry policy: the backoff delay and the retry-or-dead decision. All of max_retries' meaning lives here."""
from __future__ import annotations

from typing import Optional


def backoff_delay(attempts: int, base: float, cap: float) -> float:
    """Seconds to wait after the `attempts`-th failed run: min(base ** attempts, cap)."""
    try:
        delay = float(base) ** attempts
    except OverflowError:
        return float(cap)
    return min(delay, float(cap))


def next_run_at(attempts: int, max_retries: int, base: float, cap: float, now: float) -> Optional[float]:
    """When to run again after the `attempts`-th run failed, or None: retries exhausted, dead."""
    if attempts <= max_retries:
        return now + backoff_delay(attempts, base, cap)
    return None
