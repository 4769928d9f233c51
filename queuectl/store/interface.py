"""The Store interface: what every backend offers, and all that the code above the store uses.

SqliteStore (sqlite.py) and PostgresStore (postgres.py) implement it; open_store() in
__init__ picks one. A PostgresStore also keeps the configuration (read_settings,
write_settings, settings_stamp, as config.FileSettings does for SQLite's config.json).
"""
from __future__ import annotations

from typing import Callable, Optional, Protocol

from .. import stats
from ..models import Job, Run


class Store(Protocol):
    """A queue's database, one per process. Methods that change a job are guarded single
    transitions (they return False when the job moved on); `now` is always passed in, read
    from `clock()`, so every host of a shared database goes by one clock."""

    def close(self) -> None:
        ...

    def transaction(self):
        """Make the transitions inside one transaction: all happen, or none."""
        ...

    def insert(self, jobs: list, now: float, if_absent: bool = False,
               progress: Optional[Callable[[int], None]] = None) -> list:
        """Insert NewJobs in one transaction, all or none; returns the ids actually inserted."""
        ...

    def get(self, job_id: str) -> Optional[Job]:
        ...

    def waiting_for(self, job_id: str) -> list:
        """(id, state) of each job `job_id` waits for that has not completed; state None if
        deleted."""
        ...

    def resolve(self, token: str) -> str:
        """The full id for an id or a unique prefix of one (as git does with hashes)."""
        ...

    def counts(self) -> dict:
        ...

    def count(self, state: Optional[str], queue: Optional[str]) -> int:
        """Jobs in `state` (None: any) of `queue` (None: any); O(1) without a queue."""
        ...

    def list_jobs(self, state: Optional[str], limit: Optional[int], queue: Optional[str] = None) -> list:
        """A page of jobs: claim order for pending/failed, newest first otherwise."""
        ...

    def jobs_page(self, state: Optional[str], prefix: str, after: Optional[tuple], limit: int,
                  queue: Optional[str] = None) -> tuple:
        """A page for browsing: jobs in `state` (any when None) of `queue` (any when None) whose id
        starts with `prefix`, following the page key `after`; returns (jobs, the key of the next
        page or None). Keyset paging: a seek in an index per page, however deep the page, where
        OFFSET would walk every job before it."""
        ...

    def states_of(self, ids: list) -> dict:
        """{id: state} for the ids that exist."""
        ...

    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap 'anything new?' for idle loops."""
        ...

    def work_version(self) -> int:
        """Changes when new work may be due (here: at any commit); idle workers watch it."""
        ...

    def change_stamp(self) -> tuple:
        """Changes whenever a transaction commits, comparable across connections (WAL mode: a commit
        writes to the -wal file). An empty -wal counts as none: every connection, a reader's too,
        creates one, and the last to close removes it."""
        ...

    def clock(self) -> float:
        """Now, by the clock every host of the queue agrees on: this machine's, for a file."""
        ...

    def next_run_at(self, queues: Optional[list] = None, skip_full: bool = True) -> Optional[float]:
        """The earliest run_at among claimable jobs, due or not, of `queues` (None: every queue)
        that are not paused and (unless `skip_full` is false) not full."""
        ...

    def has_work(self, queues: Optional[list], now: float) -> bool:
        """Whether a --burst pool serving `queues` (None: every queue) has work left: a job of them
        running, or due or awaiting a retry in a queue that is neither paused nor full."""
        ...

    def set_limit(self, queue: str, limit: int) -> None:
        """At most `limit` jobs of the queue processing at once; 0 removes the limit."""
        ...

    def pause(self, queues: Optional[list]) -> None:
        """Start no new run from these queues (None: from any queue, including queues to come)."""
        ...

    def resume(self, queues: Optional[list]) -> None:
        """Lift the pause of these queues (None: every pause). Under a pause of every queue, a queue
        resumed by name runs despite it."""
        ...

    def pauses(self) -> dict:
        """What is paused: `all` (a pause of every queue), `queues` paused by name, and `resumed`,
        the queues that run despite a pause of every queue."""
        ...

    def queues(self) -> list:
        """Every queue that has jobs or settings, by name (counting its jobs reads them all)."""
        ...

    def delete(self, ids: list) -> None:
        """Remove jobs that are not processing and that no unfinished job waits for (unless it is
        removed too; a completed job is waited for no more); all or none."""
        ...

    def purge(self, state: str, updated_before: Optional[float]) -> list:
        """Delete finished jobs in `state` (last changed before the given time); returns their
        ids."""
        ...

    def count_finished(self, state: str, updated_before: float) -> int:
        """How many jobs `purge(state, updated_before)` would delete now."""
        ...

    def requeue_dead(self, ids: Optional[list], now: float) -> list:
        """Move dead jobs (the given ones, or all when None) back to pending with attempts 0, and
        the jobs that died for them (see _revive); returns every id moved."""
        ...

    def requeue(self, ids: list, now: float) -> list:
        """Move completed or dead jobs back to pending (see requeue_dead); returns every id
        moved."""
        ...

    def claim_next(self, worker_id: str, now: float, queues: Optional[list] = None) -> Optional[Job]:
        """Take the next due job of `queues` (None: every queue) that is neither paused nor full,
        and waits for nothing unfinished: lowest priority, then earliest run_at, then enqueue
        order."""
        ...

    def mark_completed(self, job: Job, worker_id: str, now: float) -> bool:
        """Completed; in the same transaction, the jobs waiting for it wait for one job fewer. One
        that waits for none any more becomes due now (if not later): it was not due while it waited,
        so neither its place in the claim order nor its wait in stats and metrics counts that
        time."""
        ...

    def mark_failed(self, job: Job, worker_id: str, exit_code: Optional[int], error: str, run_at: float,
                    now: float) -> bool:
        ...

    def mark_dead(self, job: Job, worker_id: str, exit_code: Optional[int], error: str, now: float) -> bool:
        """Dead (in the DLQ); in the same transaction, so is every job waiting for it, down the
        chain."""
        ...

    def release(self, job: Job, worker_id: str, now: float) -> bool:
        """Give back a job whose run was killed by a forced stop: pending, attempt not counted."""
        ...

    def processing_holders(self) -> list:
        """(job, pid, host, heartbeat_at) for every processing job; None where no worker row is
        left."""
        ...

    def jobs_of_worker(self, worker_id: str) -> list:
        ...

    def integrity_problems(self, limit: int = 20) -> list:
        """What PRAGMA integrity_check finds, at most `limit` lines; [] when the file is sound."""
        ...

    def cancel(self, ids: list, now: float) -> list:
        """Cancel jobs, all or none: waiting ones go to the DLQ at once (cancel_waiting), running
        ones get a request their workers act on (request_cancel). Returns the running ones' ids."""
        ...

    def cancel_waiting(self, job_id: str, now: float) -> bool:
        """A pending or failed job to the DLQ: dead, "cancelled", attempts unchanged."""
        ...

    def request_cancel(self, job_id: str, now: float) -> bool:
        """Ask the worker of a processing job to stop its run (a repeated request keeps the first
        time)."""
        ...

    def cancel_requested(self, job: Job) -> bool:
        """Whether `cancel` asked to stop this job's run: one rowid lookup, so workers can poll
        it."""
        ...

    def mark_cancelled(self, job: Job, worker_id: str, now: float) -> bool:
        """Record a run stopped by `cancel`: dead, "cancelled", exit_code null, the run counted; in
        the same transaction, so is every job waiting for it, down the chain."""
        ...

    def record_run(self, job: Job, run: Run, queue: str = "default") -> None:
        """Record one finished run of `job` and count it in the aggregates; call it in the
        transaction of the job's transition, so history and job never disagree."""
        ...

    def runs_of(self, job: Job) -> list:
        """The job's runs, oldest first."""
        ...

    def run_window(self, since: float, queue: Optional[str] = None) -> stats.Window:
        """The runs that ended from the minute of `since` on, summed from the aggregates."""
        ...

    def failing_commands(self, since: float, queue: Optional[str] = None, limit: int = 5) -> list:
        """[(command, failed runs)] of the commands with the most failed runs from `since` on."""
        ...

    def run_totals(self) -> list:
        """[(queue, outcome, runs, duration_sum, durations histogram)] since the queue began:
        deleting or purging jobs never lowers them."""
        ...

    def oldest_due(self, now: float, queues: Optional[list] = None) -> Optional[float]:
        """Seconds the longest-waiting due job (of these queues) has waited since its run_at; None
        if none is due. Jobs of a paused queue, or waiting for another job, are not counted: they
        wait for a person or for that job. A full queue's are: they wait for a worker, and a growing
        backlog behind a limit is what this figure is watched for."""
        ...

    def paused_queues(self) -> dict:
        """{queue: paused?} for every queue with jobs or settings (its `queues` row): cheap,
        whatever the number of jobs."""
        ...

    def queue_limits(self) -> dict:
        """{queue: its limit} of the queues that have one: cheap, whatever the number of jobs."""
        ...

    def runs_per_minute(self, now: float, minutes: int = 60, queue: Optional[str] = None) -> list:
        """[(minute, outcome, runs)] for the runs that ended in the last `minutes` minutes (the one
        of `now` included), `minute` being epoch seconds / 60: one range of the minute rows."""
        ...

    def register_worker(self, worker_id: str, pid: int, pool_id: str, host: str, home: str,
                        now: float) -> None:
        ...

    def heartbeat(self, worker_id: str, now: float) -> bool:
        """Record that the worker lives; False if its row was removed (it was presumed dead)."""
        ...

    def remove_worker(self, worker_id: str) -> None:
        ...

    def remove_stale_workers(self, now: float, lease_seconds: float) -> None:
        ...

    def workers(self, now: float, lease_seconds: float) -> list:
        """Workers heard from within the lease, each with the job it is running."""
        ...
