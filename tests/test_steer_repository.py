"""Steering in the store: named queues, limits, pauses, dependencies, requeue, the v3 -> v4
migration, and the pure cycle check. A real SQLite file; time is passed in, nothing sleeps."""
from __future__ import annotations

import sqlite3

import pytest

from conftest import store_sql
from queuectl.deps import find_cycle
from queuectl.errors import Conflict, NotFound
from queuectl.models import COMPLETED, DEAD, FAILED, PENDING, PROCESSING, NewJob
from queuectl.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStore as Store, _statements

pytestmark = pytest.mark.both_backends  # see conftest: each test on SQLite and on PostgreSQL

NOW = 1_700_000_000.0
W1, W2 = "worker-1", "worker-2"


def new(job_id, queue="default", after=(), priority=0, run_at=NOW, max_retries=0):
    return NewJob(job_id, "true", max_retries, priority, None, run_at, "/", queue, tuple(after))


def add(store, *jobs):
    return store.insert(list(jobs), NOW)


def state(store, job_id):
    job = store.get(job_id)
    return (job.state, job.last_error)


def run(store, job_id, ok=True, worker=W1, queues=None):
    """Claim the next job (it must be `job_id`) and finish it."""
    job = store.claim_next(worker, NOW, queues)
    assert job is not None and job.id == job_id, job
    if ok:
        assert store.mark_completed(job, worker, NOW)
    else:
        assert store.mark_dead(job, worker, 1, "exit code 1", NOW)


def claimed(store, queues=None, worker=W1):
    job = store.claim_next(worker, NOW, queues)
    return None if job is None else job.id


# -- the pure part -------------------------------------------------------------------------------

@pytest.mark.parametrize("graph, cycle", [
    ({}, None),                                            # nothing waits
    ({"a": ("b",), "b": ()}, None),                        # a chain
    ({"a": ("x",)}, None),                                 # waits for a stored job
    ({"a": ("a",)}, ["a", "a"]),                           # itself
    ({"a": ("b",), "b": ("a",)}, ["a", "b", "a"]),         # two
    ({"a": ("b", "c"), "b": ("c",), "c": ()}, None),       # a diamond is no cycle
    ({"a": ("b",), "b": ("c",), "c": ("b",)}, ["b", "c", "b"]),  # a cycle below the start
])
def test_find_cycle(graph, cycle):
    assert find_cycle(graph) == cycle


def test_find_cycle_walks_a_long_chain_without_recursion():
    chain = {f"j{i}": (f"j{i + 1}",) for i in range(50_000)}
    assert find_cycle(chain) is None
    chain["j50000"] = ("j0",)
    assert len(find_cycle(chain)) == 50_002


# -- the migration ---------------------------------------------------------------------------------

@pytest.mark.sqlite_only
def test_a_version_3_database_is_migrated_to_queues_and_dependencies(db_path):
    old = sqlite3.connect(db_path, isolation_level=None)
    old.execute("PRAGMA journal_mode = WAL")
    for script in MIGRATIONS[:3]:
        for statement in _statements(script):
            old.execute(statement)
    old.execute("PRAGMA user_version = 3")
    for job_id, job_state in (("waiting", "pending"), ("retry", "failed"), ("done", "completed")):
        old.execute("INSERT INTO jobs (id, command, state, max_retries, priority, timeout, run_at, cwd,"
                    " created_at, updated_at) VALUES (?, 'true', ?, 3, 0, NULL, ?, '/', ?, ?)",
                    (job_id, job_state, NOW, NOW, NOW))
    old.execute("UPDATE job_counts SET n = 1 WHERE state IN ('pending', 'failed', 'completed')")
    old.close()

    store = Store.open(db_path)
    try:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 4
        job = store.get("waiting")
        assert (job.queue, job.after, job.to_dict()["after"]) == ("default", (), [])
        assert [q.name for q in store.queues()] == ["default"]
        store.insert([new("child", after=["done"]), new("grandchild", after=["waiting"])], NOW)
        assert claimed(store, ["default"]) == "waiting"  # the per-queue indexes hold old jobs too
        store.pause(["elsewhere"])  # a claim that picks among queues knows the old jobs' queue
        assert claimed(store) == "retry"
        assert claimed(store) == "child"  # its parent had completed before the migration
        assert claimed(store) is None
    finally:
        store.close()


# -- named queues, pauses, limits ----------------------------------------------------------------

def test_a_worker_serving_some_queues_takes_only_theirs_in_claim_order(store):
    add(store, new("a1", "a", priority=5), new("b1", "b", priority=1), new("c1", "c", priority=-9),
        new("a2", "a", priority=0))
    assert [claimed(store, ["a", "b"]) for _ in range(4)] == ["a2", "b1", "a1", None]
    assert claimed(store, ["nowhere"]) is None
    assert claimed(store) == "c1"


def test_a_paused_queue_starts_nothing_until_resumed(store):
    add(store, new("d1"), new("s1", "slow", priority=-1), new("s2", "slow", priority=-1))
    store.pause(["slow"])
    assert store.next_run_at() == NOW  # d1's, not the paused ones'
    run(store, "d1")
    assert claimed(store) is None and store.next_run_at() is None
    assert not store.has_work(None, NOW)  # a burst pool quits: a paused queue's jobs are not due
    store.resume(["slow"])
    assert store.has_work(None, NOW)
    assert claimed(store) == "s1"


def test_pause_of_every_queue_covers_queues_to_come_and_yields_to_a_resume_by_name(store):
    store.pause(None)
    add(store, new("a1", "a"), new("b1", "b"))
    assert claimed(store) is None
    assert store.pauses() == {"all": True, "queues": [], "resumed": []}
    store.resume(["b"])
    assert store.pauses() == {"all": True, "queues": [], "resumed": ["b"]}
    assert [q.paused for q in store.queues()] == [True, False]
    assert claimed(store) == "b1"
    store.pause(["b"])  # paused by name again
    store.resume(None)  # lifts every pause
    assert store.pauses() == {"all": False, "queues": [], "resumed": []}
    assert claimed(store) == "a1"
    assert [(name, limit, int(paused)) for name, limit, paused in
            store_sql(store, "SELECT name, max_running, paused FROM queues ORDER BY name")] == \
        [("a", 0, 0), ("b", 0, 0)]  # no leftover settings; the rows name the queues that have jobs


def test_a_limit_counts_processing_jobs_across_workers(store):
    store.set_limit("dl", 2)
    add(store, *[new(f"dl{i}", "dl", priority=-1) for i in range(4)], new("quick"))
    assert claimed(store, worker=W1) == "dl0"
    assert claimed(store, worker=W2) == "dl1"
    assert claimed(store, worker="w3") == "quick"  # the full queue is skipped, not waited for
    assert claimed(store, worker="w4") is None
    assert store.next_run_at() is None  # so an idle worker sleeps instead of spinning
    assert store.mark_completed(store.get("dl0"), W1, NOW)
    assert claimed(store, worker=W1) == "dl2"
    store.set_limit("dl", 0)
    assert claimed(store, worker="w5") == "dl3"
    assert [(q.name, q.limit) for q in store.queues()] == [("default", None), ("dl", None)]


@pytest.mark.sqlite_only
def test_a_full_limited_queue_ahead_costs_no_scan_of_its_jobs(store):
    store.set_limit("full", 1)
    add(store, *[new(f"f{i}", "full", priority=-5) for i in range(300)], new("free", "free"))
    assert claimed(store) == "f0"
    seen = []
    store._conn.set_trace_callback(seen.append)
    try:
        assert claimed(store) == "free"
    finally:
        store._conn.set_trace_callback(None)
    plans = "\n".join(r[3] for sql in seen if sql.lstrip().upper().startswith(("SELECT", "WITH"))
                      for r in store._conn.execute("EXPLAIN QUERY PLAN " + sql))
    assert "SCAN jobs" not in plans, plans


def test_a_limit_or_pause_may_come_before_the_queue_has_jobs(store):
    store.set_limit("later", 3)
    store.pause(["later2"])
    assert [(q.name, q.limit, q.paused, sum(q.counts.values())) for q in store.queues()] == \
        [("later", 3, False, 0), ("later2", None, True, 0)]


# -- dependencies ------------------------------------------------------------------------------

def test_a_job_waits_until_everything_it_names_has_completed(store):
    add(store, new("build"), new("lint"), new("deploy", after=["build", "lint"], priority=-9))
    assert store.get("deploy").after == ("build", "lint")
    assert store.waiting_for("deploy") == [("build", PENDING), ("lint", PENDING)]
    run(store, "build")
    assert store.waiting_for("deploy") == [("lint", PENDING)]
    run(store, "lint")
    run(store, "deploy")


def test_unknown_parents_refuse_the_whole_batch(store):
    add(store, new("real"))
    with pytest.raises(NotFound, match="nope"):
        add(store, new("x", after=["real"]), new("y", after=["nope"]))
    assert store.get("x") is None and store.counts()[PENDING] == 1


def test_a_prefix_names_a_stored_parent_and_a_batch_parent_is_exact(store):
    add(store, new("build-7f3a"))
    add(store, new("first"), new("then", after=["first", "build-7"]))
    assert store.get("then").after == ("build-7f3a", "first")


def test_a_prefix_never_names_a_job_of_its_own_batch(store):
    """`enqueue --id abc --after ab` with no stored `ab...`: unknown, not a job waiting for itself."""
    with pytest.raises(NotFound, match="'ab'"):
        add(store, new("abc", after=["ab"]))
    with pytest.raises(NotFound, match="'fir'"):
        add(store, new("first"), new("then", after=["fir"]))
    assert store.counts()[PENDING] == 0


def test_death_cascades_down_the_chain_with_attempts_unchanged(store):
    add(store, new("a"), new("b", after=["a"]), new("c", after=["b"]), new("other"))
    run(store, "a", ok=False)
    assert state(store, "b") == (DEAD, "dependency a is dead")
    assert state(store, "c") == (DEAD, "dependency b is dead")
    assert store.get("c").attempts == 0 and state(store, "other")[0] == PENDING
    assert store.counts()[DEAD] == 3


def test_a_job_enqueued_after_a_dead_one_is_dead_at_once_and_so_are_its_batch_waiters(store):
    add(store, new("a"))
    run(store, "a", ok=False)
    add(store, new("b", after=["a"]), new("c", after=["b"]))
    assert (state(store, "b"), state(store, "c")) == \
        ((DEAD, "dependency a is dead"), (DEAD, "dependency b is dead"))


def test_retrying_the_first_job_brings_the_chain_back(store):
    add(store, new("a"), new("b", after=["a"]), new("c", after=["b"]))
    run(store, "a", ok=False)
    assert sorted(store.requeue_dead(["a"], NOW)) == ["a", "b", "c"]
    assert [store.get(j).state for j in "abc"] == [PENDING] * 3
    assert claimed(store) == "a" and claimed(store) is None  # b and c wait again
    assert store.mark_completed(store.get("a"), W1, NOW)
    run(store, "b")
    run(store, "c")


def test_a_retried_waiter_is_dead_again_while_what_it_waits_for_is_dead(store):
    add(store, new("a"), new("z"), new("b", after=["a", "z"]))
    run(store, "a", ok=False)
    run(store, "z", ok=False)
    assert state(store, "b") == (DEAD, "dependency a is dead")
    store.requeue_dead(["b"], NOW)
    assert state(store, "b") == (DEAD, "dependency a is dead")
    store.requeue_dead(["a"], NOW)  # b died for a: it comes back, and dies for z, still dead
    assert state(store, "b") == (DEAD, "dependency z is dead")
    store.requeue_dead(["z"], NOW)
    assert state(store, "b")[0] == PENDING and store.get("b").attempts == 0


def test_requeue_of_a_completed_parent_makes_its_waiters_wait_again(store):
    add(store, new("a"), new("x"), new("b", after=["a", "x"]))
    run(store, "a")
    run(store, "x")
    assert store.requeue(["a"], NOW) == ["a"]
    assert claimed(store) == "a" and claimed(store) is None  # b waits for a again
    with pytest.raises(Conflict, match="job b is pending, not completed or dead"):
        store.requeue(["b"], NOW)


def test_delete_refuses_a_job_that_unfinished_jobs_wait_for_unless_they_go_too(store):
    add(store, new("a"), new("b", after=["a"]))
    with pytest.raises(Conflict, match="job b waits for a"):
        store.delete(["a"])
    assert store.get("a") is not None
    store.delete(["a", "b"])
    assert store.counts()[PENDING] == 0
    assert store_sql(store, "SELECT count(*) FROM job_deps")[0][0] == 0
    add(store, new("done"), new("other"), new("c", after=["done", "other"]))
    run(store, "done")
    store.delete(["done"])  # completed: c waits for it no more
    assert store.get("c").after == ("other",) and store.waiting_for("c") == [("other", PENDING)]


def test_a_parent_deleted_unfinished_keeps_its_dead_waiter_dead_and_a_purged_completed_one_does_not(store):
    add(store, new("a"), new("b", after=["a"]), new("ok"), new("c", after=["ok"]))
    run(store, "a", ok=False)
    store.delete(["a"])  # b is finished (dead): allowed
    store.requeue_dead(["b"], NOW)
    assert state(store, "b") == (DEAD, "dependency a is dead")
    run(store, "ok")
    run(store, "c")
    store.purge(COMPLETED, None)
    add(store, new("c2"))
    run(store, "c2")
    assert store.requeue(["c2"], NOW) == ["c2"] and store.get("c2").state == PENDING


@pytest.mark.sqlite_only
def test_waiting_jobs_are_in_no_claim_index_and_listed_after_the_claimable_ones(store):
    add(store, new("root", run_at=NOW + 3600))
    add(store, *[new(f"w{i}", after=["root"], priority=-1) for i in range(500)], new("due", priority=9))
    in_index = store._conn.execute(
        "SELECT count(*) FROM jobs INDEXED BY jobs_pending WHERE state = 'pending' AND blocked = 0").fetchone()[0]
    assert in_index == 2
    assert claimed(store) == "due"
    assert [j.id for j in store.list_jobs(PENDING, 3)] == ["root", "w0", "w1"]
    assert store.count(PENDING, "default") == 501


def test_the_jobs_failed_state_is_claimable_in_its_queue(store):
    add(store, new("f", "q", max_retries=1))
    job = store.claim_next(W1, NOW, ["q"])
    assert store.mark_failed(job, W1, 1, "exit code 1", NOW + 5, NOW)
    assert store.has_work(["q"], NOW) and not store.has_work(["other"], NOW)
    assert store.next_run_at(["q"]) == NOW + 5
    assert store.claim_next(W1, NOW + 5, ["q"]).id == "f"
    assert store.get("f").state == PROCESSING


def test_states_keep_their_counts_through_cascades(store):
    add(store, new("a"), new("b", after=["a"]), new("c", after=["b"]))
    run(store, "a", ok=False)
    store.requeue_dead(None, NOW)
    counted = dict(store_sql(store, "SELECT state, count(*) FROM jobs GROUP BY state"))
    assert store.counts()[PENDING] == counted[PENDING] == 3
    assert store.counts()[DEAD] == 0 and store.counts()[FAILED] == 0


def test_a_queue_is_forgotten_once_it_has_neither_jobs_nor_settings(store):
    add(store, new("a1", "a"), new("b1", "b"))
    run(store, "a1")
    store.pause(["b"])
    assert claimed(store) is None  # a is known (completed job), b paused
    store.purge(COMPLETED, None)
    store.delete(["b1"])
    assert [q.name for q in store.queues()] == ["b"]  # its pause remains
    store.resume(None)
    assert store.queues() == [] and store_sql(store, "SELECT count(*) FROM queues")[0][0] == 0
    add(store, new("a2", "a"))
    store.pause(["b"])
    assert claimed(store) == "a2"
