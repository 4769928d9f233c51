"""One worker process: claim a due job, run it, record the outcome; and the loop around that."""
from __future__ import annotations

import os
import signal
import sys
import time
from typing import Callable, Optional

from . import executor, retry
from .config import LiveConfig
from .errors import DatabaseDamaged, QueuectlError
from .home import QueueHome
from .models import CANCELLED, STOP_CANCEL, STOP_FORCE, Job, Outcome, Run
from .pidfile import HOST, is_pool_worker, pid_alive
from .render import printable
from .store import DB_ERRORS, Store
from .timeutil import iso

IDLE_TICK = 0.05  # idle workers look for news this often: cheap (store.work_version), and quick pickup
PAUSE_TICK = 0.1  # a worker that waits out database trouble keeps its heartbeat this often
LOST = "worker lost"
EXIT_DAMAGED = 65  # a worker's exit code when the database is damaged (EX_DATAERR): the pool stops
RETRY_FIRST, RETRY_MAX = 0.2, 5.0  # back-off between tries to record an outcome, or to find space
SAY_AGAIN_SECONDS = 60.0  # while stuck, a line about it this often, not at every try
MIN_FREE_BYTES = 256 << 10  # after a full disk, the room a worker waits for before taking jobs again


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
        if verdict == CANCELLED:  # however the run ended, a cancel request decided the job's fate
            outcome = outcome._replace(kind=CANCELLED, error=CANCELLED)
        if verdict is not None:
            store.record_run(job, _run_record(job, holder, outcome, now), job.queue)
    return verdict


def _run_record(job: Job, holder: str, outcome: Outcome, now: float) -> Run:
    kind = outcome.run_outcome
    host = None if kind == "lost" else HOST  # a lost run's host is its worker's (see record_run)
    return Run(job.attempts, holder, host, job.started_at or now, now, kind, outcome.exit_code,
               outcome.error, outcome.tail)


def _transition(store: Store, settings: dict, job: Job, holder: str, outcome: Outcome,
                now: float) -> Optional[str]:
    if outcome.cancelled:
        return _cancelled(store, job, holder, now)
    if outcome.interrupted:
        verdict = f"back to pending ({outcome.error})" if store.release(job, holder, now) else None
    elif outcome.succeeded:
        return "completed" if store.mark_completed(job, holder, now) else None
    else:
        verdict = _failed(store, settings, job, holder, outcome, now)
    return verdict or _cancelled(store, job, holder, now)


def _failed(store: Store, settings: dict, job: Job, holder: str, outcome: Outcome, now: float) -> Optional[str]:
    run_at = retry.next_run_at(job.attempts, job.max_retries, settings["backoff_base"],
                               settings["backoff_max"], now)
    if run_at is None:
        ok = store.mark_dead(job, holder, outcome.exit_code, outcome.error, now)
        runs = f"{job.attempts} run" + ("" if job.attempts == 1 else "s")
        return f"dead after {runs}: {outcome.error}" if ok else None
    ok = store.mark_failed(job, holder, outcome.exit_code, outcome.error, run_at, now)
    return f"failed ({outcome.error}); retry in {run_at - now:g}s" if ok else None


def _cancelled(store: Store, job: Job, holder: str, now: float) -> Optional[str]:
    """Record the run as cancelled: the store refuses the other transitions of a job whose
    cancel was requested, even when the run ended on its own just as the request came."""
    return CANCELLED if store.mark_cancelled(job, holder, now) else None


def recover_lost_job(store: Store, settings: dict, home: QueueHome, job: Job, now: float,
                     log_path: Optional[str] = None) -> Optional[str]:
    """A job whose worker died: stop what is left of its run, then count it as a failed run."""
    executor.kill_strays(os.path.realpath(home.root), job.worker_id, job.id, job.attempts)
    tail = executor.log_tail(log_path, job) if log_path else ""
    outcome = Outcome(None, LOST, kind="lost", tail=tail)
    return record_outcome(store, settings, job, job.worker_id, outcome, now)


class Worker:
    def __init__(self, store: Store, home: QueueHome, pool_id: str, flags: Flags, burst: bool = False,
                 parent_pid: Optional[int] = None, clock: Callable[[], float] = time.time,
                 queues: Optional[list] = None) -> None:
        self.store = store
        self.queues = queues  # the named queues it serves; None: every queue
        self.home = home
        self.pool_id = pool_id
        self.flags = flags
        self.burst = burst
        self.parent_pid = parent_pid
        self.clock = clock
        self.pid = os.getpid()
        self.worker_id = f"{pool_id}-{self.pid}"
        self.home_path = os.path.realpath(home.root)
        self.config = LiveConfig(home.settings(lambda: store))
        self._next_upkeep = 0.0
        self._claimed: Optional[Job] = None  # claimed together with the last outcome, not run yet
        self._disk_full = False  # a log could not be written: take no job until there is room
        self._said: dict = {}  # what it said about being stuck, and when: {topic: time}
        # A commit that failed may still have happened (a server gone before it answered): a
        # claim it made would hold a job this worker does not know of, alive, so never taken back.
        self._in_doubt = False

    # -- one job ---------------------------------------------------------------------------

    def run_once(self) -> bool:
        """Claim one due job and run it to its recorded outcome; False if nothing was due."""
        if self._in_doubt:
            self._release_strays()
        job = self._claimed or self.store.claim_next(self.worker_id, self.clock(), self.queues)
        self._claimed = None
        if job is None:
            return False
        try:
            outcome = executor.run(job, self.home.log_path(job.id), self.worker_id,
                                   lambda: self._stop_reason(job), self._tick)
        except Exception as exc:  # the one catch-all: a bad job must never kill its worker
            outcome = Outcome(None, f"internal error: {exc}"[:1000])
        if executor.has_deferred_marks():
            self._disk_full = True
            self.say(f"the disk is full (see {self.home.logs_dir}); no new job until there is room")
        self._record(job, outcome)
        return True

    def _release_strays(self) -> None:
        """After database trouble: give back every job the database says this worker holds but
        that it is not about to run (it never started them; the attempt is not counted)."""
        now = self.clock()
        for job in self.store.jobs_of_worker(self.worker_id):
            if self._claimed is None or job.seq != self._claimed.seq:
                if not self.store.release(job, self.worker_id, now):  # its cancel was requested
                    self.store.mark_cancelled(job, self.worker_id, now)
                self.say(f"job {job.id} was claimed by a commit that seemed to fail; given back")
        self._in_doubt = False

    def _stop_reason(self, job: Job) -> Optional[str]:
        """Polled every executor tick while `job` runs (never for runs shorter than a tick):
        why to stop it now, if at all. A cancel request reaches us from any pool this way."""
        if self.flags.force:
            return STOP_FORCE
        try:
            return STOP_CANCEL if self.store.cancel_requested(job) else None
        except (*DB_ERRORS, QueuectlError):
            return None  # asked again at the next tick

    def _record(self, job: Job, outcome: Outcome) -> None:
        verdict = self._record_patiently(job, outcome)
        if verdict is None:
            self.say(f"job {job.id} was taken back meanwhile (lease expired); this run's result is dropped")
        elif verdict != "completed":  # successes are in `list`; a line each would grow pools.log forever
            self.say(f"job {job.id} {verdict}")

    def _record_patiently(self, job: Job, outcome: Outcome) -> Optional[str]:
        """Record the outcome and, in the same transaction, claim the next due job (one commit
        per job instead of two: the drain benchmark's biggest per-job cost after the run itself).

        A full disk or a long-held lock only delays this: it is tried again, heartbeating in
        between, until it is recorded or the job has moved on; nothing is claimed meanwhile.
        Giving up would leave the job processing, to be taken back and run a second time."""
        delay, since = RETRY_FIRST, time.monotonic()
        while True:
            try:
                verdict = self._record_and_claim(job, outcome)
            except DB_ERRORS as exc:
                self._in_doubt = True
                self._say_stuck("record", f"cannot record job {job.id} yet ({exc}); retrying until it can")
                if self._moved_on(job):
                    self._said.pop("record", None)
                    return None
                executor.write_deferred_marks()  # the logs may have room before the database does
                self._pause(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            if self._said.pop("record", None) is not None:
                self.say(f"recorded job {job.id} after {time.monotonic() - since:.1f}s of trying")
            return verdict

    def _record_and_claim(self, job: Job, outcome: Outcome) -> Optional[str]:
        claimed = None
        with self.store.transaction():
            verdict = record_outcome(self.store, self.config.current(), job, self.worker_id,
                                     outcome, self.clock())
            if not (self.flags.stop or self._disk_full):
                claimed = self.store.claim_next(self.worker_id, self.clock(), self.queues)
        self._claimed = claimed  # only once committed: a claim rolled back is no claim
        return verdict

    def _moved_on(self, job: Job) -> bool:
        """Whether the job is no longer ours to record (a read: it works on a full disk)."""
        try:
            current = self.store.get(job.id)
        except DB_ERRORS:
            return False
        return current is None or current.state != "processing" or current.worker_id != self.worker_id

    def _await_room(self) -> None:
        """After a full disk: write the marks the logs are owed, and wait for room, before the
        next claim (a job claimed now would only fail to write its log)."""
        delay = RETRY_FIRST
        while not self.flags.stop:
            if executor.write_deferred_marks() and _free_bytes(self.home.logs_dir) >= MIN_FREE_BYTES:
                self._disk_full = False
                self._said.pop("room", None)
                self.say("there is room on the disk again; taking jobs")
                return
            self._say_stuck("room", "the disk is still full; waiting for room before taking a job")
            self._pause(delay)
            delay = min(delay * 2, RETRY_MAX)

    def _say_stuck(self, topic: str, text: str) -> None:
        """Say it the first time, then once a minute: a full disk must not fill a log with it."""
        moment = time.monotonic()
        if moment - self._said.get(topic, float("-inf")) >= SAY_AGAIN_SECONDS:
            self._said[topic] = moment
            self.say(text)

    # -- the loop --------------------------------------------------------------------------

    def loop(self) -> None:
        self.store.register_worker(self.worker_id, self.pid, self.pool_id, HOST, self.home_path, self.clock())
        try:
            while not self.flags.stop:
                try:
                    self._upkeep()
                    if self._disk_full:
                        self._await_room()
                        continue
                    if self.run_once():
                        continue
                    if self.burst and self._burst_done():
                        break
                    self._idle()
                except DatabaseDamaged:
                    raise  # retrying cannot help: the pool stops
                except (*DB_ERRORS, QueuectlError) as exc:
                    self._in_doubt = True
                    self._say_stuck("loop", f"database trouble ({exc}); retrying every second")
                    self._pause(1.0)
        finally:
            executor.write_deferred_marks()
            try:
                if self._claimed is not None:  # a stop came between that claim and its run
                    claimed, now = self._claimed, self.clock()
                    if not self.store.release(claimed, self.worker_id, now):  # its cancel was requested
                        self.store.mark_cancelled(claimed, self.worker_id, now)
                self.store.remove_worker(self.worker_id)
            except (*DB_ERRORS, QueuectlError):
                pass

    def _burst_done(self) -> bool:
        """No job of its queues running or waiting to be retried, and none due (later first
        runs, and jobs of paused queues, don't count)."""
        return not self.store.has_work(self.queues, self.clock())

    def _idle(self) -> None:
        """Sleep until something changes, the next job is due, or poll_interval has passed."""
        version = self.store.work_version()
        wake = self.clock() + self.config.current()["poll_interval"]
        next_run = self.store.next_run_at(self.queues)
        if next_run is not None:
            wake = min(wake, next_run)
        while not self.flags.stop:
            remaining = wake - self.clock()
            if remaining <= 0:
                return
            time.sleep(min(IDLE_TICK, remaining))
            if self.store.work_version() != version:
                return
            self._upkeep()

    def _pause(self, seconds: float) -> None:
        """Sleep without going silent: a wait that skips heartbeats gets a live worker taken for lost."""
        wake = time.monotonic() + seconds
        while (remaining := wake - time.monotonic()) > 0:
            time.sleep(min(PAUSE_TICK, remaining))
            self._tick()

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

    def _tick(self) -> None:
        """Upkeep while a run goes on or a retry waits: trouble with the database must not end
        the run (its child would run on unwatched), and a failed heartbeat is tried again soon."""
        try:
            self._upkeep()
        except (*DB_ERRORS, QueuectlError) as exc:
            self._next_upkeep = min(self._next_upkeep, self.clock() + 1.0)
            self._say_stuck("upkeep", f"cannot heartbeat ({exc}); trying again every second")

    def _reclaim_orphans(self, now: float, lease: float) -> None:
        for job, pid, host, heartbeat_at in self.store.processing_holders():
            if job.worker_id == self.worker_id or not self._is_lost(job.worker_id, pid, host, heartbeat_at,
                                                                    now, lease):
                continue
            log = self.home.log_path(job.id) if host in (None, HOST) else None  # else: that host's log
            verdict = recover_lost_job(self.store, self.config.current(), self.home, job, self.clock(), log)
            if verdict:
                self.say(f"job {job.id} of lost worker {job.worker_id}: {verdict}")
            self.store.remove_worker(job.worker_id)
        self.store.remove_stale_workers(now, lease)

    def _is_lost(self, worker_id: str, pid: Optional[int], host: Optional[str],
                 heartbeat_at: Optional[float], now: float, lease: float) -> bool:
        """Not heard from within the lease, or its process gone (same host) — unless its pool's
        pidfile in this home proves it alive: a worker frozen, starved of CPU or stuck on the
        database is still alive, whatever its heartbeat says. Other hosts go by heartbeats."""
        heard = heartbeat_at is not None and heartbeat_at >= now - lease
        if heard and not (host == HOST and not pid_alive(pid)):
            return False
        pool_id, _, pid_text = worker_id.rpartition("-")  # the form __init__ gives worker_id
        return not (pid_text.isdigit() and is_pool_worker(self.home, pool_id, int(pid_text)))

    def say(self, text: str) -> None:
        say(text)


def say(text: str) -> None:
    # `text` may quote a job's output (its last line, in an error): never raw to a terminal.
    try:
        print(f"{iso(time.time())} worker {os.getpid()}: {printable(text)}", file=sys.stderr, flush=True)
    except OSError:  # pools.log is on a full disk, say: the worker must go on regardless
        pass


def _share_database(db_url: Optional[str]) -> None:
    """A run's own `queuectl` commands reach the same queue: $QUEUECTL_DB names its database,
    without the URL's password (libpq then finds it in ~/.pgpass or $PGPASSWORD), so a job
    that prints its environment writes no password into its log."""
    from .store import ENV_VAR, redact

    if db_url is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = redact(db_url, keep="")


def _free_bytes(path: str) -> int:
    """Room left for this process's writes on the file system holding `path`."""
    try:
        info = os.statvfs(path)
    except OSError:
        return 0
    blocks = info.f_bfree if os.geteuid() == 0 else info.f_bavail  # root may use the reserve
    return blocks * info.f_frsize


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


def worker_main(home_root: str, pool_id: str, burst: bool, parent_pid: int,
                queues: Optional[list] = None, report_fd: int = -1, db_url: Optional[str] = None) -> None:
    """Process target: plain data in; the store is opened here, never inherited across fork.

    A damaged database ends the worker with EXIT_DAMAGED, its message written to `report_fd`
    (a pipe to the supervisor) when given."""
    flags = Flags()
    _install_signal_handlers(flags)
    executor.become_subreaper()
    home = QueueHome(home_root, db_url)
    os.environ[executor.ENV_HOME] = os.path.realpath(home_root)  # every run inherits it
    _share_database(db_url)
    try:
        store = home.open_store(durable=False)
        try:
            Worker(store, home, pool_id, flags, burst=burst, parent_pid=parent_pid, clock=store.clock,
                   queues=queues).loop()
        finally:
            store.close()
    except DatabaseDamaged as exc:
        say(f"stopping: {exc}")
        if report_fd >= 0:
            try:
                os.write(report_fd, (str(exc)[:1000].replace("\n", " ") + "\n").encode("utf-8", "replace"))
            except OSError:  # the pipe is full of other workers' reports: one is enough
                pass
        sys.exit(EXIT_DAMAGED)
