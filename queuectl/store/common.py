"""What both backends share that is not SQL: ids, names, limits of the history, and the pure
rules that turn a few rows into a decision (which queues a claim may take from, what is paused)."""
from __future__ import annotations

import os
from typing import Callable, Optional

from ..errors import Conflict, NotFound
from ..models import COMPLETED, DEAD, FINISHED, PROCESSING

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


class StoreRules:
    """The rules of the user's transitions that hold the same on every backend, over the
    backend's own reads and writes (states_of, _add_jobs and _duplicate_id, _waiters,
    cancel_waiting, request_cancel, _revive, _bury, _add_waits, next_run_at, resolve, pauses, _lift_pauses, _set, _prune,
    _write): no SQL here."""

    def cancel(self, ids: list, now: float) -> list:
        """Cancel jobs, all or none: waiting ones go to the DLQ at once (cancel_waiting), running
        ones get a request their workers act on (request_cancel). Returns the running ones' ids."""
        with self._write():
            states = self.states_of(ids)
            for job_id in ids:
                if job_id not in states:
                    raise NotFound(f"no job with id {job_id!r}")
                if states[job_id] in FINISHED:
                    raise Conflict(f"job {job_id} is {states[job_id]}; only pending, failed or"
                                   " processing jobs can be cancelled; nothing was cancelled")
            for job_id in ids:
                if states[job_id] != PROCESSING:
                    self.cancel_waiting(job_id, now)
                else:
                    self.request_cancel(job_id, now)
        return [job_id for job_id in ids if states[job_id] == PROCESSING]

    def requeue(self, ids: list, now: float) -> list:
        """Move completed or dead jobs back to pending (see requeue_dead); returns every id moved."""
        with self._write():
            self._check_states(ids, FINISHED, "completed or dead", "only finished jobs can be requeued")
            return self._revive(ids, now)

    def pause(self, queues: Optional[list]) -> None:
        """Start no new run from these queues (None: from any queue, including queues to come)."""
        with self._write():
            if queues is None:
                self._prune(self._lift_pauses())
                queues = [ALL_QUEUES]
            for queue in queues:
                self._set(queue, "paused", 1)

    def resume(self, queues: Optional[list]) -> None:
        """Lift the pause of these queues (None: every pause). Under a pause of every queue, a
        queue resumed by name runs despite it."""
        with self._write():
            if queues is None:
                self._prune(self._lift_pauses())
            else:
                every = self.pauses()["all"]
                for queue in queues:
                    self._set(queue, "paused", -1 if every else 0)
            self._wake_workers()

    def _wake_workers(self) -> None:
        """Tell idle workers that work may be due (where they would not notice by themselves)."""

    def oldest_due(self, now: float, queues: Optional[list] = None) -> Optional[float]:
        """Seconds the longest-waiting due job (of these queues) has waited since its run_at;
        None if none is due. Jobs of a paused queue, or waiting for another job, are not
        counted: they wait for a person or for that job. A full queue's are: they wait for a
        worker, and a growing backlog behind a limit is what this figure is watched for."""
        earliest = self.next_run_at(queues, skip_full=False)
        return None if earliest is None or earliest > now else now - earliest

    def _check_states(self, ids: list, allowed: tuple, wanted: str, rule: str) -> None:
        states = self.states_of(ids)
        for job_id in ids:
            if job_id not in states:
                raise NotFound(f"no job with id {job_id!r}")
            if states[job_id] not in allowed:
                raise Conflict(f"job {job_id} is {states[job_id]}, not {wanted}; {rule}")

    def _check_deletable(self, ids: list) -> dict:
        """{id: state} of jobs `delete` may remove: none processing, every one there, and none
        that an unfinished job not named too waits for (a completed job is waited for no more)."""
        states = self.states_of(ids)
        busy = [job_id for job_id in ids if states.get(job_id) == PROCESSING]
        if busy:
            raise Conflict(f"job {busy[0]} is processing; stop its worker or wait for it")
        missing = [job_id for job_id in ids if job_id not in states]
        if missing:
            raise NotFound(f"no job with id {missing[0]!r}")
        named = set(ids)
        for parent, child in self._waiters([i for i in ids if states[i] != COMPLETED]):
            if child not in named:
                raise Conflict(f"job {child} waits for {parent}; delete it too, or first let it finish")
        return states

    def insert(self, jobs: list, now: float, if_absent: bool = False,
               progress: Optional[Callable[[int], None]] = None) -> list:
        """Insert NewJobs in one transaction, all or none; returns the ids actually inserted.

        With `if_absent`, jobs whose id exists already are skipped instead of refusing all.
        `progress(n)` is told as each n more rows are written (for a progress bar).
        """
        given = [j.id for j in jobs if j.id is not None]
        fresh = iter(new_job_ids(len(jobs) - len(given)))
        ids = [job.id or next(fresh) for job in jobs]
        if not if_absent and len(set(given)) < len(given):
            refuse_repeats(given)
        rows = [(job_id, j.command, j.max_retries, j.priority, j.timeout, j.run_at, j.cwd, now, now, j.queue)
                for job_id, j in zip(ids, jobs)]
        try:
            with self._write():
                existing = set(self.states_of(given)) if if_absent else set()
                waiting: dict = {}
                for job_id, after in [(job_id, j.after) for job_id, j in zip(ids, jobs) if j.after]:
                    if job_id not in existing:
                        waiting.setdefault(job_id, after)
                batch = set(ids) - existing
                # Resolved before the batch is in: a prefix names a job stored before, never one of the batch.
                stored = {token: self._resolve_after(token)
                          for token in {t for after in waiting.values() for t in after} - batch}
                self._add_jobs(rows, sorted({j.queue for j in jobs}), if_absent, progress)
                if waiting:
                    self._link(waiting, batch, stored, now)
        except self._duplicate_id:
            # Looked up after the rollback, so ids inserted earlier in this batch are not named.
            taken = sorted(self.states_of(given))
            shown = ", ".join(taken[:5]) + (" ..." if len(taken) > 5 else "")
            raise Conflict(f"job id already exists: {shown}; nothing was enqueued") from None
        if not if_absent:
            return ids
        return list(dict.fromkeys(job_id for job_id in ids if job_id not in existing))

    def _link(self, waiting: dict, batch: set, stored: dict, now: float) -> None:
        """Record what each new job waits for (`waiting`: id -> after; `stored`: the full id of
        each token naming a stored job) and how many of those have not completed (_add_waits).
        A job that waits for a dead job is dead at once, with its waiters."""
        doomed = []
        for job_id, after in waiting.items():
            parents = list(dict.fromkeys(token if token in batch else stored[token] for token in after))
            states = self.states_of([p for p in parents if p not in batch])
            self._add_waits(job_id, parents, sum(1 for p in parents if p in batch or states[p] != COMPLETED))
            dead = [p for p in parents if p not in batch and states[p] == DEAD]
            if dead:
                doomed.append((job_id, dead[0]))
        for job_id, parent in doomed:
            self._bury([job_id], dependency_dead(parent), now)

    def _resolve_after(self, token: str) -> str:
        try:
            return self.resolve(token)
        except NotFound as exc:
            raise NotFound(f"cannot wait for {token}: {exc}; nothing was enqueued") from None
