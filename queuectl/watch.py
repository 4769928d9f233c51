"""Watching jobs from the CLI: `wait` for them to finish, `logs --follow` their output."""
from __future__ import annotations

import os
import sys
import time
from typing import Callable, Optional

from .models import COMPLETED, FINISHED, PROCESSING
from .render import plural, some

POLL_SECONDS = 0.1
EXIT_TIMEOUT = 124
NOTICE_AFTER = 3.0  # seconds of waiting before saying that no live worker can run the jobs
NOTICE_EVERY = 1.0  # how often to look for live workers after that, until it has been said
TAIL_BLOCK = 1 << 16


class WorkerNotice:
    """Says once on stderr, after a few seconds, that no live worker is there to run the jobs
    (a `wait` with no pool started would otherwise look hung)."""

    def __init__(self, live_workers: Callable[[], int], below_a_bar: bool = False) -> None:
        self._live_workers = live_workers
        self._start = "\n" if below_a_bar else ""  # a progress bar's line has no newline yet
        self._next = time.monotonic() + NOTICE_AFTER
        self._said = False

    def check(self, waiting: int) -> None:
        if self._said or time.monotonic() < self._next:
            return
        self._next = time.monotonic() + NOTICE_EVERY
        if self._live_workers() == 0:
            self._said = True
            print(f"{self._start}No live worker: {plural(waiting, 'job')} will wait until a pool starts"
                  " (queuectl worker start)", file=sys.stderr)


class Deadline:
    """When to give up (None: never), and how long the next poll may sleep."""

    def __init__(self, timeout: Optional[float]) -> None:
        self.at = None if timeout is None else time.monotonic() + timeout

    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def sleep(self, seconds: float = POLL_SECONDS) -> None:
        left = seconds if self.at is None else self.at - time.monotonic()
        time.sleep(max(0.0, min(seconds, left)))


def wait_for(store, ids: list, timeout: Optional[float], notice: Optional[WorkerNotice] = None,
             progress: Optional[Callable[[int], None]] = None) -> tuple:
    """(exit code, message for stderr or None): 0 when every job completed, 1 when all
    finished but some died, 124 on timeout. The caller prints the message once its progress
    bar is closed."""
    deadline = Deadline(timeout)
    remaining = set(ids)
    outcomes: dict = {}
    seen_version, pause = None, POLL_SECONDS
    while True:
        version = store.data_version()
        if version != seen_version:  # else nothing was committed since the last look
            seen_version, started = version, time.monotonic()
            finished = _finished(store.states_of(sorted(remaining)), remaining)
            # `wait --all` on 100,000 jobs: a look costs a quarter second, so look less often
            # rather than take a core from the workers it waits for.
            pause = max(POLL_SECONDS, 4 * (time.monotonic() - started))
            outcomes.update(finished)
            remaining.difference_update(finished)
            if progress is not None and finished:
                progress(len(finished))
        if not remaining:
            break
        if deadline.passed():
            left = sorted(remaining)
            return EXIT_TIMEOUT, f"Timed out waiting for {plural(len(left), 'job')}: {some(left)}"
        if notice is not None:
            notice.check(len(remaining))
        deadline.sleep(pause)
    return _verdict(outcomes)


def _finished(states: dict, ids: set) -> dict:
    """{id: state} of the jobs among `ids` that are completed, dead or gone."""
    return {job_id: states.get(job_id, "deleted") for job_id in ids
            if states.get(job_id, "deleted") in (*FINISHED, "deleted")}


def _verdict(outcomes: dict) -> tuple:
    failed = sorted(job_id for job_id, state in outcomes.items() if state != COMPLETED)
    if failed:
        return 1, f"Not completed: {some([f'{j} ({outcomes[j]})' for j in failed])}"
    return 0, None


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


def print_log(store, job_id: str, path: str, follow: bool, tail: Optional[int] = None,
              timeout: Optional[float] = None, notice: Optional[WorkerNotice] = None) -> int:
    """Copy the log to stdout in chunks (from its last `tail` lines); with `follow`, keep going
    until the job has finished. Returns the exit code `wait` would give: 0 completed, 1 not."""
    out = sys.stdout.buffer
    deadline = Deadline(timeout)
    handle = None
    elsewhere = ElsewhereRuns(store, job_id, tail)
    try:
        while True:
            if handle is None and os.path.exists(path):
                handle = _open_log(path, tail)
            if handle is not None:
                _copy(handle, out)
            elsewhere.show(out)
            if not follow:
                break
            job = store.get(job_id)
            if job is None or job.state in FINISHED:
                if handle is None and os.path.exists(path):
                    continue  # the log appeared just as the job finished: print it
                if handle is not None:
                    _copy(handle, out)
                elsewhere.show(out)
                code, message = _verdict({job_id: "deleted" if job is None else job.state})
                if message:
                    print(message, file=sys.stderr)
                return code
            if deadline.passed():
                print(f"Timed out following job {job_id} ({job.state})", file=sys.stderr)
                return EXIT_TIMEOUT
            if notice is not None:
                notice.check(1)
            deadline.sleep()
    finally:
        if handle is not None:
            handle.close()
    if handle is None and not elsewhere.shown:
        print(f"No output yet for job {job_id}.", file=sys.stderr)
    return 0


class ElsewhereRuns:
    """The runs of a job that ran on other hosts of a shared database: their logs are in those
    hosts' queue homes, so what is shown here is each run's stored output tail, naming the host."""

    def __init__(self, store, job_id: str, tail: Optional[int]) -> None:
        self.store, self.job_id, self.tail = store, job_id, tail
        self.shown = 0  # how many of the job's runs have been looked at

    def show(self, out) -> None:
        from .pidfile import HOST

        job = self.store.get(self.job_id)
        runs = [] if job is None else self.store.runs_of(job)
        for run in runs[self.shown:]:
            if run.host and run.host != HOST:
                text = run.output_tail if self.tail is None else "".join(
                    run.output_tail.splitlines(keepends=True)[-self.tail:] if self.tail else [])
                out.write((f"=== run {run.attempt} of job {self.job_id} ran on host {run.host}; its full log is"
                           f" in that host's queue home. The end of its output:\n{text}").encode("utf-8", "replace"))
                if text and not text.endswith("\n"):
                    out.write(b"\n")
        out.flush()
        self.shown = len(runs)


def _open_log(path: str, tail: Optional[int]):
    handle = open(path, "rb")
    if tail is not None:
        _seek_tail(handle, tail)
    return handle


def _seek_tail(handle, lines: int) -> None:
    """Put `handle` at the start of its last `lines` lines, reading backwards in blocks, so a
    huge log costs no more than its tail."""
    end = handle.seek(0, os.SEEK_END)
    if lines == 0:
        return
    pos, found = end, 0
    while pos > 0:
        size = min(TAIL_BLOCK, pos)
        pos -= size
        handle.seek(pos)
        block = handle.read(size)
        if pos + size == end and block.endswith(b"\n"):
            block = block[:-1]  # the final newline ends the last line; it starts none
        index = len(block)
        while True:
            index = block.rfind(b"\n", 0, index)
            if index < 0:
                break
            found += 1
            if found == lines:
                handle.seek(pos + index + 1)
                return
    handle.seek(0)


def _copy(handle, out) -> None:
    while True:
        chunk = handle.read(1 << 16)
        if not chunk:
            break
        out.write(chunk)
    out.flush()
