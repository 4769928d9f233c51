"""`cancel`: the store's transitions and their guards, the command's refusals, and real pools
stopping a cancelled run (its whole process group, and a child that left it) within a second or so.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import pytest

from conftest import job_state, open_home_store, query, run_cli, store_sql, wait_until
from test_cli import drive, one_error, refused, snapshot
from test_faults import alive, group_members, lines, start_pool
from queuectl.errors import Conflict, NotFound
from queuectl.home import QueueHome
from queuectl.models import COMPLETED, DEAD, FAILED, PENDING, PROCESSING, STATES, NewJob, Outcome
from queuectl.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStore as Store, _statements
from queuectl.worker import record_outcome

pytestmark = pytest.mark.both_backends  # see conftest: each test on SQLite and on PostgreSQL

NOW = 1_700_000_000.0
W1, W2 = "worker-1", "worker-2"
SETTINGS = {"backoff_base": 2, "backoff_max": 3600}


# -- the store -----------------------------------------------------------------------------------

@pytest.fixture
def store(home):
    opened = open_home_store(home)
    yield opened
    opened.close()


def make(store, job_id, state, max_retries=3):
    """A job driven into `state` as a worker would (no other job may be due)."""
    store.insert([NewJob(job_id, "true", max_retries, 0, None, NOW, "/")], NOW)
    if state == PENDING:
        return store.get(job_id)
    job = store.claim_next(W1, NOW)
    if state == COMPLETED:
        assert store.mark_completed(job, W1, NOW)
    elif state == FAILED:
        assert store.mark_failed(job, W1, 1, "exit code 1", NOW + 60, NOW)
    elif state == DEAD:
        assert store.mark_dead(job, W1, 1, "exit code 1", NOW)
    return job if state == PROCESSING else store.get(job_id)


def counts_agree(store) -> bool:
    counted = dict(store_sql(store, "SELECT state, count(*) FROM jobs GROUP BY state"))
    return store.counts() == {state: counted.get(state, 0) for state in STATES}


@pytest.mark.parametrize("state, attempts", [(PENDING, 0), (FAILED, 1)])
def test_a_waiting_job_goes_to_the_dlq_at_once_attempts_unchanged(store, state, attempts):
    make(store, "j", state)
    assert store.cancel(["j"], NOW + 5) == []
    job = store.get("j")
    assert (job.state, job.last_error, job.exit_code, job.attempts, job.updated_at) == \
        (DEAD, "cancelled", None, attempts, NOW + 5)
    assert not store.cancel_requested(job)
    assert store.claim_next(W1, NOW + 3600) is None
    assert counts_agree(store)


def test_a_processing_job_gets_a_request_its_worker_records_as_cancelled(store):
    job = make(store, "j", PROCESSING)
    assert not store.cancel_requested(job)
    assert store.cancel(["j"], NOW + 1) == ["j"]
    assert store.get("j").state == PROCESSING  # until its worker acts
    assert store.cancel_requested(job)
    assert record_outcome(store, SETTINGS, job, W1, Outcome(None, "cancelled", cancelled=True), NOW + 2) \
        == "cancelled"
    done = store.get("j")
    assert (done.state, done.last_error, done.exit_code, done.attempts, done.worker_id) == \
        (DEAD, "cancelled", None, 1, None)
    assert not store.cancel_requested(done)
    assert counts_agree(store)


def test_a_repeated_request_keeps_the_first_time(store):
    job = make(store, "j", PROCESSING)
    assert store.request_cancel("j", NOW + 1) and store.request_cancel("j", NOW + 9)
    assert store_sql(store, "SELECT cancel_requested FROM jobs WHERE id = 'j'")[0][0] == NOW + 1
    assert store.cancel_requested(job)


@pytest.mark.parametrize("outcome", [
    Outcome(1, "exit code 1"),                                       # it failed just as the request came
    Outcome(None, "interrupted by a forced stop", interrupted=True),  # a forced stop killed it first
    Outcome(None, "worker lost"),                                    # its worker died
])
@pytest.mark.parametrize("max_retries", [0, 3])  # dead or retried, had it not been cancelled
def test_once_requested_every_end_of_the_run_but_success_records_cancelled(store, outcome, max_retries):
    job = make(store, "j", PROCESSING, max_retries=max_retries)
    store.request_cancel("j", NOW + 1)
    assert record_outcome(store, SETTINGS, job, W1, outcome, NOW + 2) == "cancelled"
    done = store.get("j")
    assert (done.state, done.last_error, done.exit_code, done.attempts) == (DEAD, "cancelled", None, 1)
    assert counts_agree(store)


def test_the_run_s_own_transitions_are_refused_while_a_cancel_is_requested(store):
    job = make(store, "j", PROCESSING)
    store.request_cancel("j", NOW + 1)
    before = store.get("j")
    assert store.mark_failed(job, W1, 1, "exit code 1", NOW + 9, NOW + 2) is False
    assert store.mark_dead(job, W1, 1, "exit code 1", NOW + 2) is False
    assert store.release(job, W1, NOW + 2) is False
    assert store.get("j") == before


def test_a_success_beats_the_request_and_clears_it(store):
    job = make(store, "j", PROCESSING)
    store.request_cancel("j", NOW + 1)
    assert record_outcome(store, SETTINGS, job, W1, Outcome(0, None), NOW + 2) == "completed"
    assert store.get("j").state == COMPLETED
    assert not store.cancel_requested(job)  # a later requeue must not find a stale request


def test_no_request_is_left_behind_when_a_run_ends_whichever_way(store):
    job = make(store, "j", PROCESSING)
    store.request_cancel("j", NOW + 1)
    assert store.mark_cancelled(job, W1, NOW + 2)
    assert store_sql(store, "SELECT count(*) FROM jobs WHERE cancel_requested IS NOT NULL")[0][0] == 0


@pytest.mark.parametrize("transition", [
    lambda s, job: s.mark_cancelled(job, W2, NOW + 2),           # another worker's record
    lambda s, job: s.cancel_waiting("j", NOW + 2),               # it is not waiting
])
def test_cancel_transitions_of_a_job_that_is_not_theirs_change_nothing(store, transition):
    job = make(store, "j", PROCESSING)
    store.request_cancel("j", NOW + 1)
    before = store.get("j")
    assert transition(store, job) is False
    assert store.get("j") == before


@pytest.mark.parametrize("state", [PENDING, FAILED, COMPLETED, DEAD])
def test_only_a_processing_job_takes_a_request(store, state):
    make(store, "j", state)
    assert store.request_cancel("j", NOW + 1) is False
    assert store_sql(store, "SELECT cancel_requested FROM jobs WHERE id = 'j'")[0][0] is None


def test_a_stale_worker_cannot_cancel_the_job_again_after_it_moved_on(store):
    job = make(store, "j", PROCESSING)
    store.request_cancel("j", NOW + 1)
    assert store.mark_cancelled(job, W1, NOW + 2)
    store.requeue_dead(["j"], NOW + 3)
    again = store.claim_next(W2, NOW + 3)
    assert not store.cancel_requested(again)
    assert store.mark_cancelled(job, W1, NOW + 4) is False
    assert store.get("j").state == PROCESSING and store.get("j").worker_id == W2


@pytest.mark.parametrize("finished", [COMPLETED, DEAD])
def test_cancel_refuses_finished_jobs_all_or_none(store, finished):
    make(store, "done", finished)
    store.insert([NewJob("waiting", "true", 3, 0, None, NOW + 60, "/")], NOW)
    before = store.list_jobs(None, None)
    with pytest.raises(Conflict, match=rf"job done is {finished}.*nothing was cancelled"):
        store.cancel(["waiting", "done"], NOW + 1)
    with pytest.raises(NotFound, match="no job with id 'nope'"):
        store.cancel(["waiting", "nope"], NOW + 1)
    assert store.list_jobs(None, None) == before


@pytest.mark.sqlite_only
def test_the_worker_s_poll_is_one_rowid_lookup(store):
    job = make(store, "j", PROCESSING)
    plan = " ".join(row[-1] for row in store._conn.execute(
        "EXPLAIN QUERY PLAN SELECT cancel_requested FROM jobs WHERE seq = ?", (job.seq,)))
    assert "USING INTEGER PRIMARY KEY" in plan, plan
    assert store.cancel_requested(job) is False


CANCEL_SCHEMA = 5  # the version that added cancel requests


@pytest.mark.sqlite_only
def test_a_database_of_the_previous_version_is_migrated_and_its_running_job_cancelled(home):
    path = QueueHome(home).ensure().db_path
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("PRAGMA journal_mode = WAL")
    for script in MIGRATIONS[:CANCEL_SCHEMA - 1]:
        for statement in _statements(script):
            old.execute(statement)
    old.execute(f"PRAGMA user_version = {CANCEL_SCHEMA - 1}")
    old.close()
    previous = Store(sqlite3.connect(path, isolation_level=None), path)
    previous._conn.execute(
        "INSERT INTO jobs (id, command, state, max_retries, run_at, cwd, created_at, updated_at)"
        " VALUES ('old', 'true', 'pending', 3, ?, '/', ?, ?)", (NOW, NOW, NOW))
    previous._conn.execute("UPDATE job_counts SET n = 1 WHERE state = 'pending'")
    previous._conn.execute(
        "UPDATE jobs SET state = 'processing', attempts = 1, worker_id = ?, started_at = ? WHERE id = 'old'",
        (W1, NOW))
    previous.close()

    store = Store.open(path)
    try:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        job = store.get("old")
        assert not store.cancel_requested(job)
        assert store.cancel(["old"], NOW + 1) == ["old"]
        assert store.mark_failed(job, W1, 1, "x", NOW + 9, NOW + 2) is False
        assert store.mark_cancelled(job, W1, NOW + 2)
        assert (store.get("old").state, store.get("old").last_error) == (DEAD, "cancelled")
        assert counts_agree(store)
    finally:
        store.close()


# -- the command (no worker) ---------------------------------------------------------------------

def enqueue(cli, job_id, *args):
    result = cli("enqueue", "--id", job_id, *args, "true")
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("state", ["pending", "failed"])
def test_cancel_a_waiting_job(cli, home, state):
    enqueue(cli, "job1")
    if state == "failed":
        drive(home, {"job1": "failed"})
    result = cli("cancel", "job")  # a unique prefix
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Cancelled 1 job\n"
    job = cli.json("show", "job1")
    assert (job["state"], job["last_error"], job["exit_code"], job["attempts"]) == \
        ("dead", "cancelled", None, 0 if state == "pending" else 1)
    assert [j["id"] for j in cli.json("dlq", "list")] == ["job1"]


@pytest.mark.parametrize("finished", ["completed", "dead"])
def test_cancel_of_a_finished_job_is_refused_all_or_none(cli, home, finished):
    enqueue(cli, "done")
    drive(home, {"done": finished})
    enqueue(cli, "waiting")
    line = refused(cli, "cancel", "waiting", "done", code=1)
    assert f"job done is {finished}" in line and "nothing was cancelled" in line


@pytest.mark.parametrize("args, code, word", [
    (["nope"], 1, "no job with id or prefix 'nope'"),
    (["job"], 1, "ambiguous"),
    (["job1", "nope"], 1, "no job with id or prefix 'nope'"),
    (["bad id"], 2, "invalid"),
    (["job1", "--timeout", "soon"], 2, "invalid --timeout"),
    (["job1", "--timeout", "-1"], 2, "invalid --timeout"),
    ([], 2, "Missing argument"),
])
def test_cancel_refuses_bad_input_and_changes_nothing(cli, args, code, word):
    enqueue(cli, "job1")
    enqueue(cli, "job2")
    assert word in refused(cli, "cancel", *args, code=code)


def test_cancel_of_a_running_job_whose_worker_does_not_answer_exits_1_and_the_request_stays(cli, home):
    enqueue(cli, "job1")
    enqueue(cli, "waiting", "--delay", "1h")
    drive(home, {"job1": "processing"})  # claimed by a "worker" that never polls
    started = time.monotonic()
    result = cli("cancel", "job1", "waiting", "--timeout", "0.5")
    assert result.exit_code == 1, result.stdout
    assert time.monotonic() - started >= 0.5
    line = one_error(result)
    assert "still processing after 0.5s: job1" in line and "the cancel request stays" in line
    assert "the other 1 job cancelled" in line
    store = open_home_store(home)
    try:
        job = store.get("job1")
        assert job.state == PROCESSING and store.cancel_requested(job)
        assert store.get("waiting").state == DEAD
    finally:
        store.close()


@pytest.mark.sqlite_only
def test_cancel_help_has_an_example_and_the_readme_names_it(cli):
    result = cli("cancel", "--help")
    assert result.exit_code == 0 and "queuectl cancel job1" in result.stdout
    from test_docs import README

    assert "queuectl cancel" in README and "`cancel ID... [--timeout S]`" in README


# -- real pools ----------------------------------------------------------------------------------

def spawn_marks(workdir: str, name: str) -> tuple:
    """A command that leaves its process group id and a setsid child's PID in files, then
    waits on a background child and a foreground one: the shape SPEC's test names."""
    pgid_file, stray_file = os.path.join(workdir, f"{name}.pgid"), os.path.join(workdir, f"{name}.stray")
    command = (f"echo $$ > {pgid_file}; setsid sleep 61 & echo $! > {stray_file}; "
               "sleep 60 & sleep 60; wait")
    return command, pgid_file, stray_file


@pytest.fixture
def strays():
    """PIDs of setsid children, killed at the end if a failed test left them (they escape the
    process group that stopping the pool kills)."""
    found: list = []
    yield found
    for pid in found:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if handle.read().startswith(b"sleep\0"):
                    os.kill(pid, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


def running(home: str, workdir: str, name: str, strays: list) -> tuple:
    """Enqueue a spawn_marks job; once it runs, (pgid, stray PID)."""
    command, pgid_file, stray_file = spawn_marks(workdir, name)
    result = run_cli(home, "enqueue", "--id", name, "--cmd", command, cwd=workdir)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: lines(pgid_file) and lines(stray_file), timeout=60, what=f"{name} to start")
    pgid, stray = int(lines(pgid_file)[0]), int(lines(stray_file)[0])
    strays.append(stray)
    wait_until(lambda: len(group_members(pgid)) >= 3, timeout=30, what=f"{name}'s processes")
    return pgid, stray


@pytest.mark.timeout(150)
def test_a_running_job_is_stopped_from_another_process_and_its_worker_goes_on(home, workdir, pools, strays):
    # Two pools: the request must reach the one that holds the job, and only that job stops.
    _, first = start_pool(pools, 1)
    _, second = start_pool(pools, 1)
    target, target_stray = running(home, workdir, "target", strays)
    other, other_stray = running(home, workdir, "other", strays)

    started = time.monotonic()
    result = run_cli(home, "cancel", "target")
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Cancelled 1 job\n"
    print(f"cancel of a running job took {took:.2f}s")
    assert took < 5, f"cancel took {took:.2f}s"  # ~0.3 s when idle; generous for a loaded machine
    assert group_members(target) == [], "processes of the cancelled run's group are still alive"
    assert not alive(target_stray), "the run's setsid child outlived the cancel"
    job = job_state(home, "target")
    assert (job["state"], job["last_error"], job["exit_code"], job["attempts"]) == ("dead", "cancelled", None, 1)

    assert len(group_members(other)) >= 3 and alive(other_stray), "cancel stopped another job's run"
    assert job_state(home, "other")["state"] == "processing"

    # The worker that held it takes the next job.
    result = run_cli(home, "enqueue", "--id", "next", "echo next", cwd=workdir)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: job_state(home, "next")["state"] == "completed", timeout=60, what="the next job")
    assert all(alive(pid) for pid in first + second), "a worker died"

    result = run_cli(home, "cancel", "other")
    assert result.returncode == 0, result.stderr
    assert group_members(other) == [] and not alive(other_stray)


@pytest.mark.timeout(150)
def test_a_cancel_that_times_out_stays_and_is_carried_out_once_the_worker_resumes(home, workdir, pools, strays, request):
    supervisor, workers = start_pool(pools, 1)
    pgid, stray = running(home, workdir, "target", strays)
    stopped = [supervisor, *workers]
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)

    def resume():
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    request.addfinalizer(resume)  # before the pools fixture stops the pool

    result = run_cli(home, "cancel", "target", "--timeout", "1")
    assert result.returncode == 1, result.stdout
    line = result.stderr.strip()
    assert line.startswith("Error: still processing after 1s: target") and "\n" not in line, line
    assert job_state(home, "target")["state"] == "processing"
    assert len(group_members(pgid)) >= 3, "the run stopped although its worker could not act"

    resume()
    wait_until(lambda: job_state(home, "target")["state"] == "dead", timeout=60, what="the cancel to land")
    job = job_state(home, "target")
    assert (job["last_error"], job["exit_code"], job["attempts"]) == ("cancelled", None, 1)
    assert group_members(pgid) == [] and not alive(stray)


@pytest.mark.timeout(150)
def test_cancel_of_several_where_one_is_completed_changes_nothing(home, workdir, pools, strays):
    start_pool(pools, 1)
    assert run_cli(home, "enqueue", "--id", "done", "true", cwd=workdir).returncode == 0
    wait_until(lambda: job_state(home, "done")["state"] == "completed", timeout=60, what="done")
    pgid, stray = running(home, workdir, "busy", strays)
    assert run_cli(home, "enqueue", "--id", "queued", "true", cwd=workdir).returncode == 0  # behind busy

    before = run_cli(home, "list", "--json", "--limit", "0").stdout
    result = run_cli(home, "cancel", "busy", "queued", "done")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: job done is completed") and result.stderr.count("\n") == 1
    assert result.stdout == ""
    assert run_cli(home, "list", "--json", "--limit", "0").stdout == before
    assert query(home, "SELECT count(*) FROM jobs WHERE cancel_requested IS NOT NULL")[0][0] == 0
    assert len(group_members(pgid)) >= 3 and alive(stray)
    assert json.loads(before)  # not vacuous

    result = run_cli(home, "cancel", "busy", "queued")
    assert result.returncode == 0, result.stderr
    assert group_members(pgid) == [] and not alive(stray)


def test_a_job_claimed_but_not_run_when_the_worker_stops_is_cancelled_if_requested(home, store):
    from queuectl.worker import Flags, Worker

    flags = Flags()
    worker = Worker(store, QueueHome(home).ensure(), "pool", flags)
    make(store, "j", PENDING)
    worker._claimed = store.claim_next(worker.worker_id, NOW)  # as _record claims the next job
    store.request_cancel("j", NOW + 1)
    flags.stop = True  # a stop came before that job's run
    worker.loop()
    job = store.get("j")
    assert (job.state, job.last_error, job.worker_id) == (DEAD, "cancelled", None)
