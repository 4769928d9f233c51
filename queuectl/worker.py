"""One worker process: claim a due job, run it, record the outcome; and the loop around that."""
from __future__ import annotations

import os
import signal
import sys
import time
from typing import Callable, Optional

from . import executor, retry
from .config import LiveConfig
from .errors import QueuectlError
from .home import QueueHome
from .models import Job, Outcome, Run
from .pidfile import HOST, pid_alive
from .repository import DB_ERRORS, Store
from .timeutil import iso

IDLE_TICK = 0.05  # idle workers look for news this often: cheap (PRAGMA data_version), and quick pickup
LOST = "worker lost"


class Flags:
    """Set by signal handlers, acted on by the loop. `force` kills the run in progress."""

    def __init__(self) -> None:
        self.stop = False
        self.force = False


def record_outcome(store: Store, settings: dict, job: Job, holder: str, outcome: Outcome,
                   now: float) -> Optional[str]:
    """Apply one run's outcome to the job `holder` held, and record the run in the same
    transaction; a verdict, or None if the job moved on (then the run is not recorded: the
    worker that took the job back recorded it as lost)."""
    with store.transaction():
        verdict = _transition(store, settings, job, holder, outcome, now)
        if verdict is not None:
            store.record_run(job, _run_record(job, holder, outcome, now))
    return verdict


def _run_record(job: Job, holder: str, outcome: Outcome, now: float) -> Run:
    kind = outcome.run_outcome
    host = None if kind == "lost" else HOST  # a lost run's host is its worker's (see record_run)
    return Run(job.attempts, holder, host, job.started_at or now, now, kind, outcome.exit_code,
               outcome.error, outcome.tail)


def _transition(store: Store, settings: dict, job: Job, holder: str, outcome: Outcome,
                now: float) -> Optional[str]:
    if outcome.interrupted:
        return "back to pending (run interrupted)" if store.release(job, holder, now) else None
    if outcome.succeeded:
        return "completed" if store.mark_completed(job, holder, now) else None
    run_at = retry.next_run_at(job.attempts, job.max_retries, settings["backoff_base"],
                               settings["backoff_max"], now)
    if run_at is None:
        ok = store.mark_dead(job, holder, outcome.exit_code, outcome.error, now)
        return f"dead after {job.attempts} run(s): {outcome.error}" if ok else None
    ok = store.mark_failed(job, holder, outcome.exit_code, outcome.error, run_at, now)
    return f"failed ({outcome.error}); retry in {run_at - now:g}s" if ok else None


def recover_lost_job(store: Store, settings: dict, job: Job, now: float,
                     log_path: Optional[str] = None) -> Optional[str]:
    """A job whose worker died: stop what is left of its run, then count it as a failed run."""
    executor.kill_strays(job.worker_id)
    tail = executor.log_tail(log_path, job) if log_path else ""
    outcome = Outcome(None, LOST, kind="lost", tail=tail)
    return record_outcome(store, settings, job, job.worker_id, outcome, now)


class Worker:
    def __init__(self, store: Store, home: QueueHome, pool_id: str, flags: Flags, burst: bool = False,
                 parent_pid: Optional[int] = None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.home = home
        self.pool_id = pool_id
        self.flags = flags
        self.burst = burst
        self.parent_pid = parent_pid
        self.clock = clock
        self.pid = os.getpid()
        self.worker_id = f"{pool_id}-{self.pid}"
        self.home_path = os.path.realpath(home.root)
        self.config = LiveConfig(home.config_path)
        self._next_upkeep = 0.0
        self._claimed: Optional[Job] = None  # claimed together with the last outcome, not run yet

    # -- one job ---------------------------------------------------------------------------

    def run_once(self) -> bool:
        """Claim one due job and run it to its recorded outcome; False if nothing was due."""
        job, self._claimed = self._claimed or self.store.claim_next(self.worker_id, self.clock()), None
        if job is None:
            return False
        try:
            outcome = executor.run(job, self.home.log_path(job.id), self.worker_id,
                                   lambda: self.flags.force, self._upkeep)
        except Exception as exc:  # the one catch-all: a bad job must never kill its worker
            outcome = Outcome(None, f"internal error: {exc}"[:1000])
        self._record(job, outcome)
        return True

    def _record(self, job: Job, outcome: Outcome) -> None:
        """Record the outcome and, in the same transaction, claim the next due job (one commit
        per job instead of two: the drain benchmark's biggest per-job cost after the run itself)."""
        for attempt in range(5):
            try:
                with self.store.transaction():
                    verdict = record_outcome(self.store, self.config.current(), job, self.worker_id,
                                             outcome, self.clock())
                    if not self.flags.stop:
                        self._claimed = self.store.claim_next(self.worker_id, self.clock())
                break
            except DB_ERRORS as exc:
                self.say(f"cannot record job {job.id} yet ({exc}); retrying")
                time.sleep(0.5 * (attempt + 1))
        else:
            # Left processing under our id: once we are gone, lease expiry takes it back.
            return
        if verdict is None:
            self.say(f"job {job.id} was taken back meanwhile (lease expired); this run's result is dropped")
        elif verdict != "completed":  # successes are in `list`; a line each would grow workers.log forever
            self.say(f"job {job.id} {verdict}")

    # -- the loop --------------------------------------------------------------------------

    def loop(self) -> None:
        self.store.register_worker(self.worker_id, self.pid, self.pool_id, HOST, self.home_path, self.clock())
        try:
            while not self.flags.stop:
                try:
                    self._upkeep()
                    if self.run_once():
                        continue
                    if self.burst and self._burst_done():
                        break
                    self._idle()
                except (*DB_ERRORS, QueuectlError) as exc:
                    self.say(f"database trouble ({exc}); retrying in 1s")
                    time.sleep(1)
        finally:
            try:
                if self._claimed is not None:  # a stop came between that claim and its run
                    self.store.release(self._claimed, self.worker_id, self.clock())
                self.store.remove_worker(self.worker_id)
            except DB_ERRORS:
                pass

    def _burst_done(self) -> bool:
        """No job running or waiting to be retried, and none due (later first runs don't count)."""
        counts = self.store.counts()
        if counts["processing"] or counts["failed"]:
            return False
        next_run = self.store.next_run_at()
        return next_run is None or next_run > self.clock()

    def _idle(self) -> None:
        """Sleep until something changes, the next job is due, or poll_interval has passed."""
        version = self.store.data_version()
        wake = self.clock() + self.config.current()["poll_interval"]
        next_run = self.store.next_run_at()
        if next_run is not None:
            wake = min(wake, next_run)
        while not self.flags.stop:
            remaining = wake - self.clock()
            if remaining <= 0:
                return
            time.sleep(min(IDLE_TICK, remaining))
            if self.store.data_version() != version:
                return
            self._upkeep()

    def _upkeep(self) -> None:
        """Every few seconds: heartbeat, take back jobs of dead workers, notice an orphaned pool."""
        now = self.clock()
        if now < self._next_upkeep:
            return
        lease = self.config.current()["lease_seconds"]
        self._next_upkeep = now + min(lease / 3.0, 5.0)
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            self.say("the pool's supervisor is gone; stopping after the current run")
            self.flags.stop = True
        if not self.store.heartbeat(self.worker_id, now):
            self.store.register_worker(self.worker_id, self.pid, self.pool_id, HOST, self.home_path, now)
        self._reclaim_orphans(now, lease)

    def _reclaim_orphans(self, now: float, lease: float) -> None:
        for job, pid, host, heartbeat_at in self.store.processing_holders():
            if job.worker_id == self.worker_id or not _is_lost(pid, host, heartbeat_at, now, lease):
                continue
            log = self.home.log_path(job.id) if host in (None, HOST) else None  # else: that host's log
            verdict = recover_lost_job(self.store, self.config.current(), job, self.clock(), log)
            if verdict:
                self.say(f"job {job.id} of lost worker {job.worker_id}: {verdict}")
            self.store.remove_worker(job.worker_id)
        self.store.remove_stale_workers(now, lease)

    def say(self, text: str) -> None:
        print(f"{iso(time.time())} worker {self.pid}: {text}", file=sys.stderr, flush=True)


def _is_lost(pid: Optional[int], host: Optional[str], heartbeat_at: Optional[float], now: float,
             lease: float) -> bool:
    if heartbeat_at is None or heartbeat_at < now - lease:
        return True
    return host == HOST and not pid_alive(pid)


def _install_signal_handlers(flags: Flags) -> None:
    """Ctrl+C reaches every process of the terminal's group: the supervisor decides, we ignore it."""
    try:
        signal.set_wakeup_fd(-1)  # inherited from the supervisor across fork
    except ValueError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def stop(signum, frame):
        flags.stop = True

    def force(signum, frame):
        flags.stop = flags.force = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGUSR1, force)


def worker_main(home_root: str, pool_id: str, burst: bool, parent_pid: int) -> None:
    """Process target: plain data in; the store is opened here, never inherited across fork."""
    flags = Flags()
    _install_signal_handlers(flags)
    home = QueueHome(home_root)
    store = Store.open(home.db_path, durable=False)
    try:
        Worker(store, home, pool_id, flags, burst=burst, parent_pid=parent_pid).loop()
    finally:
        store.close()
