"""Pure: the queue's figures in, Prometheus text exposition format 0.0.4 out."""
from __future__ import annotations

import math
from typing import NamedTuple

from .models import RUN_OUTCOMES, STATES
from .stats import cumulative

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Figures(NamedTuple):
    jobs: dict  # queue -> {state: jobs}
    runs: list  # [(queue, outcome, runs, duration_sum, durations histogram)], from Store.run_totals
    oldest_due: dict  # queue -> seconds the oldest due job has waited (0 when none is due)
    workers: int
    paused: dict  # queue -> bool


def render(figures: Figures) -> str:
    lines: list = []
    family(lines, "queuectl_jobs", "gauge", "Jobs in each state, by queue.",
           [({"queue": q, "state": s}, by_state.get(s, 0)) for q, by_state in sorted(figures.jobs.items())
            for s in STATES])
    family(lines, "queuectl_runs_total", "counter",
           "Runs that ended, by queue and outcome; never decreases, even when jobs are deleted.",
           _run_counts(figures))
    _durations(lines, figures.runs)
    family(lines, "queuectl_oldest_due_seconds", "gauge",
           "How long the oldest due job has waited since it became due (0: none is waiting).",
           [({"queue": q}, seconds) for q, seconds in sorted(figures.oldest_due.items())])
    family(lines, "queuectl_workers", "gauge", "Live workers.", [({}, figures.workers)])
    family(lines, "queuectl_paused", "gauge", "1 if the queue is paused, else 0.",
           [({"queue": q}, int(p)) for q, p in sorted(figures.paused.items())])
    return "\n".join(lines) + "\n"


def _run_counts(figures: Figures) -> list:
    counted = {(q, o): n for q, o, n, _, _ in figures.runs}
    queues = sorted({q for q, _ in counted} | set(figures.jobs))
    return [({"queue": q, "outcome": o}, counted.get((q, o), 0)) for q in queues for o in RUN_OUTCOMES]


def _durations(lines: list, runs: list) -> None:
    """One histogram per queue, summed over outcomes."""
    per_queue: dict = {}
    for queue, _, count, total, histogram in runs:
        merged, seconds, n = per_queue.get(queue, ({}, 0.0, 0))
        for index, k in histogram.items():
            merged[index] = merged.get(index, 0) + k
        per_queue[queue] = (merged, seconds + total, n + count)
    samples = []
    for queue, (histogram, seconds, count) in sorted(per_queue.items()):
        for edge, n in cumulative(histogram):
            samples.append(({"queue": queue, "le": _number(edge)}, n, "_bucket"))
        samples.append(({"queue": queue}, seconds, "_sum"))
        samples.append(({"queue": queue}, count, "_count"))
    family(lines, "queuectl_run_duration_seconds", "histogram", "How long runs took, by queue.", samples)


def family(lines: list, name: str, kind: str, text: str, samples: list) -> None:
    """# HELP, # TYPE, then one line per sample: (labels, value[, name suffix])."""
    lines.append(f"# HELP {name} {_escape_help(text)}")
    lines.append(f"# TYPE {name} {kind}")
    for sample in samples:
        labels, value, suffix = (*sample, "") if len(sample) == 2 else sample
        shown = ",".join(f'{key}="{escape_label(str(v))}"' for key, v in labels.items())
        lines.append(f"{name}{suffix}{'{' + shown + '}' if shown else ''} {_number(value)}")


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value)) if value != int(value) else str(int(value))
