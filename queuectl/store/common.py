"""What both backends share that is not SQL: ids, names, limits of the history, and the pure
rules that turn a few rows into a decision (which queues a claim may take from, what is paused)."""
from __future__ import annotations

import os
from typing import Callable, Optional

from ..errors import Conflict

ALL_QUEUES = "*"  # the queues row of `pause` with no name: not a valid queue name, so no clash
RETENTION_MINUTES = 31 * 24 * 60  # how long per-minute and per-hour aggregates are kept: `stats --since` at most
COMMAND_CHARS = 500  # of a failing command, kept for `stats`
WHOLE_HOUR = 60  # run_counts.minute of an hour's row
TOTAL_HOUR = 1 << 62  # run_counts.hour of the totals: after every real hour, never dropped


def dependency_dead(job_id: str) -> str:
    """The last_error of a job that died because `job_id`, which it waits for, is dead."""
    return f"dependency {job_id} is dead"


def new_job_ids(count: int) -> list:
    """`count` ids of 16 random hex digits: collisions stay negligible at millions of jobs, and
    any unique prefix works. One urandom call for all (a call per id was 5% of bulk enqueue)."""
    digits = os.urandom(8 * count).hex()
    # Sorted, so a batch's ids go into the id index in order: random order made inserting 100k
    # jobs a third slower (a random B-tree page touched per row). They are no less random.
    return sorted(digits[start:start + 16] for start in range(0, 16 * count, 16))


def refuse_repeats(ids: list) -> None:
    seen: set = set()
    for job_id in ids:
        if job_id in seen:
            raise Conflict(f"job id {job_id} appears twice; nothing was enqueued")
        seen.add(job_id)


def command_hash(command: str) -> int:
    """A stable 64-bit hash (Python's hash() differs between processes)."""
    import hashlib

    digest = hashlib.blake2b(command.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def claim_scope(rows: list, queues: Optional[list], skip_full: bool,
                every_name: Callable[[], list]) -> Optional[list]:
    """The queues a claim may take from, from the settings rows (name, max_running, paused,
    running now or None): None for every queue (the fast path: nothing paused or full, every
    queue served), else the served queues not paused and not full (full ones kept when
    `skip_full` is false). `every_name()` lists the queues, read only when needed."""
    if not rows and queues is None:
        return None
    paused = {name: flag for name, _, flag, _ in rows if flag}
    every = paused.pop(ALL_QUEUES, 0) == 1
    full = {name for name, limit, _, running in rows if skip_full and limit and running >= limit}
    if queues is None and not every and 1 not in paused.values() and not full:
        return None
    candidates = queues if queues is not None else every_name()
    eligible = [q for q in candidates if q not in full
                and paused.get(q, 0) != 1 and not (every and paused.get(q, 0) != -1)]
    return None if queues is None and len(eligible) == len(candidates) else eligible


def pauses_of(rows: dict) -> dict:
    """What is paused, from {name: paused flag} of the queues rows with a flag (see `pauses`)."""
    rows = dict(rows)
    every = rows.pop(ALL_QUEUES, 0) == 1
    return {"all": every, "queues": sorted(q for q, flag in rows.items() if flag == 1),
            "resumed": sorted(q for q, flag in rows.items() if flag == -1 and every)}


def paused_map(rows: dict) -> dict:
    """{queue: paused?} from {name: paused flag} of every queues row."""
    rows = dict(rows)
    every = rows.pop(ALL_QUEUES, 0) == 1
    return {name: flag == 1 or (every and flag != -1) for name, flag in sorted(rows.items())}


def window_bounds(since: float) -> dict:
    """Where a window of the aggregates from the minute of `since` on begins: its first,
    partial hour is read in minutes (`partial`, from `minute`), every later hour from `whole`
    on in hours (at most 59 + 744 rows for 31 days)."""
    first = int(since // 60)
    partial = first // 60
    # An hour that starts on the window's first minute is whole; else its minutes are read.
    whole = partial if first % 60 == 0 else partial + 1
    return {"partial": partial, "minute": first % 60 if first % 60 else 60, "whole": whole}


def minute_range(now: float, minutes: int) -> dict:
    """The (hour, minute) bounds of the last `minutes` minutes (at most 60), the one of `now` included."""
    last = int(now // 60)
    first = last - min(max(minutes, 1), 60) + 1
    return {"hour0": first // 60, "minute0": first % 60, "hour1": last // 60, "minute1": last % 60}
