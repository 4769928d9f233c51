"""The worker engine against real pools, real processes and real signals."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import cli_env, db_url, job_state, open_home_store, run_cli, wait_until
from queuectl.home import QueueHome
from queuectl.models import NewJob
from queuectl.worker import Flags, Worker

pytestmark = pytest.mark.both_backends  # see conftest: each test on SQLite and on PostgreSQL


def enqueue(home, *args, cwd=None):
    result = run_cli(home, "enqueue", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def status(home):
    return json.loads(run_cli(home, "status", "--json").stdout)


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return handle.read().split()


def group_alive(pgid: int) -> bool:
    """Any non-zombie process left in the process group?"""
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != b"Z":
                return True
    return False


# -- the five classic scenarios ------------------------------------------------------------------

def test_success_records_exit_code_and_output(home, workdir):
    enqueue(home, "--id", "hello", "echo hello; echo oops >&2", cwd=workdir)
    assert run_cli(home, "worker", "start", "--burst").returncode == 0
    job = job_state(home, "hello")
    assert (job["state"], job["attempts"], job["exit_code"], job["last_error"]) == ("completed", 1, 0, None)
    output = run_cli(home, "logs", "hello").stdout
    assert "hello" in output and "oops" in output and "run 1 of job hello" in output


def test_retry_with_backoff_into_dlq(home, workdir):
    """max_retries 2, base 2: three runs, 2 s then 4 s apart, then dead."""
    stamps = os.path.join(workdir, "stamps")
    enqueue(home, "--id", "flaky", "--max-retries", "2", f"date +%s.%N >> {stamps}; exit 7", cwd=workdir)
    assert run_cli(home, "worker", "start", "--burst").returncode == 0
    times = [float(t) for t in lines(stamps)]
    assert len(times) == 3
    assert 2.0 <= times[1] - times[0] < 3.5
    assert 4.0 <= times[2] - times[1] < 5.5
    job = job_state(home, "flaky")
    assert (job["state"], job["attempts"], job["exit_code"]) == ("dead", 3, 7)
    dead = json.loads(run_cli(home, "dlq", "list", "--json").stdout)
    assert [d["id"] for d in dead] == ["flaky"]


def test_several_workers_never_run_a_job_twice(home, workdir):
    ran = os.path.join(workdir, "ran")
    jobs = "\n".join(json.dumps({"id": f"j{n}", "command": f"echo j{n} >> {ran}"}) for n in range(300))
    assert run_cli(home, "enqueue", "--file", "-", input=jobs).returncode == 0
    assert run_cli(home, "worker", "start", "--count", "3", "--burst").returncode == 0
    ids = lines(ran)
    assert sorted(ids) == sorted(f"j{n}" for n in range(300))
    assert status(home)["completed"] == 300


def _claim_all(db_path: str, url, worker_id: str, out) -> None:
    from queuectl.store import open_store

    store = open_store(db_path, url, durable=False)
    claimed = []
    while True:
        job = store.claim_next(worker_id, time.time())
        if job is None:
            break
        claimed.append(job.id)
    out.put(claimed)


def test_concurrent_claims_by_processes_take_each_job_once(home):
    """Four processes race BEGIN IMMEDIATE claims over 4,000 jobs: no duplicates, none missed."""
    qhome = QueueHome(home, db_url(home)).ensure()
    store = open_home_store(home)
    jobs = [NewJob(f"c{n}", "true", 0, n % 7, None, 0.0, "/") for n in range(4000)]
    store.insert(jobs, time.time())
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    procs = [context.Process(target=_claim_all, args=(qhome.db_path, qhome.db_url, f"w{n}", out)) for n in range(4)]
    for proc in procs:
        proc.start()
    claimed = [job_id for _ in procs for job_id in out.get(timeout=60)]
    for proc in procs:
        proc.join(timeout=30)
    assert len(claimed) == len(set(claimed)) == 4000
    assert store.counts()["processing"] == 4000


@pytest.mark.sqlite_only
def test_invalid_command_fails_gracefully(home, workdir):
    enqueue(home, "--id", "nope", "--max-retries", "0", "no_such_command_xyz", cwd=workdir)
    assert run_cli(home, "worker", "start", "--burst").returncode == 0
    job = job_state(home, "nope")
    assert job["state"] == "dead" and job["exit_code"] == 127
    assert job["last_error"].startswith("exit code 127:") and "not found" in job["last_error"]


@pytest.mark.sqlite_only
def test_missing_cwd_is_a_failed_run(home, tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    enqueue(home, "--id", "nocwd", "--max-retries", "0", "--cwd", str(gone), "true")
    gone.rmdir()
    assert run_cli(home, "worker", "start", "--burst").returncode == 0
    job = job_state(home, "nocwd")
    assert job["state"] == "dead" and "cannot start" in job["last_error"]


def test_jobs_survive_a_restart(home, workdir, pools):
    ran = os.path.join(workdir, "ran")
    # Long enough for `next` to be enqueued and the stop to arrive while it runs (a CLI call
    # takes ~0.3 s on PostgreSQL, more on a loaded machine).
    enqueue(home, "--id", "long", f"sleep 3; echo long >> {ran}", cwd=workdir)
    pools.start(1)
    wait_until(lambda: job_state(home, "long")["state"] == "processing", what="long to start")
    enqueue(home, "--id", "next", f"echo next >> {ran}", "--priority", "5", cwd=workdir)
    assert pools.stop().returncode == 0  # graceful: the run in progress finishes and is recorded
    assert job_state(home, "long")["state"] == "completed"
    assert job_state(home, "next")["state"] == "pending"
    pools.start(1)
    wait_until(lambda: job_state(home, "next")["state"] == "completed", what="next to complete")
    assert lines(ran) == ["long", "next"]


# -- order, delays, burst ------------------------------------------------------------------------

def test_priority_then_enqueue_order(home, workdir):
    ran = os.path.join(workdir, "ran")
    for job_id, priority in [("a", 0), ("b", 5), ("c", -5), ("d", 0), ("e", -5)]:
        enqueue(home, "--id", job_id, "--priority", str(priority), f"echo {job_id} >> {ran}", cwd=workdir)
    assert run_cli(home, "worker", "start", "--count", "1", "--burst").returncode == 0
    assert lines(ran) == ["c", "e", "a", "d", "b"]


def test_delayed_job_waits_for_run_at(home, workdir, pools):
    stamp = os.path.join(workdir, "stamp")
    enqueue(home, "--id", "later", "--delay", "2s", f"date +%s.%N > {stamp}", cwd=workdir)
    run_at = job_state(home, "later")["run_at"]
    pools.start(1)
    wait_until(lambda: job_state(home, "later")["state"] == "completed", timeout=20, what="delayed job")
    started = float(lines(stamp)[0])
    expected = time.mktime(time.strptime(run_at[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert started >= expected + float("0" + run_at[19:-1]) - 0.01


def test_burst_skips_jobs_first_scheduled_for_later(home, workdir):
    enqueue(home, "--id", "now", "true", cwd=workdir)
    enqueue(home, "--id", "tomorrow", "--delay", "1d", "true", cwd=workdir)
    result = run_cli(home, "worker", "start", "--burst", timeout=30)
    assert result.returncode == 0
    assert job_state(home, "now")["state"] == "completed"
    assert job_state(home, "tomorrow")["state"] == "pending"


# -- stopping ------------------------------------------------------------------------------------

def test_forced_stop_kills_the_group_and_returns_the_job(home, workdir, pools):
    pgid_file = os.path.join(workdir, "pgid")
    enqueue(home, "--id", "stuck", f"echo $$ > {pgid_file}; sleep 60 & sleep 60", cwd=workdir)
    pools.start(1)
    wait_until(lambda: lines(pgid_file), what="the run to start")
    pgid = int(lines(pgid_file)[0])
    result = pools.stop("--force", "--timeout", "20")
    assert result.returncode == 0, result.stderr
    job = job_state(home, "stuck")
    assert (job["state"], job["attempts"]) == ("pending", 0)
    assert not group_alive(pgid)


@pytest.mark.sqlite_only
def test_stop_timeout_exits_1_while_a_run_goes_on(home, workdir, pools):
    marker = os.path.join(workdir, "started")
    enqueue(home, "--id", "slow", f"touch {marker}; sleep 5", cwd=workdir)
    pools.start(1)
    wait_until(lambda: os.path.exists(marker), what="the run to start")
    result = pools.stop("--timeout", "0.5")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("Error:") and "still running" in result.stderr
    assert pools.stop().returncode == 0
    assert job_state(home, "slow")["state"] == "completed"


@pytest.mark.sqlite_only
def test_foreground_pool_ctrl_c_once_finishes_the_run(home, workdir):
    marker = os.path.join(workdir, "started")
    enqueue(home, "--id", "j", f"touch {marker}; sleep 1", cwd=workdir)
    pool = subprocess.Popen([sys.executable, "-m", "queuectl", "--home", home, "worker", "start", "--count", "2"],
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=cli_env(home))
    try:
        wait_until(lambda: os.path.exists(marker), what="the run to start")
        os.killpg(pool.pid, signal.SIGINT)  # as a terminal does: the whole foreground group
        assert pool.wait(timeout=30) == 0
    finally:
        if pool.poll() is None:
            os.killpg(pool.pid, signal.SIGKILL)
    job = job_state(home, "j")
    assert (job["state"], job["attempts"]) == ("completed", 1)
    assert not [p for p in os.listdir(home) if p.endswith(".pid")]


@pytest.mark.sqlite_only
def test_foreground_pool_ctrl_c_twice_forces(home, workdir):
    marker = os.path.join(workdir, "started")
    enqueue(home, "--id", "j", f"touch {marker}; sleep 60", cwd=workdir)
    pool = subprocess.Popen([sys.executable, "-m", "queuectl", "--home", home, "worker", "start"],
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=cli_env(home))
    try:
        wait_until(lambda: os.path.exists(marker), what="the run to start")
        os.killpg(pool.pid, signal.SIGINT)
        seen: list = []  # this pool's lines only (a list shared across tests saw an earlier pool's)
        wait_until(lambda: "Ctrl+C again" in "".join(_read_some(pool, seen)), what="first Ctrl+C noticed")
        os.killpg(pool.pid, signal.SIGINT)
        assert pool.wait(timeout=30) == 0
    finally:
        if pool.poll() is None:
            os.killpg(pool.pid, signal.SIGKILL)
    job = job_state(home, "j")
    assert (job["state"], job["attempts"]) == ("pending", 0)


def _read_some(proc, _seen: list):
    import select

    while select.select([proc.stderr], [], [], 0)[0]:
        line = proc.stderr.readline()
        if not line:
            break
        _seen.append(line)
    return _seen


# -- timeouts and crashes ------------------------------------------------------------------------

@pytest.mark.sqlite_only
def test_timeout_kills_the_whole_group(home, workdir):
    pgid_file = os.path.join(workdir, "pgid")
    enqueue(home, "--id", "hang", "--timeout", "1", "--max-retries", "0",
            f"echo $$ > {pgid_file}; sleep 60 & sleep 60", cwd=workdir)
    assert run_cli(home, "worker", "start", "--burst").returncode == 0
    job = job_state(home, "hang")
    assert job["state"] == "dead" and job["last_error"] == "timed out after 1s"
    assert not group_alive(int(lines(pgid_file)[0]))


def test_killed_worker_job_is_taken_back_as_worker_lost(home, workdir, pools):
    """SIGKILL a worker mid-run: its job counts a failed run "worker lost" and is retried."""
    marker = os.path.join(workdir, "first")
    # First run: leaves a marker and hangs; the retry finds the marker and succeeds.
    command = f"if [ -e {marker} ]; then echo second; else touch {marker}; sleep 60; fi"
    run_cli(home, "config", "set", "backoff_base", "1")
    enqueue(home, "--id", "victim", command, cwd=workdir)
    pids = pools.start(1)
    wait_until(lambda: os.path.exists(marker), what="the first run")
    os.kill(pids[1], signal.SIGKILL)  # pids[0] is the supervisor
    job = wait_until(lambda: (j := job_state(home, "victim"))["state"] == "completed" and j, timeout=20,
                     what="the retry to complete")
    assert job["attempts"] == 2
    assert "run 2 of job victim" in run_cli(home, "logs", "victim").stdout


@pytest.mark.sqlite_only
def test_supervisor_killed_workers_finish_and_stop_copes(home, workdir, pools):
    enqueue(home, "--id", "j", "sleep 1", cwd=workdir)
    supervisor, worker = pools.start(1)
    wait_until(lambda: job_state(home, "j")["state"] == "processing", what="the run to start")
    os.kill(supervisor, signal.SIGKILL)
    # The orphaned worker notices, finishes its run, records it and exits.
    wait_until(lambda: job_state(home, "j")["state"] == "completed", timeout=20, what="the run to finish")
    wait_until(lambda: not os.path.exists(f"/proc/{worker}") or _zombie(worker), timeout=20, what="worker exit")
    result = pools.stop()
    assert result.returncode == 0 and "stale" in result.stderr
    assert not [p for p in os.listdir(home) if p.endswith(".pid")]


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


# -- inspection: logs -f, wait, worker status, live config ---------------------------------------

def test_wait_exit_codes(home, workdir, pools):
    enqueue(home, "--id", "good", "true", cwd=workdir)
    enqueue(home, "--id", "bad", "--max-retries", "0", "false", cwd=workdir)
    enqueue(home, "--id", "later", "--delay", "1h", "true", cwd=workdir)
    pools.start(1)
    assert run_cli(home, "wait", "good", "--timeout", "20").returncode == 0
    assert run_cli(home, "wait", "good", "bad", "--timeout", "20").returncode == 1
    assert run_cli(home, "wait", "later", "--timeout", "0.3").returncode == 124


def test_logs_follow_streams_until_the_job_ends(home, workdir, pools):
    enqueue(home, "--id", "talk", "echo one; sleep 0.5; echo two", cwd=workdir)
    pools.start(1)
    result = run_cli(home, "logs", "talk", "--follow", timeout=30)
    assert result.returncode == 0
    assert "one" in result.stdout and "two" in result.stdout
    assert job_state(home, "talk")["state"] == "completed"


def test_worker_status_shows_the_running_job(home, workdir, pools):
    marker = os.path.join(workdir, "started")
    enqueue(home, "--id", "busy", f"touch {marker}; sleep 30", cwd=workdir)
    supervisor, *workers = pools.start(2)
    wait_until(lambda: os.path.exists(marker), what="the run to start")
    listed = json.loads(run_cli(home, "worker", "status", "--json").stdout)
    assert sorted(w["pid"] for w in listed) == sorted(workers)
    assert [w["job"] for w in listed if w["job"]] == ["busy"]
    assert len(status(home)["workers"]) == 2


def test_config_changes_reach_running_workers(home, workdir, pools):
    enqueue(home, "--id", "warmup", "true", cwd=workdir)
    pools.start(1)
    wait_until(lambda: job_state(home, "warmup")["state"] == "completed", what="warmup")
    assert run_cli(home, "config", "set", "backoff_base", "1000").returncode == 0
    assert run_cli(home, "config", "set", "backoff_max", "500").returncode == 0
    enqueue(home, "--id", "fails", "false", cwd=workdir)
    job = wait_until(lambda: (j := job_state(home, "fails"))["state"] == "failed" and j, what="failure")
    delay = _epoch(job["run_at"]) - _epoch(job["updated_at"])
    assert 499 <= delay <= 501


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# -- the worker with a fake clock: backoff without sleeping --------------------------------------

class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def test_backoff_with_a_fake_clock(home, workdir):
    qhome = QueueHome(home, db_url(home)).ensure()
    store = open_home_store(home)
    clock = FakeClock(1_000_000.0)
    store.insert([NewJob("f", "exit 1", 2, 0, None, clock.now, workdir)], clock.now)
    worker = Worker(store, qhome, "test", Flags(), clock=clock)
    expected = [("failed", 2.0), ("failed", 4.0), ("dead", None)]
    for state, delay in expected:
        assert worker.run_once()
        job = store.get("f")
        assert job.state == state
        if delay is not None:
            assert job.run_at == clock.now + delay
            assert not worker.run_once()  # not due before the backoff has passed
            clock.now = job.run_at
    assert store.get("f").attempts == 3
