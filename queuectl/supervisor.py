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
from .errors import QueuectlError, StillRunning
from .home import QueueHome
from .pidfile import PoolRecord, hold_home, read_pools
from .repository import Store
from .timeutil import iso, now
from .worker import recover_lost_job, worker_main

READY_SECONDS = 30.0
RESPAWN_LIMIT = 5  # respawns within RESPAWN_WINDOW before the pool gives up on a crash loop
RESPAWN_WINDOW = 30.0


def say(text: str) -> None:
    print(f"{iso(time.time())} pool {os.getpid()}: {text}", file=sys.stderr, flush=True)


class Supervisor:
    """Owns one pool. Signal handlers only count requests; `run` acts on them."""

    def __init__(self, home: QueueHome, count: int, burst: bool) -> None:
        self.home = home
        self.count = count
        self.burst = burst
        self.pool_id = os.urandom(3).hex()
        self.interrupts = 0  # Ctrl+C presses: the first stops gently, the second forces
        self.stop_requested = False
        self.force_requested = False
        self.workers: dict = {}  # pid -> multiprocessing.Process
        self.respawns: deque = deque()
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
        try:
            for _ in range(self.count):
                self._spawn()
            self._save(record)
            self._announce(ready_fd)
            self._supervise(record, wake_r)
        finally:
            record.remove()
            os.close(anchor)
        say(f"pool {self.pool_id} stopped")
        return 0

    def _spawn(self) -> None:
        process = self._context.Process(
            target=worker_main, args=(self.home.root, self.pool_id, self.burst, os.getpid()),
            name=f"queuectl-worker-{self.pool_id}",
        )
        process.start()
        self.workers[process.pid] = process

    def _save(self, record: PoolRecord) -> None:
        from .pidfile import start_time

        record.workers = {pid: start_time(pid) for pid in self.workers}
        record.save()

    def _announce(self, ready_fd: Optional[int]) -> None:
        pids = " ".join(str(pid) for pid in self.workers)
        say(f"pool {self.pool_id} started {len(self.workers)} worker(s): PIDs {pids}"
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
            if self._reap():
                self._save(record)

    def _relay(self, wanted: tuple) -> None:
        stop, force = wanted
        if force:
            say("forced stop: killing the runs in progress; their jobs go back to pending")
            self._signal_all(signal.SIGUSR1)
        elif stop:
            say("stopping: each worker finishes its current run (Ctrl+C again to kill the runs)")
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
            if process.exitcode != 0:
                say(f"worker {process.pid} died (exit code {process.exitcode})")
                self._recover(process.pid)
            if self.stop_requested or (self.burst and process.exitcode == 0):
                continue
            if self._may_respawn():
                self._spawn()
        return bool(exited)

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
        store = Store.open(self.home.db_path, durable=False)  # opened and closed here: never forked
        try:
            settings = load_config(self.home.config_path)
            for job in store.jobs_of_worker(worker_id):
                verdict = recover_lost_job(store, settings, job, now(), self.home.log_path(job.id))
                if verdict:
                    say(f"job {job.id} of worker {pid}: {verdict}")
            store.remove_worker(worker_id)
        except QueuectlError as exc:
            say(f"could not recover jobs of worker {pid}: {exc}")
        finally:
            store.close()


def _drain(fd: int) -> None:
    while select.select([fd], [], [], 0)[0]:
        if not os.read(fd, 512):
            return


def start_foreground(home: QueueHome, count: int, burst: bool, ready_fd: Optional[int] = None) -> int:
    return Supervisor(home, count, burst).run(ready_fd)


def start_detached(home: QueueHome, count: int, burst: bool) -> tuple:
    """Start the pool in a new session in the background; returns (pool_id, supervisor, workers)."""
    read_end, write_end = os.pipe()
    args = [sys.executable, "-m", "queuectl", "--home", home.root, "worker", "start",
            "--count", str(count), "--ready-fd", str(write_end)] + (["--burst"] if burst else [])
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
            os.execv(sys.executable, args)
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


def stop_pools(home: QueueHome, force: bool, wait: bool, timeout: Optional[float]) -> str:
    """Ask every live pool of this home to stop; wait for them unless told not to."""
    signum = signal.SIGUSR1 if force else signal.SIGTERM
    asked, stale = [], 0
    for pool in read_pools(home):
        if pool.live_supervisor():
            _kill(pool.supervisor, signum)
        elif pool.live_workers():  # the supervisor died (kill -9): tell its workers directly
            for pid in pool.live_workers():
                _kill(pid, signum)
        else:
            PoolRecord.remove(pool)  # stale: names no live process of ours
            stale += 1
            continue
        asked.append(pool)
    note = f" (removed {stale} stale pidfile(s))" if stale else ""
    if not asked:
        return "No worker pools are running" + note
    if not wait:
        return f"Asked {len(asked)} pool(s) to stop" + note
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        running = [pid for pool in asked for pid in pool.live_pids()]
        if not running:
            break
        if deadline is not None and time.monotonic() >= deadline:
            raise StillRunning(f"workers still running after {timeout:g}s: PIDs "
                               f"{' '.join(map(str, running))}")
        time.sleep(0.05)
    for pool in asked:
        PoolRecord.remove(pool)
    return f"Stopped {len(asked)} pool(s)" + note


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
