"""Gathering what `stats --json` and `metrics` show from a Store: one function each, for the
command line and the dashboard alike (the pure parts are stats.py and metrics.py)."""
from __future__ import annotations

from typing import Optional

from .errors import BadInput
from .models import DEFAULT_QUEUE, STATES
from .timeutil import iso


def window_start(since: str, moment: float, name: str = "--since") -> float:
    """`--since` (`name`): a duration back from now (30m, 24h, 7d) or an ISO 8601 time."""
    from .store.common import RETENTION_MINUTES
    from .timeutil import parse_duration, parse_iso

    try:
        start = moment - parse_duration(since, name)
    except BadInput:
        if not any(c in since for c in "-:T"):
            raise
        start = parse_iso(since, name)
    if start >= moment:
        raise BadInput(f"invalid {name} {since!r}: the window must start in the past")
    if moment - start > RETENTION_MINUTES * 60 + 60:
        raise BadInput(f"invalid {name} {since!r}: run statistics are kept for "
                       f"{RETENTION_MINUTES // 1440} days (use 31d or less)")
    return start


def stats_data(store, workers: list, start: float, moment: float, queue: Optional[str],
               queue_jobs: Optional[dict] = None) -> dict:
    """`stats --json`: the runs that ended from `start` on (of `queue`, or all), and the queue now
    (`queue_jobs`: the queue's count per state when the caller has it, else it is counted)."""
    from . import stats

    summary = stats.summary(store.run_window(start, queue), (moment - start) / 60)
    summary["top_failed_commands"] = [{"command": command, "failed_runs": n}
                                      for command, n in store.failing_commands(start, queue)]
    oldest = store.oldest_due(moment, None if queue is None else [queue])
    if queue is None:
        jobs = store.counts()
    else:
        jobs = queue_jobs if queue_jobs is not None else {state: store.count(state, queue) for state in STATES}
    return {"since": iso(start), "until": iso(moment), "queue": queue, "runs": summary,
            "now": {"jobs": jobs, "oldest_due_seconds": None if oldest is None else round(oldest, 3),
                    "workers": len(workers)}}


def metrics_text(store, workers: list, moment: float, queue_jobs: Optional[dict] = None) -> str:
    """The Prometheus text of `queuectl metrics` (`queue_jobs`: {queue: count per state} when
    the caller has it, else it is counted)."""
    from . import metrics

    if queue_jobs is None:
        queue_jobs = {info.name: info.counts for info in store.queues()}
    queues = queue_jobs or {DEFAULT_QUEUE: store.counts()}
    oldest = {name: round(store.oldest_due(moment, [name]) or 0.0, 3) for name in queues}
    return metrics.render(metrics.Figures(
        jobs=queues, runs=store.run_totals(), oldest_due=oldest, workers=len(workers),
        paused=store.paused_queues()))
