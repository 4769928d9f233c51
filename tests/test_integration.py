"""The seams between issues 10, 11 and 12, end to end: the real CLI, real pools, a real database.

Each test crosses features that were built on separate branches (cancel and run history,
dependencies and requeue, named queues and metrics, damage and `--queue` pools, timeouts and
leases, a run's environment), so it fails if the wiring between them goes missing.
"""
from __future__ import annotations

import json
import os
import signal
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import job_state, run_cli, wait_until
from test_damage import enqueue_many, overwrite_root_page
from queuectl.home import QueueHome
from queuectl.pidfile import pid_alive

pytestmark = pytest.mark.both_backends  # see conftest: each test on SQLite and on PostgreSQL


def enqueue(home: str, workdir: str, *args: str) -> None:
    result = run_cli(home, "enqueue", *args, cwd=workdir)
    assert result.returncode == 0, result.stderr


def samples(home: str) -> dict:
    """{(sample name, sorted labels): value} of `metrics`, read by the real Prometheus parser."""
    result = run_cli(home, "metrics")
    assert result.returncode == 0, result.stderr
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(result.stdout) for s in family.samples}


def gauge(home: str, name: str, **labels: str) -> dict:
    """The samples of family `name` whose labels include `labels`, keyed by their other labels."""
    found = {}
    for (sample, pairs), value in samples(home).items():
        pairs = dict(pairs)
        if sample == name and all(pairs.get(k) == v for k, v in labels.items()):
            found[tuple(v for k, v in sorted(pairs.items()) if k not in labels)] = value
    return found


def runs_of(home: str, job_id: str) -> list:
    return [(r["attempt"], r["outcome"], r["exit_code"], r["error"]) for r in job_state(home, job_id)["runs"]]


def by_outcome(home: str, *args: str) -> dict:
    result = run_cli(home, "stats", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["runs"]["by_outcome"]


def brief(home: str, job_id: str) -> tuple:
    job = job_state(home, job_id)
    return job["state"], job["attempts"], job["last_error"]


def processing(home: str, job_id: str):
    return wait_until(lambda: job_state(home, job_id)["state"] == "processing", timeout=30,
                      what=f"{job_id} to start")


# -- cancel, run history and dependencies ---------------------------------------------------------

@pytest.mark.timeout(120)
def test_a_cancelled_run_is_history_stats_and_metrics_and_its_chain_dies_and_revives(home, workdir, pools):
    flag = os.path.join(workdir, "fixed")
    enqueue(home, workdir, "--id", "first", "--queue", "q1", f"test -e {flag} || sleep 60")
    enqueue(home, workdir, "--id", "second", "--queue", "q2", "--after", "first", "true")
    enqueue(home, workdir, "--id", "third", "--after", "second", "true")
    pools.start(2)
    processing(home, "first")
    result = run_cli(home, "cancel", "first", "--timeout", "30")
    assert result.returncode == 0, result.stderr

    job = job_state(home, "first")
    assert (job["state"], job["last_error"], job["exit_code"], job["attempts"]) == ("dead", "cancelled", None, 1)
    assert runs_of(home, "first") == [(1, "cancelled", None, "cancelled")]
    # The chain died with it at once: no worker had to act for them.
    assert brief(home, "second") == ("dead", 0, "dependency first is dead")
    assert brief(home, "third") == ("dead", 0, "dependency second is dead")
    assert runs_of(home, "second") == runs_of(home, "third") == []
    assert by_outcome(home) == {"cancelled": 1}
    assert by_outcome(home, "--queue", "q1") == {"cancelled": 1}
    assert by_outcome(home, "--queue", "q2") == {}
    totals = gauge(home, "queuectl_runs_total", outcome="cancelled")
    assert totals == {("q1",): 1, ("q2",): 0, ("default",): 0}

    open(flag, "w").close()
    result = run_cli(home, "requeue", "first")
    assert result.returncode == 0, result.stderr
    assert run_cli(home, "wait", "third", "--timeout", "60", timeout=90).returncode == 0
    assert [brief(home, j)[:2] for j in ("first", "second", "third")] == [("completed", 1)] * 3
    assert by_outcome(home) == {"completed": 3, "cancelled": 1}


@pytest.mark.timeout(120)
@pytest.mark.sqlite_only
def test_dlq_retry_of_a_job_that_died_by_failing_brings_its_chain_back(home, workdir, pools):
    flag = os.path.join(workdir, "fixed")
    enqueue(home, workdir, "--id", "first", "--max-retries", "0", f"test -e {flag}")
    enqueue(home, workdir, "--id", "second", "--after", "first", "true")
    enqueue(home, workdir, "--id", "third", "--after", "second", "true")
    pools.start(1)
    wait_until(lambda: job_state(home, "third")["state"] == "dead", timeout=60, what="the chain to die")
    assert runs_of(home, "first") == [(1, "failed", 1, "exit code 1")]
    assert brief(home, "second") == ("dead", 0, "dependency first is dead")
    assert brief(home, "third") == ("dead", 0, "dependency second is dead")
    dead = json.loads(run_cli(home, "dlq", "list", "--json").stdout)
    assert sorted(job["id"] for job in dead) == ["first", "second", "third"]

    open(flag, "w").close()
    result = run_cli(home, "dlq", "retry", "first")
    assert result.returncode == 0, result.stderr
    assert run_cli(home, "wait", "first", "second", "third", "--timeout", "60", timeout=90).returncode == 0
    assert run_cli(home, "dlq", "list", "--json").stdout.strip() == "[]"


# -- queues in stats and metrics --------------------------------------------------------------------

@pytest.mark.timeout(120)
@pytest.mark.sqlite_only
def test_runs_carry_their_queue_into_stats_and_metrics(home, workdir):
    for n in range(2):
        enqueue(home, workdir, "--id", f"a{n}", "--queue", "alpha", "true")
    enqueue(home, workdir, "--id", "b0", "--queue", "beta", "--max-retries", "0", "exit 3")
    result = run_cli(home, "worker", "start", "--burst", "--count", "2", timeout=90)
    assert result.returncode == 0, result.stderr

    assert by_outcome(home, "--queue", "alpha") == {"completed": 2}
    assert by_outcome(home, "--queue", "beta") == {"failed": 1}
    assert by_outcome(home) == {"completed": 2, "failed": 1}
    completed = gauge(home, "queuectl_runs_total", outcome="completed")
    failed = gauge(home, "queuectl_runs_total", outcome="failed")
    assert (completed, failed) == ({("alpha",): 2, ("beta",): 0}, {("alpha",): 0, ("beta",): 1})
    assert gauge(home, "queuectl_run_duration_seconds_count") == {("alpha",): 2, ("beta",): 1}
    assert gauge(home, "queuectl_jobs", state="completed") == {("alpha",): 2, ("beta",): 0}
    assert gauge(home, "queuectl_jobs", state="dead") == {("alpha",): 0, ("beta",): 1}


@pytest.mark.sqlite_only
def test_paused_follows_pause_and_resume_of_every_queue_and_of_one(home, workdir):
    enqueue(home, workdir, "--queue", "alpha", "true")
    enqueue(home, workdir, "--queue", "beta", "true")

    def paused() -> dict:
        return {queue: value for (queue,), value in gauge(home, "queuectl_paused").items()}

    steps = [
        (("pause", "alpha"), {"alpha": 1, "beta": 0}),
        (("pause",), {"alpha": 1, "beta": 1}),
        (("resume", "alpha"), {"alpha": 0, "beta": 1}),  # every queue but alpha
        (("resume",), {"alpha": 0, "beta": 0}),
        (("pause", "gamma"), {"alpha": 0, "beta": 0, "gamma": 1}),  # a queue with no job yet
        (("resume", "gamma"), {"alpha": 0, "beta": 0}),
    ]
    for args, expected in steps:
        result = run_cli(home, *args)
        assert result.returncode == 0, result.stderr
        assert paused() == expected, args


def test_jobs_and_oldest_due_per_queue(home, workdir):
    run_cli(home, "pause", "gamma")
    enqueue(home, workdir, "--queue", "alpha", "true")
    enqueue(home, workdir, "--queue", "alpha", "true")
    enqueue(home, workdir, "--queue", "beta", "--delay", "1h", "true")
    enqueue(home, workdir, "--queue", "gamma", "true")
    assert gauge(home, "queuectl_jobs", state="pending") == {("alpha",): 2, ("beta",): 1, ("gamma",): 1}
    assert gauge(home, "queuectl_jobs", state="processing") == {("alpha",): 0, ("beta",): 0, ("gamma",): 0}
    oldest = wait_until(lambda: (lambda o: o if o[("alpha",)] >= 0.5 else None)(
        gauge(home, "queuectl_oldest_due_seconds")), timeout=30, what="the alpha jobs to wait")
    assert 0.5 <= oldest[("alpha",)] < 60
    # beta's one job is not due for an hour; gamma's waits for a person (README: not counted).
    assert oldest[("beta",)] == oldest[("gamma",)] == 0
    for queue, waiting in (("alpha", True), ("beta", False), ("gamma", False)):
        now = json.loads(run_cli(home, "stats", "--queue", queue, "--json").stdout)["now"]
        assert (now["oldest_due_seconds"] is not None) is waiting, queue


@pytest.mark.timeout(120)
def test_a_job_waiting_for_a_full_queue_is_waiting(home, workdir, pools):
    """A limit holds a backlog back, but nobody has to act for it to move: its wait is what an
    alert on queuectl_oldest_due_seconds is for (a paused queue's is not)."""
    assert run_cli(home, "queue", "limit", "alpha", "1").returncode == 0
    enqueue(home, workdir, "--id", "hog", "--queue", "alpha", "sleep 60")
    enqueue(home, workdir, "--id", "next", "--queue", "alpha", "true")
    pools.start(2)
    processing(home, "hog")
    oldest = wait_until(lambda: (lambda o: o if o[("alpha",)] >= 1 else None)(
        gauge(home, "queuectl_oldest_due_seconds")), timeout=30, what="the backlog to show")
    assert oldest[("alpha",)] < 60 and job_state(home, "next")["state"] == "pending"
    now = json.loads(run_cli(home, "stats", "--queue", "alpha", "--json").stdout)["now"]
    assert now["oldest_due_seconds"] >= 1


@pytest.mark.timeout(120)
def test_a_dependent_is_due_from_when_its_parent_completed_not_from_its_enqueue(home, workdir, pools):
    """While it waits for its parent a job is not due (the claim order says so): neither the
    oldest-due gauge nor the wait in stats may count the parent's run as its wait."""
    # The child's true wait is what this test takes between the parent's end and the child's
    # start (a few CLI calls: up to ~4 s on a loaded machine with PostgreSQL's slower start-up),
    # never the parent's 10 s run.
    enqueue(home, workdir, "--id", "parent", "--queue", "alpha", "sleep 10")
    enqueue(home, workdir, "--id", "child", "--queue", "beta", "--after", "parent", "true")
    pools.start(1, "--queue", "alpha")
    wait_until(lambda: job_state(home, "parent")["state"] == "completed", timeout=60, what="the parent")
    assert gauge(home, "queuectl_oldest_due_seconds", queue="beta")[()] < 8  # not the parent's 10 s
    result = run_cli(home, "worker", "start", "--burst", "--queue", "beta", timeout=60)
    assert result.returncode == 0, result.stderr
    assert job_state(home, "child")["state"] == "completed"
    wait = json.loads(run_cli(home, "stats", "--queue", "beta", "--json").stdout)["runs"]["wait_seconds"]
    assert wait["p95"] < 8, wait


# -- pools serving named queues ---------------------------------------------------------------------

@pytest.mark.timeout(90)
@pytest.mark.sqlite_only
def test_a_queue_pool_on_a_damaged_database_stops_itself(home):
    lines = "".join(json.dumps({"command": "true", "queue": "alpha"}) + "\n" for _ in range(300))
    assert run_cli(home, "enqueue", "--file", "-", input=lines).returncode == 0
    enqueue_many(home, 5)  # the default queue's claim index stays whole
    overwrite_root_page(home, "jobs_pending_q")
    database = os.path.join(home, "queue.db")
    result = run_cli(home, "worker", "start", "--burst", "--queue", "alpha", timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"database {database} is damaged" in result.stderr, result.stderr


@pytest.mark.timeout(90)
@pytest.mark.sqlite_only
def test_a_detached_queue_pool_on_a_damaged_database_stops_itself(home, pools):
    lines = "".join(json.dumps({"command": "true", "queue": "alpha"}) + "\n" for _ in range(300))
    assert run_cli(home, "enqueue", "--file", "-", input=lines).returncode == 0
    overwrite_root_page(home, "jobs_pending_q")
    pids = pools.start(2, "--queue", "alpha")
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=45, what="the pool to stop by itself")
    with open(os.path.join(home, "pools.log")) as handle:
        log = handle.read()
    assert "is damaged" in log and "stopped" in log, log


@pytest.mark.timeout(120)
@pytest.mark.sqlite_only
def test_a_forced_stop_of_a_queue_pool_records_an_interrupted_run_not_an_attempt(home, workdir, pools):
    enqueue(home, workdir, "--id", "long", "--queue", "alpha", "echo begun; sleep 60")
    pools.start(1, "--queue", "alpha")
    log = QueueHome(home).log_path("long")
    wait_until(lambda: os.path.exists(log) and b"begun" in open(log, "rb").read(), timeout=30,
               what="the run to start")
    assert pools.stop("--force", "--timeout", "30").returncode == 0
    job = job_state(home, "long")
    assert (job["state"], job["attempts"], job["queue"]) == ("pending", 0, "alpha")
    assert runs_of(home, "long") == [(1, "interrupted", None, job["runs"][0]["error"])]
    assert by_outcome(home, "--queue", "alpha") == {"interrupted": 1}
    assert gauge(home, "queuectl_runs_total", queue="alpha", outcome="interrupted") == {(): 1}


@pytest.mark.timeout(120)
@pytest.mark.sqlite_only
def test_a_killed_worker_of_a_queue_pool_leaves_a_lost_run_of_its_queue(home, workdir, pools):
    enqueue(home, workdir, "--id", "victim", "--queue", "alpha", "--max-retries", "0", "sleep 60")
    _, worker = pools.start(1, "--queue", "alpha")
    pools.start(1, "--queue", "beta")  # serves another queue, yet takes the lost job back
    processing(home, "victim")
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: job_state(home, "victim")["state"] == "dead", timeout=60, what="the lost run")
    assert runs_of(home, "victim") == [(1, "lost", None, "worker lost")]
    assert by_outcome(home, "--queue", "alpha") == {"lost": 1}
    assert gauge(home, "queuectl_runs_total", queue="alpha", outcome="lost") == {(): 1}
    # The worker the supervisor started in its place serves alpha, and alpha only.
    enqueue(home, workdir, "--id", "unserved", "--queue", "gamma", "true")
    enqueue(home, workdir, "--id", "served", "--queue", "alpha", "true")
    assert run_cli(home, "wait", "served", "--timeout", "30", timeout=60).returncode == 0
    assert job_state(home, "unserved")["state"] == "pending"


# -- timeouts and leases ----------------------------------------------------------------------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize("stop, outcome, error", [
    ("timeout", "timeout", "timed out after 1s"),
    pytest.param("cancel", "cancelled", "cancelled", marks=pytest.mark.sqlite_only),  # PostgreSQL: one is enough
])
def test_a_run_whose_child_ignores_term_is_never_taken_for_lost_with_a_1s_lease(
        home, workdir, pools, stop, outcome, error):
    """Its worker waits out the kill's grace period, heartbeating, however short the lease."""
    assert run_cli(home, "config", "set", "lease_seconds", "1").returncode == 0
    timeout = ("--timeout", "1") if stop == "timeout" else ()
    enqueue(home, workdir, "--id", "stubborn", *timeout, "--max-retries", "0",
            "trap '' TERM; sleep 30 & wait; sleep 30")
    pools.start(2)  # a second worker that would take the job back if the first looked lost
    processing(home, "stubborn")
    if stop == "cancel":
        result = run_cli(home, "cancel", "stubborn", "--timeout", "30")
        assert result.returncode == 0, result.stderr
    wait_until(lambda: job_state(home, "stubborn")["state"] == "dead", timeout=60, what="the run to stop")
    job = job_state(home, "stubborn")
    assert (job["attempts"], job["last_error"], job["exit_code"]) == (1, error, None)
    assert [run[:2] for run in runs_of(home, "stubborn")] == [(1, outcome)]
    assert by_outcome(home) == {outcome: 1}


# -- a run's environment ----------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_a_job_that_enqueues_without_home_enqueues_into_its_own_queue(home, workdir, tmp_path):
    decoy = str(tmp_path / "decoy")
    inner = f"{sys.executable} -m queuectl enqueue --id child --queue beta 'echo from child'"
    enqueue(home, workdir, "--id", "parent", "--max-retries", "0", inner)
    result = run_cli(home, "worker", "start", "--burst", timeout=90, env={"QUEUECTL_HOME": decoy})
    assert result.returncode == 0, result.stderr
    assert brief(home, "parent") == ("completed", 1, None)
    child = job_state(home, "child")
    assert (child["state"], child["queue"]) == ("completed", "beta")  # the burst pool ran it too
    assert not os.path.exists(os.path.join(decoy, "queue.db"))
