"""Watching jobs from the CLI: `wait` for them to finish, `logs --follow` their output."""
from __future__ import annotations

import os
import sys
import time
from typing import Optional

from .models import COMPLETED, FINISHED, PROCESSING

POLL_SECONDS = 0.1
EXIT_TIMEOUT = 124


def wait_for(store, ids: list, timeout: Optional[float]) -> int:
    """0 when every job completed, 1 when all finished but some died, 124 on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    remaining = set(ids)
    outcomes: dict = {}
    while True:
        states = store.states_of(sorted(remaining))
        for job_id in list(remaining):
            state = states.get(job_id, "deleted")
            if state in FINISHED or state == "deleted":
                outcomes[job_id] = state
                remaining.discard(job_id)
        if not remaining:
            break
        if deadline is not None and time.monotonic() >= deadline:
            print(f"Timed out waiting for {len(remaining)} job(s): {', '.join(sorted(remaining))}",
                  file=sys.stderr)
            return EXIT_TIMEOUT
        time.sleep(POLL_SECONDS if deadline is None else max(0.0, min(POLL_SECONDS, deadline - time.monotonic())))
    failed = sorted(job_id for job_id, state in outcomes.items() if state != COMPLETED)
    if failed:
        print(f"Not completed: {', '.join(f'{j} ({outcomes[j]})' for j in failed)}", file=sys.stderr)
        return 1
    return 0


def wait_while_processing(store, ids: list, timeout: float) -> dict:
    """Poll until none of the jobs is processing, or for `timeout` seconds: {id: state} at the end
    (jobs deleted meanwhile are left out)."""
    deadline = time.monotonic() + timeout
    while True:
        states = store.states_of(ids)
        left = deadline - time.monotonic()
        if PROCESSING not in states.values() or left <= 0:
            return states
        time.sleep(min(POLL_SECONDS, left))


def print_log(store, job_id: str, path: str, follow: bool) -> None:
    """Copy the log to stdout in chunks; with `follow`, keep going until the job has finished."""
    out = sys.stdout.buffer
    handle = None
    try:
        while True:
            if handle is None and os.path.exists(path):
                handle = open(path, "rb")
            if handle is not None:
                _copy(handle, out)
            if not follow:
                break
            job = store.get(job_id)
            if job is None or job.state in FINISHED:
                if handle is None and os.path.exists(path):
                    continue  # the log appeared just as the job finished: print it
                if handle is not None:
                    _copy(handle, out)
                break
            time.sleep(POLL_SECONDS)
    finally:
        if handle is not None:
            handle.close()
    if handle is None and not follow:
        print(f"No output yet for job {job_id}.", file=sys.stderr)


def _copy(handle, out) -> None:
    while True:
        chunk = handle.read(1 << 16)
        if not chunk:
            break
        out.write(chunk)
    out.flush()
