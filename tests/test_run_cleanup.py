"""What a run leaves behind, and a live worker never taken for lost (issue 10, bugs 1 and 6).

Real pools, real signals, real processes. Each leftover process is a `sleep` whose argv holds a
unique duration (`sleep 100.<digits>`), so the test finds exactly its own processes in /proc and
a finalizer kills whatever a failing test left. Every wait polls with a deadline.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

import pytest

from conftest import Pools, job_state, query, run_cli, wait_until
from queuectl import executor
from queuectl.home import QueueHome
from queuectl.models import NewJob
from queuectl.store.sqlite import SqliteStore as Store
from queuectl.worker import Flags, Worker


def cli_ok(home: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    result = run_cli(home, *args, **kwargs)
    assert result.returncode == 0, result.stderr
    return result


def workers_log(home: str) -> str:
    path = os.path.join(home, "logs", "workers.log")
    if not os.path.exists(path):
        return ""
    with open(path) as handle:
        return handle.read()


def with_marker(marker: str) -> list:
    """Live (non-zombie) processes whose argv holds `marker`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
            with open(f"/proc/{name}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker.encode() in argv and state != b"Z":
            found.append(int(name))
    return found


@pytest.fixture
def marker():
    """A unique sleep duration; whatever still runs with it at the end is killed."""
    value = f"100.{uuid.uuid4().int % 10**9:09d}"
    yield value
    for pid in with_marker(value):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def burst(home: str, count: int = 1, timeout: float = 90) -> None:
    """Run a foreground `worker start --burst` to the end."""
    result = subprocess.run(
        [sys.executable, "-m", "queuectl", "--home", home, "worker", "start", "--burst", "--count", str(count)],
        capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr


def start_pool(pools: Pools, count: int) -> tuple:
    """(supervisor PID, [worker PIDs]) of a new detached pool; the fixture stops it."""
    result = cli_ok(pools.home, "worker", "start", "--count", str(count), "--detach")
    found: dict = {"supervisor": [], "worker": []}
    for line in result.stdout.splitlines():
        label, pid = line.split()
        found[label].append(int(pid))
    pools.pids.extend(found["supervisor"] + found["worker"])
    return found["supervisor"][0], found["worker"]


def holder_pid(home: str, job_id: str):
    rows = query(home, "SELECT worker_id FROM jobs WHERE id = ? AND state = 'processing'", (job_id,))
    return int(rows[0][0].rsplit("-", 1)[1]) if rows else None


def finished(home: str, job_id: str):
    job = job_state(home, job_id)
    return job if job["state"] in ("completed", "dead") else None


# -- bug 1: a live worker is taken for lost ------------------------------------------------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize("lease", ["1", "2"])
def test_a_timed_out_run_that_ignores_sigterm_is_recorded_as_timed_out(home, workdir, pools, marker, lease):
    """The grace period (3 s) outlasts the lease: the killing worker keeps its heartbeat, so the
    other worker never takes its job for lost."""
    cli_ok(home, "config", "set", "lease_seconds", lease)
    cli_ok(home, "enqueue", "--id", "stubborn", "--max-retries", "0", "--timeout", "1",
           f"(trap '' TERM; sleep {marker}) & sleep {marker}", cwd=workdir)
    start_pool(pools, 2)
    job = wait_until(lambda: finished(home, "stubborn"), timeout=60, what="the run to end")
    assert (job["state"], job["attempts"], job["last_error"]) == ("dead", 1, "timed out after 1s")
    assert "lost worker" not in workers_log(home)
    assert with_marker(marker) == []


class Staleness(threading.Thread):
    """Watches, through a connection of its own, how old a worker's heartbeat gets."""

    def __init__(self, db_path: str, worker_id: str) -> None:
        super().__init__(daemon=True)
        self.db_path, self.worker_id = db_path, worker_id
        self.worst = 0.0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
        try:
            while not self.done.wait(0.05):
                row = conn.execute("SELECT heartbeat_at FROM workers WHERE worker_id = ?",
                                   (self.worker_id,)).fetchone()
                if row:
                    self.worst, self.samples = max(self.worst, time.time() - row[0]), self.samples + 1
        finally:
            conn.close()


@pytest.mark.timeout(120)
def test_a_worker_heartbeats_all_through_the_kill_of_a_run(home, workdir, cli, marker):
    """With the smallest lease (1 s), the worker keeps its heartbeat while the run is timed out,
    waited for through the grace period, killed, and waited for again."""
    assert cli("config", "set", "lease_seconds", "1").exit_code == 0
    qhome = QueueHome(home).ensure()
    store = Store.open(qhome.db_path, durable=False)
    try:
        store.insert([NewJob("stubborn", f"trap '' TERM; sleep {marker} & sleep {marker}", 0, 0, 1, 0.0,
                             workdir)], time.time())
        worker = Worker(store, qhome, "test", Flags())
        watcher = Staleness(qhome.db_path, worker.worker_id)
        watcher.start()
        try:
            started = time.monotonic()
            assert worker.run_once()
            took = time.monotonic() - started
        finally:
            watcher.done.set()
            watcher.join()
        job = store.get("stubborn")
    finally:
        store.close()
    assert (job.state, job.last_error) == ("dead", "timed out after 1s")
    assert took >= 1 + executor.GRACE_SECONDS  # it did wait out the grace period
    assert watcher.samples > 40
    # Beats come every lease/3; the bound leaves room for a loaded machine, and is well under
    # the grace period a kill without heartbeats stays silent for.
    assert watcher.worst < 2.0, f"the heartbeat got {watcher.worst:.2f}s old"


def _db_unlocked(home: str) -> bool:
    conn = sqlite3.connect(os.path.join(home, "queue.db"), timeout=0.5, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


@pytest.mark.timeout(120)
def test_a_forced_stop_of_a_run_that_ignores_sigterm_does_not_count_the_attempt(home, workdir, pools, marker):
    """Pool A is force-stopped (SIGUSR1 to its supervisor) during a run that ignores SIGTERM,
    while pool B keeps running with a 1 s lease: the job goes back to pending with the attempt
    not counted, and B then runs it once more to completion."""
    cli_ok(home, "config", "set", "lease_seconds", "1")
    flag = os.path.join(workdir, "ran-once")
    cli_ok(home, "enqueue", "--id", "stubborn", "--max-retries", "0",
           f"[ -e {flag} ] && exit 0; touch {flag}; trap '' TERM; sleep {marker}", cwd=workdir)
    supervisor_a, (worker_a,) = start_pool(pools, 1)
    wait_until(lambda: with_marker(marker), timeout=60, what="the first run")
    assert holder_pid(home, "stubborn") == worker_a
    start_pool(pools, 1)
    os.kill(supervisor_a, signal.SIGUSR1)
    job = wait_until(lambda: finished(home, "stubborn"), timeout=60, what="the second run")
    assert (job["state"], job["attempts"], job["last_error"]) == ("completed", 1, None)
    assert "lost worker" not in workers_log(home)
    assert with_marker(marker) == []


@pytest.mark.timeout(120)
def test_a_stopped_worker_is_not_taken_for_lost(home, workdir, pools, marker):
    """A worker frozen by SIGSTOP sends no heartbeat, but on the same host its process is
    provably alive: the other worker leaves its job alone, however long it stays frozen."""
    cli_ok(home, "config", "set", "lease_seconds", "1")
    cli_ok(home, "enqueue", "--id", "slow", "--max-retries", "0", f"sleep {marker} & sleep 4; kill $!",
           cwd=workdir)
    _, workers = start_pool(pools, 2)
    wait_until(lambda: with_marker(marker), timeout=60, what="the run")
    frozen = holder_pid(home, "slow")
    (other,) = [pid for pid in workers if pid != frozen]
    for _ in range(50):  # freeze it outside a write, or the other worker could not heartbeat either
        os.kill(frozen, signal.SIGSTOP)
        if _db_unlocked(home):
            break
        os.kill(frozen, signal.SIGCONT)
    else:
        pytest.fail("the database stayed locked")
    try:
        frozen_beat = query(home, "SELECT heartbeat_at FROM workers WHERE pid = ?", (frozen,))[0][0]

        def other_beat() -> float:
            rows = query(home, "SELECT heartbeat_at FROM workers WHERE pid = ?", (other,))
            return rows[0][0] if rows else 0.0

        # The other worker's upkeep has run several times while the frozen one was stale.
        wait_until(lambda: other_beat() > frozen_beat + 3.5, timeout=60, what="the other worker's upkeep")
        assert holder_pid(home, "slow") == frozen
    finally:
        os.kill(frozen, signal.SIGCONT)
    job = wait_until(lambda: finished(home, "slow"), timeout=60, what="the run to end")
    assert (job["state"], job["attempts"]) == ("completed", 1), job
    assert "lost worker" not in workers_log(home)


# -- bug 6: a run's processes outlive it ---------------------------------------------------------

LEFTOVERS = {  # the form, and how many processes with the marker it starts
    "background": ("sleep {m} &", 1),
    "setsid": ("setsid sleep {m} &", 1),
    "nohup": ("nohup sleep {m} >/dev/null 2>&1 &", 1),
    "setsid-double-fork": ("setsid sh -c '(setsid sleep {m} &); sleep {m}' &", 2),
    "ignores-sigterm": ("(trap '' TERM; sleep {m}) &", 1),
}


def _until_running(marker: str, count: int) -> str:
    """Shell that waits until `count` processes have the marker in their argv (the pattern is
    bracketed so that grep does not count itself)."""
    pattern = marker.replace(".", "[.]")
    return (f"until [ $(grep -l '{pattern}' /proc/[0-9]*/cmdline 2>/dev/null | wc -l) -ge {count} ];"
            " do sleep 0.05; done")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ending", ["exit", "timeout"])
@pytest.mark.parametrize("leftover", LEFTOVERS)
def test_a_run_leaves_no_process_behind(home, workdir, marker, leftover, ending):
    started = os.path.join(workdir, "started")
    form, count = LEFTOVERS[leftover]
    command = f"{form.format(m=marker)} {_until_running(marker, count)}; touch {started}"
    if ending == "timeout":
        command += "; sleep 30"
    cli_ok(home, "enqueue", "--id", "messy", "--max-retries", "0", "--timeout", "3" if ending == "timeout" else "0",
           command, cwd=workdir)
    burst(home)
    job = job_state(home, "messy")
    assert os.path.exists(started), job  # the leftovers were all up before the run ended
    if ending == "exit":
        assert (job["state"], job["exit_code"]) == ("completed", 0), job
    else:
        assert (job["state"], job["last_error"]) == ("dead", "timed out after 3s"), job
    assert with_marker(marker) == [], f"the {leftover} process outlived its run"


@pytest.mark.timeout(120)
def test_a_forced_stop_leaves_no_process_behind(home, workdir, pools, marker):
    cli_ok(home, "enqueue", "--id", "messy", f"setsid sleep {marker} & sleep {marker}", cwd=workdir)
    start_pool(pools, 1)
    wait_until(lambda: len(with_marker(marker)) == 2, timeout=60, what="the run's processes")
    result = pools.stop("--force", "--timeout", "30")
    assert result.returncode == 0, result.stderr
    assert with_marker(marker) == []
    job = job_state(home, "messy")
    assert (job["state"], job["attempts"]) == ("pending", 0)


# -- kill_strays: only what the lost run left ----------------------------------------------------

def _run_process(marker: str, worker_id: str, job_id: str, attempt: int,
                 home: str = "/srv/q") -> subprocess.Popen:
    """A stand-in for a run's process, with the environment a worker gives a run."""
    env = {**os.environ, executor.ENV_RUN: executor.run_id(worker_id, job_id, attempt), executor.ENV_HOME: home}
    return subprocess.Popen(["sleep", marker], env=env, start_new_session=True)


@pytest.mark.timeout(60)
def test_kill_strays_kills_only_the_lost_run(marker):
    lost = _run_process(marker, "abc123-42", "job1", 2)
    spared = [_run_process(marker, "abc123-42", "job1", 3),   # the same job's next attempt
              _run_process(marker, "abc123-42", "job2", 2),   # the same worker's next job
              _run_process(marker, "abc123-421", "job1", 2),  # another worker, same job and attempt
              _run_process(marker, "abc123-42", "job1", 2, home="/srv/q-copy")]  # a copied home's
    try:
        assert executor.kill_strays("/srv/q", "abc123-42", "job1", 2) == 1
        assert lost.wait(timeout=30) == -signal.SIGKILL
        assert [proc.poll() for proc in spared] == [None, None, None, None]
    finally:
        for proc in [lost, *spared]:
            proc.kill()
            proc.wait()
