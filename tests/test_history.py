"""Run history: the run records, their aggregates (stats) and the migration, on a real SQLite
file with a controlled clock; then every outcome kind produced by a real pool."""
from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import time

import pytest

from conftest import job_state, open_home_store, run_cli, store_sql, wait_until
from queuectl import stats
from queuectl.home import QueueHome
from queuectl.models import NewJob, Outcome
from queuectl.store.sqlite import MIGRATIONS, RETENTION_MINUTES, SCHEMA_VERSION, SqliteStore as Store, _statements
from queuectl.worker import record_outcome, recover_lost_job

pytestmark = pytest.mark.both_backends  # see conftest: each test on SQLite and on PostgreSQL

HOME = QueueHome("/nonexistent/queue-home")  # kill_strays finds no run of it

SETTINGS = {"backoff_base": 2, "backoff_max": 3600}
# Minute-aligned, recent enough for the CLI's default window of one hour.
T0 = (time.time() // 60 - 30) * 60
W = "worker-1"


@pytest.fixture
def store(home):
    opened = open_home_store(home)
    yield opened
    opened.close()


def run_job(store, job_id, started, took, outcome=Outcome(0, None), command=None, due=None, retries=3):
    """Enqueue a job due at `due`, claim it at `started`, record `outcome` after `took` seconds."""
    store.insert([NewJob(job_id, command or f"job {job_id}", retries, 0, None,
                         started if due is None else due, "/")], started if due is None else due)
    job = store.claim_next(W, started)
    assert job.id == job_id
    return record_outcome(store, SETTINGS, job, W, outcome, started + took)


def again(store, job_id, started, took, outcome):
    """Run a job that waits for its retry once more (claimed at `started`)."""
    job = store.claim_next(W, started)
    assert job.id == job_id
    return record_outcome(store, SETTINGS, job, W, outcome, started + took)


FAIL = Outcome(1, "exit code 1", tail="boom\n")


# -- the run records -----------------------------------------------------------------------------

def test_every_run_is_recorded_with_its_job_in_order(store):
    run_job(store, "a", T0, 2.5, FAIL)
    job = store.get("a")
    again(store, "a", job.run_at, 1.0, Outcome(0, None, tail="fine\n"))
    runs = store.runs_of(store.get("a"))
    assert [(r.attempt, r.outcome, r.exit_code, r.error, r.output_tail, r.worker) for r in runs] == [
        (1, "failed", 1, "exit code 1", "boom\n", W), (2, "completed", 0, None, "fine\n", W)]
    assert runs[0].started_at == T0 and runs[0].ended_at == T0 + 2.5
    assert runs[1].host  # this host's name


def test_outcome_kinds_follow_the_outcome_and_the_transition(store):
    run_job(store, "t", T0, 5, Outcome(None, "timed out after 5s", kind="timeout"), retries=0)
    run_job(store, "i", T0, 1, Outcome(None, "interrupted by a forced stop", interrupted=True))
    store.insert([NewJob("l", "sleep 60", 0, -1, None, T0, "/")], T0)  # claimed before "i" again
    recover_lost_job(store, SETTINGS, HOME, store.claim_next(W, T0), T0 + 40)
    kinds = {job_id: [(r.outcome, r.attempt) for r in store.runs_of(store.get(job_id))] for job_id in "til"}
    assert kinds == {"t": [("timeout", 1)], "i": [("interrupted", 1)], "l": [("lost", 1)]}
    assert store.get("i").attempts == 0  # the interrupted run does not count, but is in the history
    assert store.get("l").last_error == "worker lost"


@pytest.mark.sqlite_only
def test_a_run_is_recorded_in_the_same_transaction_as_its_transition(store, home):
    """If the run cannot be recorded, the job's transition does not happen either."""
    store.insert([NewJob("x", "true", 3, 0, None, T0, "/")], T0)
    job = store.claim_next(W, T0)
    other = sqlite3.connect(QueueHome(home).db_path)
    other.execute("DROP TABLE run_counts")  # the run's aggregate UPSERT now fails
    other.close()
    with pytest.raises(sqlite3.OperationalError):
        record_outcome(store, SETTINGS, job, W, Outcome(0, None), T0 + 1)
    assert store.get("x").state == "processing"
    assert store.runs_of(store.get("x")) == []


def test_a_late_result_for_a_job_taken_back_is_not_recorded(store):
    store.insert([NewJob("x", "true", 3, 0, None, T0, "/")], T0)
    job = store.claim_next(W, T0)
    assert recover_lost_job(store, SETTINGS, HOME, job, T0 + 40)  # another worker took it back: lost
    assert record_outcome(store, SETTINGS, job, W, Outcome(0, None), T0 + 41) is None
    assert [r.outcome for r in store.runs_of(store.get("x"))] == ["lost"]


def test_runs_go_with_their_job_but_totals_stay(store):
    for n in range(3):
        run_job(store, f"done{n}", T0 + n, 1)
    run_job(store, "dead", T0, 1, FAIL, retries=0)
    before = {(q, o): n for q, o, n, _, _ in store.run_totals()}
    store.delete(["done0"])
    store.purge("completed", None)
    store.purge("dead", None)
    rows = store_sql(store, "SELECT count(*) FROM runs")[0][0]
    assert rows == 0
    assert {(q, o): n for q, o, n, _, _ in store.run_totals()} == before == {
        ("default", "completed"): 3, ("default", "failed"): 1}
    # A new job that reuses a deleted job's seq starts with no history.
    store.insert([NewJob("new", "true", 3, 0, None, T0, "/")], T0)
    assert store.runs_of(store.get("new")) == []


def test_a_lost_runs_tail_is_read_back_from_its_log(tmp_path, store):
    log = tmp_path / "x.log"
    store.insert([NewJob("x", "true", 3, 0, None, T0, "/")], T0)
    job = store.claim_next(W, T0)
    log.write_bytes(b"=== run 0 of job x at 2026 by w: true\nold run\n"
                    b"=== run 1 of job x at 2026 by w: true\n" + "é".encode() * 3000 + b"last words\n")
    recover_lost_job(store, SETTINGS, HOME, job, T0 + 40, str(log))
    tail = store.runs_of(store.get("x"))[0].output_tail
    assert tail.endswith("last words\n") and "old run" not in tail and "\ufffd" not in tail
    assert len(tail.encode()) <= 4096


# -- stats from the aggregates -------------------------------------------------------------------

def test_stats_figures_from_runs_with_known_durations_and_waits(store):
    # 100 runs taking 1..100 s, each started k/10 s after it was due; 10 of them fail.
    for k in range(1, 101):
        outcome = FAIL if k % 10 == 0 else Outcome(0, None)
        run_job(store, f"j{k}", T0 + k, float(k), outcome, due=T0 + k - k / 10, command=f"cmd {k % 20}",
                retries=0)
    window = store.run_window(T0)
    figures = stats.summary(window, 60)
    assert figures["total"] == 100
    assert figures["by_outcome"] == {"completed": 90, "failed": 10}
    assert figures["per_minute"] == pytest.approx(100 / 60, abs=0.001)
    d, w = figures["duration_seconds"], figures["wait_seconds"]
    # True p50 is 50 s and p95 95 s; a percentile is its bucket's upper edge: 50 and 100.
    assert (d["p50"], d["p95"], d["max"]) == (50.0, 100.0, 100.0)
    assert d["mean"] == pytest.approx(50.5)
    assert (w["p50"], w["p95"]) == (5.0, 10.0)  # true 5.0 and 9.5 s
    for p, shown in ((50, d["p50"]), (95, d["p95"])):
        true = float(math.ceil(p))  # nearest rank of 1..100
        assert true <= shown <= true * 1.28
    # The failing commands: "cmd 0" failed at k = 20, 40, 60, 80, 100; "cmd 10" at 10, 30, ...
    assert store.failing_commands(T0) == [("cmd 0", 5), ("cmd 10", 5)]
    # A later window holds only the later runs (the window starts at a minute's beginning).
    assert sum(store.run_window(T0 + 60).by_outcome.values()) == 71  # run k ended at T0 + 2k: k >= 30
    assert store.run_window(T0, "other").by_outcome == {}


def test_windows_across_hours_count_exactly_the_runs_that_ended_in_them(store):
    """Per-minute rows for the first, partial hour, per-hour rows after it: no run counted twice
    or missed, wherever the window starts."""
    base = (T0 // 3600 - 4) * 3600  # an hour's start, four hours back
    ends = [base + 37 * k + 11 for k in range(400)]  # 4 hours and a bit, every 37 s
    for k, ended in enumerate(ends):
        outcome = FAIL if k % 3 == 0 else Outcome(0, None)
        run_job(store, f"r{k}", ended - 2, 2, outcome, retries=0, command=f"c{k % 4}")
    for since in (base, base + 59, base + 60, base + 1799, base + 3600, base + 3660, base + 7261, ends[-1]):
        expected = [k for k, ended in enumerate(ends) if ended // 60 >= since // 60]
        window = store.run_window(since)
        assert sum(window.by_outcome.values()) == len(expected), since
        assert window.by_outcome.get("failed", 0) == len([k for k in expected if k % 3 == 0])
        assert sum(window.durations.values()) == sum(window.waits.values()) == len(expected)
        failed = sum(n for _, n in store.failing_commands(since, limit=10))
        assert failed == len([k for k in expected if k % 3 == 0]), since


def test_the_five_commands_that_fail_most(store):
    for n, times in enumerate([1, 7, 3, 9, 2, 5, 4]):
        for k in range(times):
            run_job(store, f"c{n}-{k}", T0, 1, FAIL, command=f"failing {n}", retries=0)
    assert store.failing_commands(T0) == [("failing 3", 9), ("failing 1", 7), ("failing 5", 5),
                                          ("failing 6", 4), ("failing 2", 3)]


@pytest.mark.parametrize("values", [[0.3] * 5, [0.0001, 0.0001, 7200.0], list(range(1, 1001)),
                                    [0.3, 0.31, 0.5, 12.0, 3600.0], [9e7, 9.9e7, 1e8]])
def test_percentiles_are_never_below_and_at_most_28_percent_above_the_true_value(values):
    histogram: dict = {}
    for value in values:
        histogram[stats.bucket(value)] = histogram.get(stats.bucket(value), 0) + 1
    ordered = sorted(values)
    for p in (50, 95, 99, 100):
        true = ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
        shown = stats.percentile(histogram, p, max(values))
        assert true <= shown <= max(true * 1.28, 0.001), (p, true, shown)


def test_beyond_the_last_bucket_a_percentile_is_the_maximum():
    assert stats.percentile({stats.bucket(2e8): 1, stats.bucket(3e9): 1}, 50, 3e9) == 3e9


def test_aggregates_past_retention_are_dropped(store):
    old = T0 - (RETENTION_MINUTES + 65) * 60  # dropped by the hour: over an hour past retention
    run_job(store, "old", old, 1, FAIL, retries=0)
    assert store.run_window(old).by_outcome == {"failed": 1}
    run_job(store, "new", T0, 1)
    assert store.run_window(old).by_outcome == {"completed": 1}
    assert store.failing_commands(old) == []
    assert {o: n for _, o, n, _, _ in store.run_totals()} == {"failed": 1, "completed": 1}


# -- the migration -------------------------------------------------------------------------------

@pytest.mark.sqlite_only
def test_a_version_5_database_migrates_and_keeps_its_jobs(home):
    path = QueueHome(home).ensure().db_path
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for script in MIGRATIONS[:-1]:
        for statement in _statements(script):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
    conn.execute("INSERT INTO jobs (id, command, state, attempts, max_retries, run_at, cwd, created_at,"
                 " updated_at) VALUES ('old', 'true', 'pending', 0, 3, ?, '/', ?, ?)", (T0, T0, T0))
    conn.execute("UPDATE job_counts SET n = 1 WHERE state = 'pending'")
    conn.close()
    store = Store.open(path)
    try:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.get("old").state == "pending" and store.counts()["pending"] == 1
        assert record_outcome(store, SETTINGS, store.claim_next(W, T0), W, Outcome(0, None), T0 + 2)
        assert [r.outcome for r in store.runs_of(store.get("old"))] == ["completed"]
        assert store.run_window(T0).by_outcome == {"completed": 1}
    finally:
        store.close()


# -- the CLI -------------------------------------------------------------------------------------

JOB_FIELDS = {"id", "command", "state", "attempts", "max_retries", "priority", "timeout", "run_at", "cwd",
              "created_at", "updated_at", "exit_code", "last_error", "queue", "after"}
RUN_FIELDS = ["attempt", "worker", "host", "started_at", "ended_at", "outcome", "exit_code", "error",
              "output_tail"]


def test_show_lists_the_runs_and_show_json_adds_runs_and_log(store, cli, home):
    run_job(store, "a", T0, 2.5, FAIL)
    again(store, "a", store.get("a").run_at, 1, Outcome(0, None, tail="ok\n"))
    data = cli.json("show", "a")
    assert set(data) == JOB_FIELDS | {"runs", "log"}
    assert data["log"] == QueueHome(home).log_path("a")
    assert [list(run) for run in data["runs"]] == [RUN_FIELDS] * 2
    assert [(r["attempt"], r["outcome"], r["output_tail"]) for r in data["runs"]] == [
        (1, "failed", "boom\n"), (2, "completed", "ok\n")]
    assert data["runs"][0]["started_at"].endswith("Z")
    text = cli("show", "a").stdout
    assert "OUTCOME" in text and "failed" in text and "2.5 s" in text and "exit code 1" in text
    for other in (cli.json("list"), [cli.json("enqueue", "true")]):  # other job outputs: the job's fields
        assert all(set(job) == JOB_FIELDS for job in other)


def test_stats_json_and_text(store, cli):
    for k in range(1, 11):
        run_job(store, f"j{k}", T0 + k, k / 10, FAIL if k == 10 else Outcome(0, None), command="make it",
                retries=0)
    store.insert([NewJob("waiting", "true", 3, 0, None, time.time() - 42, "/")], T0)
    data = cli.json("stats")
    runs = data["runs"]
    assert runs["total"] == 10 and runs["by_outcome"] == {"completed": 9, "failed": 1}
    assert runs["per_minute"] == pytest.approx(10 / 60, abs=0.001)
    assert runs["duration_seconds"]["p50"] == 0.5 and runs["duration_seconds"]["max"] == 1.0
    assert runs["top_failed_commands"] == [{"command": "make it", "failed_runs": 1}]
    assert data["now"]["jobs"]["pending"] == 1 and data["now"]["workers"] == 0
    assert 42 <= data["now"]["oldest_due_seconds"] < 100
    assert data["queue"] is None and data["since"].endswith("Z")
    text = cli("stats").stdout
    assert "completed 9, failed 1" in text and "p50 500 ms" in text and "make it" in text
    assert cli.json("stats", "--since", "10m")["runs"]["total"] == 0  # they ended 30 minutes ago
    assert cli.json("stats", "--queue", "other")["runs"]["total"] == 0
    assert cli.json("stats", "--queue", "default")["runs"]["total"] == 10


def test_show_lists_the_last_20_runs_and_says_how_many_it_left_out(store, cli):
    store.insert([NewJob("many", "false", 30, 0, None, T0, "/")], T0)
    for k in range(25):
        job = store.claim_next(W, T0 + 10 * k)
        assert job is not None and job.id == "many"
        record_outcome(store, {"backoff_base": 1, "backoff_max": 1}, job, W, FAIL, T0 + 10 * k + 1)
    text = cli("show", "many").stdout
    assert "(5 earlier runs not shown; `show --json` lists them all)" in text
    assert len([line for line in text.splitlines() if " failed " in line]) == 20
    assert len(cli.json("show", "many")["runs"]) == 25


@pytest.mark.parametrize("args", [("--since", "soon"), ("--since", "0"), ("--since", "40d"),
                                  ("--since", "2999-01-01T00:00:00Z"), ("--queue", "-bad"),
                                  ("--queue", "x" * 65)])
def test_stats_refuses_bad_input(cli, args):
    result = cli("stats", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1


# -- every outcome kind from a real pool ---------------------------------------------------------

def runs_of(home, job_id):
    return job_state(home, job_id)["runs"]


@pytest.mark.timeout(120)
def test_a_real_pool_records_completed_failed_and_timeout_runs(home, workdir):
    for job in ({"id": "ok", "command": "echo start; sleep 0.3; echo done"},
                {"id": "ok2", "command": "sleep 0.3"}, {"id": "ok3", "command": "sleep 0.3"},
                {"id": "bad", "command": "echo oops >&2; exit 3", "max_retries": 1},
                {"id": "slow", "command": "echo waiting; sleep 30", "timeout": 1, "max_retries": 0},
                {"id": "loud", "command": "head -c 10000 /dev/zero | tr '\\0' x; echo; echo end"}):
        assert run_cli(home, "enqueue", json.dumps(job), cwd=workdir).returncode == 0
    run_cli(home, "config", "set", "backoff_base", "1")
    assert run_cli(home, "worker", "start", "--count", "2", "--burst", timeout=100).returncode == 0
    ok = runs_of(home, "ok")
    assert [(r["outcome"], r["exit_code"], r["output_tail"]) for r in ok] == [("completed", 0, "start\ndone\n")]
    assert [(r["attempt"], r["outcome"], r["exit_code"], r["error"], r["output_tail"]) for r in runs_of(home, "bad")] \
        == [(n, "failed", 3, "exit code 3: oops", "oops\n") for n in (1, 2)]
    slow = runs_of(home, "slow")
    assert [(r["outcome"], r["exit_code"], r["output_tail"]) for r in slow] == [("timeout", None, "waiting\n")]
    loud = runs_of(home, "loud")[0]["output_tail"]
    assert len(loud.encode()) == 4096 and loud.endswith("x\nend\n")
    data = json.loads(run_cli(home, "stats", "--json").stdout)["runs"]
    assert data["by_outcome"] == {"completed": 4, "failed": 2, "timeout": 1}
    # Three runs of `sleep 0.3` and the fast ones: the median run took a little over 0.3 s.
    assert 0.3 <= data["duration_seconds"]["p50"] <= 0.3 * 1.28 * 1.5
    assert 1.0 <= data["duration_seconds"]["max"] < 10
    assert data["top_failed_commands"][0] == {"command": "echo oops >&2; exit 3", "failed_runs": 2}


@pytest.mark.timeout(120)
def test_a_killed_worker_leaves_a_lost_run_with_its_tail(home, workdir, pools):
    assert run_cli(home, "enqueue", "--id", "victim", "--max-retries", "0",
                   "echo started; sleep 60", cwd=workdir).returncode == 0
    supervisor, worker = pools.start(1)
    wait_until(lambda: job_state(home, "victim")["state"] == "processing", timeout=30, what="the claim")
    log = QueueHome(home).log_path("victim")
    wait_until(lambda: os.path.exists(log) and b"started" in open(log, "rb").read(), timeout=30,
               what="the run's output")
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: job_state(home, "victim")["state"] == "dead", timeout=60, what="the lost run")
    runs = runs_of(home, "victim")
    assert [(r["attempt"], r["outcome"], r["error"], r["output_tail"]) for r in runs] == [
        (1, "lost", "worker lost", "started\n")]
    assert runs[0]["worker"].endswith(f"-{worker}") and runs[0]["host"]


@pytest.mark.timeout(120)
def test_a_forced_stop_leaves_an_interrupted_run(home, workdir, pools):
    assert run_cli(home, "enqueue", "--id", "long", "echo begun; sleep 60", cwd=workdir).returncode == 0
    pools.start(1)
    log = QueueHome(home).log_path("long")
    wait_until(lambda: os.path.exists(log) and b"begun" in open(log, "rb").read(), timeout=30,
               what="the run to start")
    assert pools.stop("--force", "--timeout", "30").returncode == 0
    job = job_state(home, "long")
    assert (job["state"], job["attempts"]) == ("pending", 0)
    assert [(r["attempt"], r["outcome"], r["output_tail"]) for r in job["runs"]] == [(1, "interrupted", "begun\n")]
