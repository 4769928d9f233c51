"""Records that cross module boundaries: Job, NewJob, Outcome, Run, and the five states.

Records are typed NamedTuples rather than frozen dataclasses: just as immutable, and about ten
times cheaper to define, which every CLI call pays at start-up (see bench/RESULTS.md).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

from .timeutil import iso

PENDING = "pending"
PROCESSING = "processing"
COMPLETED = "completed"
FAILED = "failed"
DEAD = "dead"
STATES = (PENDING, PROCESSING, COMPLETED, FAILED, DEAD)
FINISHED = (COMPLETED, DEAD)
WAITING = (PENDING, FAILED)  # states a worker may claim from once run_at has come
DEFAULT_QUEUE = "default"
CANCELLED = "cancelled"  # the last_error of a cancelled job


class Job(NamedTuple):
    """A stored job. Times are epoch seconds; `to_dict` gives SPEC's JSON form."""

    seq: int
    id: str
    command: str
    state: str
    attempts: int
    max_retries: int
    priority: int
    timeout: Optional[float]
    run_at: float
    cwd: str
    created_at: float
    updated_at: float
    exit_code: Optional[int]
    last_error: Optional[str]
    worker_id: Optional[str]
    started_at: Optional[float]
    queue: str = DEFAULT_QUEUE
    after: tuple = ()  # the ids it waits for; filled in by the store's reads, not by the claim

    @classmethod
    def from_row(cls, row: tuple) -> "Job":
        return cls(*row)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "command": self.command,
            "state": self.state,
            "attempts": self.attempts,
            "max_retries": self.max_retries,
            "priority": self.priority,
            "timeout": self.timeout,
            "run_at": iso(self.run_at),
            "cwd": self.cwd,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "exit_code": self.exit_code,
            "last_error": self.last_error,
            "queue": self.queue,
            "after": list(self.after),
        }


class NewJob(NamedTuple):
    """A validated job about to be enqueued; `id` is None when one is to be generated."""

    id: Optional[str]
    command: str
    max_retries: int
    priority: int
    timeout: Optional[float]
    run_at: float
    cwd: str
    queue: str = DEFAULT_QUEUE
    after: tuple = ()  # ids (or unique prefixes of existing ids) it waits for


# What a run record's `outcome` can be (SPEC: run history).
RUN_OUTCOMES = ("completed", "failed", "timeout", "lost", "interrupted", "cancelled")
FAILED_RUNS = ("failed", "timeout", "lost")  # the runs that count as failures in `stats`


class Outcome(NamedTuple):
    """How one run ended. `interrupted` means a forced stop killed it: it does not count.
    `cancelled` means `cancel` stopped it: it counts, and the job goes to the DLQ.

    `kind` names a run outcome the exit code cannot tell ("timeout", "lost", "cancelled");
    `tail` is the end of what the run wrote (at most TAIL_BYTES of its log, as text).
    """

    exit_code: Optional[int]
    error: Optional[str]
    interrupted: bool = False
    cancelled: bool = False
    kind: Optional[str] = None
    tail: str = ""

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and self.error is None and not self.interrupted and not self.cancelled

    @property
    def run_outcome(self) -> str:
        """The run record's `outcome`: one of RUN_OUTCOMES."""
        if self.kind is not None:
            return self.kind
        if self.cancelled:
            return "cancelled"
        if self.interrupted:
            return "interrupted"
        return "completed" if self.succeeded else "failed"


STOP_FORCE = "force"  # why a run is stopped: a forced stop of its worker (the run does not count)
STOP_CANCEL = "cancel"  # or `cancel` of its job (it counts)


class Run(NamedTuple):
    """One recorded run of a job, as `show` lists it."""

    attempt: int
    worker: Optional[str]
    host: Optional[str]
    started_at: float
    ended_at: float
    outcome: str
    exit_code: Optional[int]
    error: Optional[str]
    output_tail: str

    def to_dict(self) -> dict:
        return {
            "attempt": self.attempt,
            "worker": self.worker,
            "host": self.host,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "error": self.error,
            "output_tail": self.output_tail,
        }


class WorkerInfo(NamedTuple):
    """A live worker as `worker status` shows it."""

    worker_id: str
    pid: int
    pool_id: str
    host: str
    home: str  # the queue home's real path on its host
    started_at: float
    heartbeat_at: float
    job_id: Optional[str]
    job_since: Optional[float]

    def to_dict(self) -> dict:
        return {
            "worker_id": self.worker_id,
            "pid": self.pid,
            "pool": self.pool_id,
            "host": self.host,
            "started_at": iso(self.started_at),
            "heartbeat_at": iso(self.heartbeat_at),
            "job": self.job_id,
            "job_since": iso(self.job_since),
        }


class QueueInfo(NamedTuple):
    """A named queue as `queues` shows it: its jobs per state, its limit (None: none), paused."""

    name: str
    counts: dict
    limit: Optional[int]
    paused: bool

    def to_dict(self) -> dict:
        return {"name": self.name, "counts": self.counts, "limit": self.limit, "paused": self.paused}
