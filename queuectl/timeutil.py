"""Clock, durations (`30`, `30s`, `5m`, `2h`, `1h30m`, `1d`, `1w`) and ISO 8601 UTC timestamps."""
from __future__ import annotations

import math
import re
import time
from typing import Optional

from .errors import BadInput

_NUMBER = r"(?:\d+(?:\.\d+)?|\.\d+)"
_DURATION = re.compile(rf"^\s*({_NUMBER})\s*([smhdw]?)\s*$", re.IGNORECASE)
# `1h30m`, `1d 12h`: every part has a unit, largest first, each unit once.
_COMPOUND = re.compile(rf"^(?:\s*{_NUMBER}\s*[smhdw])+\s*$", re.IGNORECASE)
_PART = re.compile(rf"({_NUMBER})\s*([smhdw])", re.IGNORECASE)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION_HINT = "use a number of seconds or 30s, 5m, 1h30m, 2d, 1w"
# Durations and delays are bounded so a typo cannot schedule a job centuries ahead.
MAX_DURATION = 100 * 365 * 86400


def now() -> float:
    """Seconds since the epoch; every store method takes this as a parameter."""
    return time.time()


def parse_duration(text: object, what: str = "duration") -> float:
    """Seconds from `30`, `30s`, `5m`, `2h`, `1h30m`, `1d`, `1w` (or a JSON number)."""
    if isinstance(text, bool):
        raise BadInput(f"invalid {what} {text!r}: {DURATION_HINT}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        seconds = _text_seconds(str(text))
        if seconds is None:
            raise BadInput(f"invalid {what} {str(text)!r}: {DURATION_HINT}")
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_DURATION:
        raise BadInput(f"invalid {what} {text!r}: must be between 0 and 100 years")
    return seconds


def _text_seconds(text: str) -> Optional[float]:
    match = _DURATION.match(text)
    if match:
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if not _COMPOUND.match(text):
        return None
    parts = [(float(number), _UNIT_SECONDS[unit.lower()]) for number, unit in _PART.findall(text)]
    units = [unit for _, unit in parts]
    if units != sorted(set(units), reverse=True):  # `30m1h` or `1h1h`: a typo, not a duration
        return None
    return sum(number * unit for number, unit in parts)


def parse_iso(text: object, what: str = "time") -> float:
    """Epoch seconds from an ISO 8601 time; a time without an offset is taken as UTC."""
    if not isinstance(text, str) or not text.strip():
        raise BadInput(f"invalid {what} {text!r}: use ISO 8601, e.g. 2025-11-04T10:30:00Z")
    raw = text.strip()
    from datetime import datetime, timezone  # lazily: most commands never parse or print a time

    normal = raw[:-1] + "+00:00" if raw[-1:] in "zZ" else raw
    try:
        moment = datetime.fromisoformat(normal)
    except ValueError:
        raise BadInput(f"invalid {what} {raw!r}: use ISO 8601, e.g. 2025-11-04T10:30:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def iso(ts: float | None) -> str | None:
    """`2025-11-04T10:30:00.123Z`: ISO 8601 UTC with milliseconds."""
    if ts is None:
        return None
    from datetime import datetime, timezone

    moment = datetime.fromtimestamp(ts, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def short_iso(ts: float | None) -> str:
    """`2025-11-04 10:30:00`: for tables, where milliseconds are noise."""
    if ts is None:
        return "-"
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def human_seconds(seconds: float) -> str:
    """`5s`, `1.5s`, `90s`: how a timeout or delay reads in a message."""
    return f"{seconds:g}s"
