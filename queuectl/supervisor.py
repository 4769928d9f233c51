"""The pool: spawn N worker processes, own the pidfile, relay signals, respawn, stop."""
from __future__ import annotations

import multiprocessing
import os
import select
import signal
import sys
import time
from collections import deque
from typing import Optional

from .config import load as load_config
from .errors import NotFound, QueuectlError, StillRunning
from .home import QueueHome
from .pidfile import PoolRecord, hold_home, live_pools, read_pools
from .render import plural, printable
from .store import DB_ERRORS, ENV_VAR as DB_ENV
from .timeutil import iso
from .worker import EXIT_DAMAGED, recover_lost_job, worker_main

READY_SECONDS = 30.0
RESPAWN_LIMIT = 5  # respawns within RESPAWN_WINDOW before the pool gives up on a crash loop
RESPAWN_WINDOW = 30.0


def say(text: str) -> None:
    # `text` may quote a job's output (a lost job's verdict): never raw to a terminal.
    try:
        print(f"{iso(time.time())} pool {os.getpid()}: {printable(text)}", file=sys.stderr, flush=True)
    except OSError:  # pools.log is on a full disk, say: the pool must go on regardless
        pass


class Supervisor:
    """Owns one pool. Signal handlers only count requests; `run` acts on them."""

    def __init__(self, home: QueueHome, count: int, burst: bool, queues: Optional[list] = None) -> None:
        self.home = home
        self.count = count
        self.burst = burst
        self.queues = queues  # the named queues its workers serve; None: every queue
        self.pool_id = os.urandom(3).hex()
        self.interrupts = 0  # Ctrl+C presses: the first stops gently, the second forces
        self.stop_requested = False
        self.force_requested = False
        self.workers: dict = {}  # pid -> multiprocessing.Process
        self.respawns: deque = deque()
        self.damage: Optional[str] = None  # a worker found the database damaged: the pool stops
        self._reports = (-1, -1)  # a pipe: workers write why they stopped (the damage) into it
        self._unsaved = False  # the pidfile could not be updated (a full disk)
        self._context = multiprocessing.get_context("fork")  # fast; we hold no connection when forking

    # -- signals ---------------------------------------------------------------------------

    def _install_handlers(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)  # a signal wakes the wait below at once

        def on_interrupt(signum, frame):
            self.interrupts += 1
            self.stop_requested = True
            self.force_requested = self.force_requested or self.interrupts > 1

        def on_term(signum, frame):
            self.stop_requested = True

        def on_force(signum, frame):
            self.stop_requested = self.force_requested = True

        signal.signal(signal.SIGINT, on_interrupt)
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGHUP, on_term)
        signal.signal(signal.SIGUSR1, on_force)
        return wake_r

    # -- the pool --------------------------------------------------------------------------

    def run(self, ready_fd: Optional[int] = None) -> int:
        wake_r = self._install_handlers()
        remove_stale_pidfiles(self.home)
        anchor = hold_home(self.home.root)
        record = PoolRecord.create(self.home, self.pool_id)
        self._reports = os.pipe()
        for fd in self._reports:  # a worker never blocks on a full pipe, nor this process on an empty one
            os.set_blocking(fd, False)
        try:
            for _ in range(self.count):
                self._spawn()
            self._save(record)
            self._announce(ready_fd)
            self._supervise(record, wake_r)
        finally:
            self._close(record)
            os.close(anchor)
            for fd in self._reports:
                os.close(fd)
        if self.damage:
            raise QueuectlError(f"worker pool {self.pool_id} stopped: {self.damage}")
        say(f"pool {self.pool_id} stopped")
        return 0

    def _close(self, record: PoolRecord) -> None:
        """Remove the pidfile; after damage, keep it saying why, for `worker stop` to report."""
        if self.damage:
            record.workers, record.stopped = {}, self.damage
            try:
                record.save()
                return
            except OSError:
                pass
        record.remove()

    def _spawn(self) -> None:
        process = self._context.Process(
            target=worker_main, args=(self.home.root, self.pool_id, self.burst, os.getpid(), self.queues),
            kwargs={"report_fd": self._reports[1], "db_url": self.home.db_url}, name=f"queuectl-worker-{self.pool_id}",
        )
        process.start()
        self.workers[process.pid] = process

    def _save(self, record: PoolRecord) -> None:
        from .pidfile import start_time

        record.workers = {pid: start_time(pid) for pid in self.workers}
        try:
            record.save()
            self._unsaved = False
        except OSError as exc:  # a full disk must not end the pool: try again at the next wake-up
            if not self._unsaved:
                say(f"cannot update the pidfile {record.path} ({exc.strerror}); trying again")
            self._unsaved = True

    def _announce(self, ready_fd: Optional[int]) -> None:
        pids = " ".join(str(pid) for pid in self.workers)
        say(f"pool {self.pool_id} started {plural(len(self.workers), 'worker')}: PIDs {pids}"
            + ("" if ready_fd is not None else "; Ctrl+C stops gracefully, twice kills the runs"))
        if ready_fd is not None:
            os.write(ready_fd, f"ready {self.pool_id} {os.getpid()} {pids}\n".encode())
            os.close(ready_fd)

    def _supervise(self, record: PoolRecord, wake_r: int) -> None:
        relayed = (False, False)
        while self.workers:
            sentinels = [p.sentinel for p in self.workers.values()]
            select.select(sentinels + [wake_r], [], [], 5.0)  # a worker exited, or a signal came
            _drain(wake_r)
            wanted = (self.stop_requested, self.force_requested)
            if wanted != relayed:
                self._relay(wanted)
                relayed = wanted
            if self._reap() or self._unsaved:
                self._save(record)

    def _relay(self, wanted: tuple) -> None:
        stop, force = wanted
        if force:
            say("forced stop: killing the runs in progress; their jobs go back to pending")
            self._signal_all(signal.SIGUSR1)
        elif stop:
            say("the database is damaged: stopping the other workers after their current run" if self.damage
                else "stopping: each worker finishes its current run (Ctrl+C again to kill the runs)")
            self._signal_all(signal.SIGTERM)

    def _signal_all(self, signum: int) -> None:
        for pid in self.workers:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _reap(self) -> bool:
        """Collect exited workers; recover and replace the ones that died. True if any exited."""
        exited = [p for p in self.workers.values() if not p.is_alive()]
        for process in exited:
            del self.workers[process.pid]
            if process.exitcode == EXIT_DAMAGED:
                self._on_damage()
                continue
            if process.exitcode != 0:
                say(f"worker {process.pid} died (exit code {process.exitcode})")
                self._recover(process.pid)
            if self.stop_requested or (self.burst and process.exitcode == 0):
                continue
            if self._may_respawn():
                self._spawn()
        return bool(exited)

    def _on_damage(self) -> None:
        """A worker found the database damaged: no retry or respawn can help, so stop them all."""
        report = []
        try:
            while True:
                chunk = os.read(self._reports[0], 65536)
                if not chunk:
                    break
                report += chunk.decode("utf-8", "replace").splitlines()
        except BlockingIOError:
            pass
        if self.damage is None:
            self.damage = report[0] if report else f"database {self.home.db_path} is damaged; run `queuectl check`"
        self.stop_requested = True

    def _may_respawn(self) -> bool:
        moment = time.monotonic()
        while self.respawns and moment - self.respawns[0] > RESPAWN_WINDOW:
            self.respawns.popleft()
        if len(self.respawns) >= RESPAWN_LIMIT:
            say(f"workers keep dying ({RESPAWN_LIMIT} in {RESPAWN_WINDOW:g}s); not replacing them")
            return False
        self.respawns.append(moment)
        return True

    def _recover(self, pid: int) -> None:
        """Take back a dead worker's job now rather than after the lease runs out."""
        worker_id = f"{self.pool_id}-{pid}"
        store = self.home.open_store(durable=False)  # opened and closed here: never forked
        try:
            settings = load_config(self.home.settings(lambda: store))
            for job in store.jobs_of_worker(worker_id):
                verdict = recover_lost_job(store, settings, self.home, job, store.clock(), self.home.log_path(job.id))
                if verdict:
                    say(f"job {job.id} of worker {pid}: {verdict}")
            store.remove_worker(worker_id)
        except (QueuectlError, *DB_ERRORS) as exc:
            say(f"could not recover jobs of worker {pid}: {exc}")
        finally:
            store.close()


def _drain(fd: int) -> None:
    while select.select([fd], [], [], 0)[0]:
        if not os.read(fd, 512):
            return


def start_foreground(home: QueueHome, count: int, burst: bool, ready_fd: Optional[int] = None,
                     queues: Optional[list] = None) -> int:
    return Supervisor(home, count, burst, queues).run(ready_fd)


def start_detached(home: QueueHome, count: int, burst: bool, queues: Optional[list] = None) -> tuple:
    """Start the pool in a new session in the background; returns (pool_id, supervisor, workers)."""
    read_end, write_end = os.pipe()
    args = [sys.executable, "-m", "queuectl", "--home", home.root, "worker", "start",
            "--count", str(count), "--ready-fd", str(write_end)] + (["--burst"] if burst else [])
    for name in queues or ():
        args += ["--queue", name]
    environ = dict(os.environ)
    if home.db_url is not None:  # in the environment, not argv, where `ps` would show a password
        environ[DB_ENV] = home.db_url
    pid = os.fork()
    if pid == 0:  # child: become a daemon in its own session, then a fresh interpreter
        try:
            os.close(read_end)
            os.setsid()
            null = os.open(os.devnull, os.O_RDONLY)
            log = os.open(home.pool_log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.set_inheritable(write_end, True)
            os.execve(sys.executable, args, environ)
        finally:
            os._exit(127)
    os.close(write_end)
    line = _read_line(read_end, READY_SECONDS)
    os.close(read_end)
    if not line.startswith("ready "):
        os.waitpid(pid, os.WNOHANG)
        raise QueuectlError(f"the worker pool did not start; see {home.pool_log_path}")
    _, pool_id, supervisor, *workers = line.split()
    return pool_id, int(supervisor), [int(w) for w in workers]


def _read_line(fd: int, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    data = b""
    while b"\n" not in data and time.monotonic() < deadline:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def remove_stale_pidfiles(home: QueueHome) -> int:
    """Remove pidfiles left by pools killed outright (kill -9, power loss); returns how many."""
    stale = [pool for pool in read_pools(home) if not pool.live_pids()]
    for pool in stale:
        PoolRecord.remove(pool)
    return len(stale)


def stop_pools(home: QueueHome, force: bool, wait: bool, timeout: Optional[float], workers: list,
               only: Optional[str] = None) -> str:
    """Ask the live pools of this home (or the one named `only`) to stop; wait for them unless
    told not to. `workers` are the live rows of the workers table: they find a pool whose
    pidfile is gone. A pool that stopped by itself (its database is damaged) makes this fail,
    saying why, once."""
    signum = signal.SIGUSR1 if force else signal.SIGTERM
    asked, stale = live_pools(home, workers)
    if only is not None:
        asked = _the_pool(asked, only)
    failed = [f"worker pool {pool.pool_id} had stopped by itself: {pool.stopped}" for pool in stale if pool.stopped]
    for pool in stale:
        PoolRecord.remove(pool)  # names no live process of ours
    for pool in asked:
        if pool.live_supervisor():
            _kill(pool.supervisor, signum)
        else:  # the supervisor died (kill -9): tell its workers directly
            for pid in pool.live_workers():
                _kill(pid, signum)
    if asked and wait:
        _wait_for(asked, timeout)
        for pool in asked:
            PoolRecord.remove(pool)
    if failed:
        raise QueuectlError("; ".join(failed))
    unexplained = len(stale) - len(failed)
    note = f" (removed {plural(unexplained, 'stale pidfile')})" if unexplained else ""
    if not asked:
        return "No worker pools are running" + note
    return (f"Stopped {plural(len(asked), 'pool')}" if wait else f"Asked {plural(len(asked), 'pool')} to stop") + note


def _the_pool(pools: list, pool_id: str) -> list:
    chosen = [pool for pool in pools if pool.pool_id == pool_id]
    if not chosen:
        running = ", ".join(pool.pool_id for pool in pools) or "none"
        raise NotFound(f"no pool {pool_id} runs in this queue home (running: {running})")
    return chosen


def _wait_for(pools: list, timeout: Optional[float]) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        running = [pid for pool in pools for pid in pool.live_pids()]
        if not running:
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise StillRunning(f"workers still running after {timeout:g}s: PIDs "
                               f"{' '.join(map(str, running))}")
        time.sleep(0.05)


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
