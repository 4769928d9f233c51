"""The store on a real SQLite file: schema, order, guarded transitions, counts, ids, query plans.

Time is passed in: every test uses explicit `now` values, nothing sleeps.
"""
from __future__ import annotations

import os
import re
import stat

import pytest

from conftest import store_sql
from queuectl.errors import Conflict, NotFound, StoreError
from queuectl.models import COMPLETED, DEAD, FAILED, PENDING, PROCESSING, STATES, NewJob
from queuectl.store.sqlite import SCHEMA_VERSION, SqliteStore as Store

pytestmark = pytest.mark.both_backends  # see conftest: each test on SQLite and on PostgreSQL

NOW = 1_700_000_000.0
W1, W2 = "worker-1", "worker-2"


def new(job_id, priority=0, run_at=NOW, max_retries=3, command="true"):
    return NewJob(job_id, command, max_retries, priority, None, run_at, "/")


def add(store, *ids, **fields):
    return store.insert([new(job_id, **fields) for job_id in ids], NOW)


def claim_all(store, now=NOW, worker=W1):
    """Ids in the order the store hands them out."""
    order = []
    while (job := store.claim_next(worker, now)) is not None:
        order.append(job.id)
    return order


def make(store, job_id, state, now=NOW, **fields):
    """Enqueue a job and drive it into `state` as a worker would, at `now`."""
    add(store, job_id, **{"run_at": now, **fields})
    if state == PENDING:
        return store.get(job_id)
    job = store.claim_next(W1, now)
    assert job.id == job_id, "make() needs no other due job in the store"
    if state == COMPLETED:
        assert store.mark_completed(job, W1, now)
    elif state == FAILED:
        assert store.mark_failed(job, W1, 1, "exit code 1", now + 60, now)
    elif state == DEAD:
        assert store.mark_dead(job, W1, 1, "exit code 1", now)
    return store.get(job_id)


def rows_by_state(store):
    """The counts as the rows say, to check the maintained counts against."""
    counted = dict(store_sql(store, "SELECT state, count(*) FROM jobs GROUP BY state"))
    return {state: counted.get(state, 0) for state in STATES}


def ids(store, state=None):
    return [job.id for job in store.list_jobs(state, None)]


# -- opening -----------------------------------------------------------------------------------

@pytest.mark.sqlite_only
def test_new_database_is_migrated_private_and_in_wal_mode(store, db_path):
    assert store._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 1
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o600
    assert store.counts() == dict.fromkeys(STATES, 0)


@pytest.mark.sqlite_only
def test_reopening_keeps_jobs_and_schema(store, db_path):
    add(store, "a", "b")
    store.close()
    again = Store.open(db_path)
    try:
        assert ids(again) == ["b", "a"]
        assert again._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert again._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        again.close()


def test_reopening_keeps_jobs(store, db_path, pg_url):
    from queuectl.store import open_store

    add(store, "a", "b")
    store.close()
    again = open_store(db_path, pg_url)
    try:
        assert ids(again) == ["b", "a"]
        assert again.counts() == {**dict.fromkeys(STATES, 0), PENDING: 2}
    finally:
        again.close()


@pytest.mark.sqlite_only
def test_a_version_1_database_is_migrated_forward_keeping_its_jobs(db_path):
    import sqlite3

    from queuectl.store.sqlite import MIGRATIONS, _statements

    old = sqlite3.connect(db_path, isolation_level=None)
    old.execute("PRAGMA journal_mode = WAL")
    for statement in _statements(MIGRATIONS[0]):
        old.execute(statement)
    old.execute("PRAGMA user_version = 1")
    # Rows as version 1's Store.insert wrote them (today's writes columns v1 does not have).
    for job_id, priority, run_at in (("late", -1, NOW + 60), ("due", 0, NOW)):
        old.execute("INSERT INTO jobs (id, command, state, max_retries, priority, timeout, run_at, cwd,"
                    " created_at, updated_at) VALUES (?, 'true', 'pending', 3, ?, NULL, ?, '/', ?, ?)",
                    (job_id, priority, run_at, NOW, NOW))
    old.execute("UPDATE job_counts SET n = 2 WHERE state = 'pending'")
    old.close()

    store = Store.open(db_path)
    try:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {r[0] for r in store._conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"jobs_pending", "jobs_failed"} <= indexes and "jobs_state_order" not in indexes
        tables = {r[0] for r in store._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "jobs_v1" not in tables
        assert store.claim_next(W1, NOW + 1).id == "due"
        assert store.next_run_at() == NOW + 60
        assert store.counts() == rows_by_state(store) == {**dict.fromkeys(STATES, 0), PENDING: 1, PROCESSING: 1}
        store.delete(["late"])  # the triggers that keep the counts came along
        assert store.counts() == rows_by_state(store)
        with pytest.raises(sqlite3.IntegrityError):  # and the state CHECK
            store._conn.execute("UPDATE jobs SET state = 'lost' WHERE id = 'due'")
    finally:
        store.close()


@pytest.mark.sqlite_only
def test_a_newer_schema_is_refused_with_the_path(store, db_path):
    store._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store.close()
    with pytest.raises(StoreError, match=rf"database {re.escape(db_path)} has schema version .* newer"):
        Store.open(db_path)


@pytest.mark.sqlite_only
def test_a_file_that_is_not_sqlite_is_refused_with_the_path(db_path):
    with open(db_path, "w") as handle:
        handle.write("this is not a database\n" * 100)
    with pytest.raises(StoreError, match=rf"database {re.escape(db_path)} is damaged: file is not a database"):
        Store.open(db_path)


# -- enqueue and claim order -------------------------------------------------------------------

def test_claim_order_is_priority_then_run_at_then_enqueue_order(store):
    add(store, "later", run_at=NOW - 10)
    add(store, "lazy", priority=5, run_at=NOW - 1000)
    add(store, "early", run_at=NOW - 100)
    add(store, "later-2", "later-3", run_at=NOW - 10)   # same priority and run_at: enqueue order
    add(store, "urgent", priority=-5)
    assert claim_all(store) == ["urgent", "early", "later", "later-2", "later-3", "lazy"]


def test_list_pending_shows_claim_order_and_others_newest_first(store):
    add(store, "b", "c")
    add(store, "a", priority=-1)
    make(store, "done-1", COMPLETED, priority=-9)
    make(store, "done-2", COMPLETED, priority=-9)
    assert ids(store, PENDING) == ["a", "b", "c"]
    assert ids(store, COMPLETED) == ["done-2", "done-1"]
    assert ids(store) == ["done-2", "done-1", "a", "c", "b"]
    assert [job.id for job in store.list_jobs(PENDING, 2)] == ["a", "b"]


def test_a_job_due_later_is_not_claimed_before_its_time(store):
    add(store, "soon", run_at=NOW + 60)
    assert store.claim_next(W1, NOW) is None
    assert store.claim_next(W1, NOW + 59.999) is None
    job = store.claim_next(W1, NOW + 60)
    assert (job.id, job.state, job.attempts, job.worker_id) == ("soon", PROCESSING, 1, W1)
    assert store.get("soon")._replace(updated_at=None) == job._replace(updated_at=None)


def test_failed_jobs_are_claimed_by_the_same_order_once_due(store):
    make(store, "retry", FAILED)                 # due again at NOW + 60
    add(store, "first", run_at=NOW + 30)
    add(store, "behind", run_at=NOW + 90)
    add(store, "vip", priority=-1, run_at=NOW + 100)
    assert store.claim_next(W1, NOW + 10) is None
    assert claim_all(store, NOW + 1000) == ["vip", "first", "retry", "behind"]
    assert store.get("retry").attempts == 2


def test_enqueue_order_survives_deletes(store):
    add(store, "a", "b", "c")
    store.delete(["c", "b"])                     # the newest among them
    add(store, "d")
    add(store, "e")
    seqs = {job.id: job.seq for job in store.list_jobs(None, None)}
    assert seqs["a"] < seqs["d"] < seqs["e"]
    assert ids(store) == ["e", "d", "a"]
    assert claim_all(store) == ["a", "d", "e"]


def test_generated_ids_are_16_hex_digits_and_returned(store):
    created = store.insert([new(None), new(None)], NOW)
    assert len(created) == 2 and len(set(created)) == 2
    assert all(re.fullmatch(r"[0-9a-f]{16}", job_id) for job_id in created)
    assert sorted(ids(store)) == sorted(created)


def test_a_batch_mixing_given_and_generated_ids_keeps_its_order(store):
    created = store.insert([new(None), new("given"), *[new(None) for _ in range(500)]], NOW)
    assert len(set(created)) == 502 and created[1] == "given"
    assert claim_all(store) == created  # claim order is the order of the batch


# -- insert: all or none, if_absent ------------------------------------------------------------

@pytest.mark.parametrize("batch", [
    ["b", "a", "c"],                              # one existing id in the middle
    ["d", "d"],                                   # the same id twice in one batch
    [f"n{i}" for i in range(250)] + ["a"],        # a long batch (several multi-row INSERTs)
    [f"n{i}" for i in range(150)] + ["a"] + [f"m{i}" for i in range(100)],
])
def test_insert_is_all_or_none(store, batch):
    add(store, "a", command="original")
    with pytest.raises(Conflict, match=r"nothing was enqueued"):
        add(store, *batch)
    assert ids(store) == ["a"]
    assert store.get("a").command == "original"
    assert store.counts() == rows_by_state(store) == {**dict.fromkeys(STATES, 0), PENDING: 1}


def test_insert_names_only_the_existing_id(store):
    add(store, "a")
    with pytest.raises(Conflict, match=r"job id already exists: a;"):
        add(store, "b", "a")


def test_if_absent_skips_existing_ids_and_changes_nothing(store):
    make(store, "a", DEAD)
    before = store.get("a")
    inserted = store.insert([new("a", command="new"), new("b")], NOW + 5, if_absent=True)
    assert inserted == ["b"]
    assert store.get("a") == before
    assert store.counts() == rows_by_state(store)
    assert store.insert([new("a")], NOW + 9, if_absent=True) == []


def test_if_absent_reports_an_id_repeated_in_the_batch_once(store):
    assert store.insert([new("c"), new("c", command="second")], NOW, if_absent=True) == ["c"]


# -- guarded transitions -----------------------------------------------------------------------

def _claimed(store):
    add(store, "j")
    return store.claim_next(W1, NOW)


def _stale_after_requeue(store):
    """W1's job died into the DLQ, was retried, and is now W2's: W1's copy is stale."""
    job = _claimed(store)
    store.mark_dead(job, W1, 1, "exit code 1", NOW)
    store.requeue_dead(["j"], NOW + 1)
    store.claim_next(W2, NOW + 2)
    return job


@pytest.mark.parametrize("setup, transition", [
    # another worker's result for a job W1 holds
    (_claimed, lambda s, job: s.mark_completed(job, W2, NOW)),
    (_claimed, lambda s, job: s.mark_failed(job, W2, 1, "x", NOW + 9, NOW)),
    (_claimed, lambda s, job: s.mark_dead(job, W2, 1, "x", NOW)),
    (_claimed, lambda s, job: s.release(job, W2, NOW)),
    # a second result for a run already recorded
    (lambda s: (lambda job: (s.mark_completed(job, W1, NOW), job)[1])(_claimed(s)),
     lambda s, job: s.mark_completed(job, W1, NOW + 1)),
    (lambda s: (lambda job: (s.mark_completed(job, W1, NOW), job)[1])(_claimed(s)),
     lambda s, job: s.mark_failed(job, W1, 1, "late", NOW + 9, NOW + 1)),
    (lambda s: (lambda job: (s.mark_failed(job, W1, 1, "x", NOW + 9, NOW), job)[1])(_claimed(s)),
     lambda s, job: s.mark_dead(job, W1, 1, "late", NOW + 1)),
    (lambda s: (lambda job: (s.release(job, W1, NOW), job)[1])(_claimed(s)),
     lambda s, job: s.mark_completed(job, W1, NOW + 1)),
    # a stale worker, after the job went to the DLQ, back, and to another worker
    (_stale_after_requeue, lambda s, job: s.mark_completed(job, W1, NOW + 3)),
    (_stale_after_requeue, lambda s, job: s.release(job, W1, NOW + 3)),
])
def test_transitions_of_a_job_that_moved_on_change_nothing(store, setup, transition):
    job = setup(store)
    before = store.get("j")
    assert transition(store, job) is False
    assert store.get("j") == before
    assert store.counts() == rows_by_state(store)


def test_the_holder_records_its_outcome(store):
    job = _claimed(store)
    assert store.mark_failed(job, W1, 7, "exit code 7", NOW + 2, NOW)
    failed = store.get("j")
    assert (failed.state, failed.attempts, failed.exit_code, failed.last_error, failed.run_at, failed.worker_id) \
        == (FAILED, 1, 7, "exit code 7", NOW + 2, None)
    job = store.claim_next(W2, NOW + 2)
    assert store.mark_completed(job, W2, NOW + 3)
    done = store.get("j")
    assert (done.state, done.attempts, done.exit_code, done.last_error, done.updated_at) \
        == (COMPLETED, 2, 0, None, NOW + 3)


def test_release_does_not_count_the_attempt(store):
    job = _claimed(store)
    assert store.release(job, W1, NOW + 1)
    released = store.get("j")
    assert (released.state, released.attempts, released.worker_id) == (PENDING, 0, None)


# -- counts ------------------------------------------------------------------------------------

def test_counts_follow_every_insert_update_and_delete(store):
    def check(**expected):
        assert store.counts() == rows_by_state(store) == {**dict.fromkeys(STATES, 0), **expected}

    check()
    add(store, *[f"bulk{i}" for i in range(250)], priority=5)
    check(pending=250)
    store.insert([new("bulk0"), new("x")], NOW, if_absent=True)
    check(pending=251)
    with pytest.raises(Conflict):
        add(store, "y", "x")
    check(pending=251)
    a = make(store, "a", PROCESSING, priority=-1)
    check(pending=251, processing=1)
    store.mark_failed(a, W1, 1, "x", NOW, NOW)
    check(pending=251, failed=1)
    a = store.claim_next(W1, NOW)
    store.mark_dead(a, W1, 1, "x", NOW)
    check(pending=251, dead=1)
    store.requeue_dead(None, NOW)
    check(pending=252)
    for job_id in ("a", "x"):
        job = store.claim_next(W1, NOW)
        assert job.id == job_id
        store.mark_completed(job, W1, NOW)
    check(pending=250, completed=2)
    job = store.claim_next(W1, NOW)
    store.release(job, W1, NOW)
    check(pending=250, completed=2)
    store.delete(["bulk1", "bulk2", "a"])
    check(pending=248, completed=1)
    store.purge(COMPLETED, None)
    check(pending=248)


# -- user transitions --------------------------------------------------------------------------

def test_requeue_dead_gives_a_fresh_start(store):
    make(store, "d", DEAD, max_retries=0)
    assert store.requeue_dead(["d"], NOW + 100) == ["d"]
    job = store.get("d")
    assert (job.state, job.attempts, job.run_at, job.updated_at) == (PENDING, 0, NOW + 100, NOW + 100)
    assert store.claim_next(W1, NOW + 100).id == "d"


def test_requeue_dead_all(store):
    make(store, "d1", DEAD)
    make(store, "d2", DEAD)
    make(store, "ok", COMPLETED)
    assert sorted(store.requeue_dead(None, NOW)) == ["d1", "d2"]
    assert ids(store, PENDING) == ["d1", "d2"]
    assert store.requeue_dead(None, NOW) == []


@pytest.mark.parametrize("bad, error", [("p", Conflict), ("nope", NotFound)])
def test_requeue_dead_is_all_or_none(store, bad, error):
    make(store, "d", DEAD)
    add(store, "p")
    with pytest.raises(error):
        store.requeue_dead(["d", bad], NOW)
    assert store.get("d").state == DEAD


def test_delete_refuses_processing_jobs_and_unknown_ids_all_or_none(store):
    make(store, "busy", PROCESSING)
    make(store, "done", COMPLETED, priority=-1)
    add(store, "p")
    with pytest.raises(Conflict, match=r"busy is processing"):
        store.delete(["p", "busy"])
    with pytest.raises(NotFound, match=r"nope"):
        store.delete(["p", "nope"])
    assert sorted(ids(store)) == ["busy", "done", "p"]
    store.delete(["p", "done"])
    assert ids(store) == ["busy"]


def test_purge_deletes_finished_jobs_last_changed_before_the_cutoff(store):
    make(store, "old", COMPLETED, now=NOW - 1000)
    make(store, "new", COMPLETED, now=NOW)
    make(store, "dead", DEAD, now=NOW - 1000)
    add(store, "waiting", run_at=NOW + 10 ** 6)
    assert store.purge(COMPLETED, NOW - 500) == ["old"]
    assert store.purge(COMPLETED, NOW - 500) == []
    assert sorted(ids(store)) == ["dead", "new", "waiting"]
    assert store.purge(DEAD, None) == ["dead"]
    assert sorted(ids(store)) == ["new", "waiting"]


@pytest.mark.parametrize("state", [PENDING, PROCESSING, FAILED])
def test_purge_refuses_unfinished_states(store, state):
    with pytest.raises(Conflict):
        store.purge(state, None)


# -- resolving ids -----------------------------------------------------------------------------

@pytest.mark.parametrize("token, resolved", [
    ("job1", "job1"),            # exact, though also a prefix of job10
    ("job10", "job10"),
    ("job2", "job2"),
    ("abc", "abc123def"),        # a unique prefix
    ("a", "abc123def"),
    ("x:1", "x:1@host"),
    ("x:1@", "x:1@host"),
])
def test_resolve(store, token, resolved):
    add(store, "job1", "job10", "job2", "abc123def", "x:1@host", "x:2@host")
    assert store.resolve(token) == resolved


@pytest.mark.parametrize("token, message", [
    ("job", r"prefix 'job' is ambiguous: it matches job1, job10, job2"),
    ("x:", r"prefix 'x:' is ambiguous: it matches x:1@host, x:2@host"),
    ("zzz", r"no job with id or prefix 'zzz'"),
    ("job3", r"no job with id or prefix 'job3'"),
    ("abc123defg", r"no job with id or prefix 'abc123defg'"),
])
def test_resolve_refuses_ambiguous_and_unknown(store, token, message):
    add(store, "job1", "job10", "job2", "abc123def", "x:1@host", "x:2@host")
    with pytest.raises(NotFound, match=message):
        store.resolve(token)


def test_an_ambiguous_prefix_lists_a_few_matches(store):
    add(store, *[f"n{i}" for i in range(20)])
    with pytest.raises(NotFound, match=r"it matches n0, n1, n10, n11, n12, \.\.\.$"):
        store.resolve("n")


# -- query plans -------------------------------------------------------------------------------

def _statements_of(store, action):
    """The SELECT statements on jobs that `action` runs, with their parameters bound (reads of
    the small queues table, and of job_deps by its primary key, are left out)."""
    seen = []
    store._conn.set_trace_callback(seen.append)
    try:
        action()
    finally:
        store._conn.set_trace_callback(None)
    return [sql for sql in seen if sql.lstrip().upper().startswith(("SELECT", "WITH"))
            and not re.search(r"\bFROM (queues|job_deps)\b", sql)]


def _plan(store, sql):
    """(id, parent, detail) rows of the query plan."""
    return [row[:2] + row[3:] for row in store._conn.execute("EXPLAIN QUERY PLAN " + sql)]


def _sorts_jobs(plan):
    """Whether a temporary b-tree sorts rows read from jobs (rather than a subquery's few rows)."""
    readers = {parent for _, parent, detail in plan if re.search(r"\bjobs\b", detail)}
    return any("TEMP B-TREE" in detail and parent in readers for _, parent, detail in plan)


def _index_on(store, *columns):
    """The name of the index on jobs with exactly these columns."""
    for row in store._conn.execute("PRAGMA index_list(jobs)"):
        name = row[1]
        indexed = tuple(r[2] for r in store._conn.execute(f"PRAGMA index_info({name})"))
        if indexed == columns:
            return name
    raise AssertionError(f"no index on jobs{columns}")


def _assert_uses_index(plan, index):
    steps = "\n".join(detail for _, _, detail in plan)
    reads = [detail for _, _, detail in plan if re.search(r"\bjobs\b", detail)]
    assert reads and all(re.search(rf"^SEARCH jobs USING (COVERING )?INDEX {index}\b", d) for d in reads), steps
    assert not _sorts_jobs(plan), steps


@pytest.fixture
def busy_store(store):
    """A store with jobs in every state, so the planner has something to choose from."""
    add(store, *[f"p{i}" for i in range(300)], run_at=NOW - 5)
    for i in range(20):
        make(store, f"c{i}", COMPLETED, priority=-1)
    make(store, "f", FAILED, priority=-1)
    store._conn.execute("ANALYZE")
    return store


WAITING_INDEX = r"jobs_(pending|failed)"  # partial indexes on (priority, run_at), rowid seq last


@pytest.mark.parametrize("action", ["claim_next", "next_run_at"])
@pytest.mark.sqlite_only
def test_the_claim_walks_the_claim_indexes(busy_store, action):
    assert _index_on(busy_store, "priority", "run_at") in ("jobs_pending", "jobs_failed")
    run = {"claim_next": lambda: busy_store.claim_next(W1, NOW),
           "next_run_at": busy_store.next_run_at}[action]
    statements = _statements_of(busy_store, run)
    assert statements, f"{action} ran no SELECT"
    for sql in statements:
        # The index gives claim order: no sort of the waiting jobs (a sort of the one head row
        # of each state, after the index has been walked, is fine).
        _assert_uses_index(_plan(busy_store, sql), WAITING_INDEX)


@pytest.mark.sqlite_only
def test_the_claim_seeks_past_priorities_with_nothing_due(store):
    """Not-yet-due jobs at better priorities cost a seek per priority, not a row each."""
    for priority in range(-12, 0):  # more priorities than PRIORITY_STEPS: the fallback scan too
        add(store, *[f"later{priority}-{i}" for i in range(30)], priority=priority, run_at=NOW + 3600)
    add(store, "due", priority=5)
    statements = _statements_of(store, lambda: store.claim_next(W1, NOW))
    assert store.get("due").state == PROCESSING
    assert 2 <= len(statements) <= 20, statements
    assert store.next_run_at() == NOW + 3600


@pytest.mark.parametrize("state", [PENDING, FAILED, COMPLETED, DEAD, PROCESSING, None])
@pytest.mark.sqlite_only
def test_list_uses_an_index_for_its_order(busy_store, state):
    statements = _statements_of(busy_store, lambda: busy_store.list_jobs(state, 50))
    # Pending and failed: the claimable jobs, then (the page not full) the blocked ones.
    assert len(statements) == (2 if state == FAILED else 1)
    plans = [_plan(busy_store, sql) for sql in statements]
    steps = "\n".join(detail for plan in plans for _, _, detail in plan)
    assert not any(_sorts_jobs(plan) for plan in plans), steps
    if state in (PENDING, FAILED):
        assert re.search(rf"^SCAN jobs USING INDEX jobs_{state}$", steps, re.M), steps
    elif state is not None:
        assert re.search(r"^SEARCH jobs USING (COVERING )?INDEX \w+ \(state=\?\)", steps, re.M), steps


@pytest.mark.sqlite_only
def test_resolve_and_get_use_the_id_index(busy_store):
    for action in (lambda: busy_store.resolve("p1"), lambda: busy_store.resolve("p29"),
                   lambda: busy_store.get("p7")):
        for sql in _statements_of(busy_store, action):
            steps = "\n".join(detail for _, _, detail in _plan(busy_store, sql))
            assert "sqlite_autoindex_jobs" in steps and "SCAN" not in steps, steps
