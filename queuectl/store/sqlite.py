"""The only module that speaks SQL: schema, migrations, and one method per transition or query.

Everything above this module sees Job records and plain values, never a cursor, so a PostgreSQL
store for workers on several hosts can later implement the same methods.
"""
from __future__ import annotations

import functools
import os
import sqlite3
import time
import types
from contextlib import contextmanager
from itertools import chain
from typing import Callable, Iterable, Iterator, NamedTuple, Optional

from ..errors import Conflict, DatabaseDamaged, NotFound, StoreError
from ..home import create_private
from .common import (ALL_QUEUES, COMMAND_CHARS, RETENTION_MINUTES, TOTAL_HOUR, WHOLE_HOUR, StoreRules,
                     claim_scope, command_hash, dependency_dead, minute_range, pauses_of, paused_map, window_bounds)
from .. import stats
from ..models import (CANCELLED, COMPLETED, DEAD, FAILED, FAILED_RUNS, FINISHED, PROCESSING, STATES,
                     Job, QueueInfo, Run, WorkerInfo)

# Callers catch these to report a database failure with its path, without importing sqlite3.
# They are the transient ones (busy, locked, full, I/O): a damaged file raises DatabaseDamaged.
DB_ERRORS = (sqlite3.Error,)
_DAMAGE_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB; extended codes keep these low bytes
# Their messages, for Python < 3.11 (no sqlite_errorcode); "malformed JSON" is not damage.
_DAMAGE_WORDS = ("disk image is malformed", "malformed database schema", "is not a database")
BUSY_TIMEOUT_SECONDS = 60.0
JOB_COLUMNS = (
    "seq, id, command, state, attempts, max_retries, priority, timeout, run_at, cwd, "
    "created_at, updated_at, exit_code, last_error, worker_id, started_at, queue"
)
WAITING = ("pending", "failed")
_NOT_CANCELLED = " AND cancel_requested IS NULL"


class _ClaimSql(NamedTuple):
    """The claim's queries over one family of partial indexes (schema v2, v4): every queue's,
    or one queue's (`:queue`). Claim order within a waiting state is (priority, run_at, seq),
    exactly the index's order (its rowid, seq, comes last). Queries name the index, because
    SQLite's planner, without ANALYZE statistics, may prefer jobs_state_recent and sort. Jobs
    waiting on an unfinished parent (blocked > 0) are in no claim index: they cost nothing."""

    next_priority: str
    due_at_priority: str
    first_at_priority: str
    due_after: str
    first_after: str
    by_state: dict


def _best(selects: list, order: str) -> str:
    """The best row of several per-state queries, each an index seek: one `state IN (...)`
    query would instead make SQLite sort every waiting job (O(n) per claim)."""
    return " UNION ALL ".join(f"SELECT * FROM ({sql})" for sql in selects) + f" ORDER BY {order} LIMIT 1"


def _claim_sql(per_queue: bool) -> _ClaimSql:
    """The claim walks the distinct waiting priorities, best first, and takes the head of the
    first that has a due job: a few index seeks, however many not-yet-due jobs sit at better
    priorities. After PRIORITY_STEPS priorities with nothing due, one range scan over the rest."""
    index, only = ("_q", " AND queue = :queue") if per_queue else ("", "")
    wheres = [f"FROM jobs INDEXED BY jobs_{s}{index} WHERE state = '{s}' AND blocked = 0{only}" for s in WAITING]
    smallest = lambda what, cond: "SELECT min(v) FROM (" + " UNION ALL ".join(  # noqa: E731
        f"SELECT min({what}) AS v {where} AND {cond}" for where in wheres) + ")"
    return _ClaimSql(
        next_priority=smallest("priority", "priority > :after"),
        due_at_priority=_best([f"SELECT {JOB_COLUMNS} {where} AND priority = :priority AND run_at <= :now"
                               " ORDER BY run_at, seq LIMIT 1" for where in wheres], "run_at, seq"),
        first_at_priority=smallest("run_at", "priority = :priority"),
        due_after=_best([f"SELECT {JOB_COLUMNS} {where} AND priority > :after AND run_at <= :now"
                         " ORDER BY priority, run_at, seq LIMIT 1" for where in wheres], "priority, run_at, seq"),
        first_after=smallest("run_at", "priority > :after"),
        by_state=dict(zip(WAITING, wheres)),
    )


_EVERY_QUEUE = _claim_sql(per_queue=False)
_ONE_QUEUE = _claim_sql(per_queue=True)
_BY_STATE = _EVERY_QUEUE.by_state
BELOW_ANY_PRIORITY = -(2**63)  # SQLite's smallest integer; enqueue allows -1e9 to 1e9
PRIORITY_STEPS = 8
# Settings in force, and how many jobs a limited queue runs now (one query in the claim).
_SETTINGS = ("SELECT name, max_running, paused, CASE WHEN max_running > 0 THEN (SELECT count(*) FROM jobs"
             " INDEXED BY jobs_state_recent WHERE state = 'processing' AND queue = name) END"
             " FROM queues WHERE max_running <> 0 OR paused <> 0")
_RUNNING_IN = "SELECT count(*) FROM jobs INDEXED BY jobs_state_recent WHERE state = 'processing' AND queue = ?"
_FAILED_IN = "SELECT 1 FROM jobs INDEXED BY jobs_failed_q WHERE state = 'failed' AND blocked = 0 AND queue = ? LIMIT 1"

_SCHEMA_V1 = """
CREATE TABLE jobs (
    seq         INTEGER PRIMARY KEY,  -- enqueue order: a new job always gets max(seq) + 1
    id          TEXT NOT NULL UNIQUE,
    command     TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending','processing','completed','failed','dead')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL,
    priority    INTEGER NOT NULL DEFAULT 0,
    timeout     NUMERIC,  -- keeps 5 an integer and 1.5 a real
    run_at      REAL NOT NULL,
    cwd         TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    exit_code   INTEGER,
    last_error  TEXT,
    worker_id   TEXT,
    started_at  REAL
);
-- The claim and `list --state pending|failed` walk this in claim order.
CREATE INDEX jobs_state_order ON jobs (state, priority, run_at, seq);
-- `list --state X` newest first, and the processing jobs of a worker.
CREATE INDEX jobs_state_recent ON jobs (state, seq);

-- Counts kept up to date, so `status` costs the same at a million jobs as at ten: by triggers
-- for changes of state and deletes, and by Store.insert (once per batch: a trigger per row
-- was a quarter of bulk enqueue's time).
CREATE TABLE job_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO job_counts VALUES ('pending', 0), ('processing', 0), ('completed', 0), ('failed', 0), ('dead', 0);
CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
END;
CREATE TRIGGER jobs_counted_update AFTER UPDATE OF state ON jobs WHEN OLD.state <> NEW.state BEGIN
    UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
    UPDATE job_counts SET n = n + 1 WHERE state = NEW.state;
END;

CREATE TABLE workers (
    worker_id    TEXT PRIMARY KEY,
    pid          INTEGER NOT NULL,
    pool_id      TEXT NOT NULL,
    host         TEXT NOT NULL,
    started_at   REAL NOT NULL,
    heartbeat_at REAL NOT NULL
);
"""

# v2, rebuilding the jobs table (SQLite cannot alter a CHECK in place):
# - the claim index only holds waiting jobs, one partial index per waiting state: a job that
#   completes no longer rewrites it, and the claim can seek each priority's due jobs directly;
# - the state CHECK is an OR chain: SQLite 3.40 builds an ephemeral index for an IN list on
#   every row it checks, which cost a fifth of inserting 100k jobs and ~20 µs per state change.
# Renaming the old table takes its indexes and triggers along; DROP TABLE fires no triggers,
# so job_counts stays right.
_SCHEMA_V2 = """
ALTER TABLE jobs RENAME TO jobs_v1;
CREATE TABLE jobs (
    seq         INTEGER PRIMARY KEY,  -- enqueue order: a new job always gets max(seq) + 1
    id          TEXT NOT NULL UNIQUE,
    command     TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state = 'pending' OR state = 'processing'
                                     OR state = 'completed' OR state = 'failed' OR state = 'dead'),
    attempts    INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL,
    priority    INTEGER NOT NULL DEFAULT 0,
    timeout     NUMERIC,  -- keeps 5 an integer and 1.5 a real
    run_at      REAL NOT NULL,
    cwd         TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    exit_code   INTEGER,
    last_error  TEXT,
    worker_id   TEXT,
    started_at  REAL
);
INSERT INTO jobs SELECT * FROM jobs_v1;
DROP TABLE jobs_v1;
-- Claim order within a waiting state; the rowid (seq) ends each entry.
CREATE INDEX jobs_pending ON jobs (priority, run_at) WHERE state = 'pending';
CREATE INDEX jobs_failed ON jobs (priority, run_at) WHERE state = 'failed';
-- `list --state X` newest first, and the processing jobs of a worker.
CREATE INDEX jobs_state_recent ON jobs (state, seq);
CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
END;
CREATE TRIGGER jobs_counted_update AFTER UPDATE OF state ON jobs WHEN OLD.state <> NEW.state BEGIN
    UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
    UPDATE job_counts SET n = n + 1 WHERE state = NEW.state;
END;
"""

# v3: a worker row names its queue home, so a copy of a home (`cp -r` while a pool runs) does
# not take the original's workers, whose rows it copied, for its own.
_SCHEMA_V3 = """
ALTER TABLE workers ADD COLUMN home TEXT NOT NULL DEFAULT '';
"""

# v4: named queues, their limits and pauses, and dependencies (issue 11).
# - `queue` names a job's queue; `blocked` counts the jobs it waits for (job_deps) that have not
#   completed. A blocked job is in no claim index, so waiting jobs cost a claim nothing; the
#   parent's mark_completed decrements its children in the same transaction.
# - Per-queue claim indexes serve claims restricted to some queues (worker start --queue, pauses,
#   full limits). A limited queue's processing jobs are counted inside the claim through
#   jobs_state_recent: as many rows as jobs run now, at most the live workers (an index of
#   their own cost every claim and every finish a page write: 8% of the claim-record cycle).
# - job_deps names the parent by id, so a child still says what it waited for once its parent
#   is deleted (a parent deleted before completing then keeps it dead).
# - queues has a row for every queue that has jobs or settings (so a claim that must pick among
#   queues reads their names from it, not from a scan of the jobs), with its settings:
#   max_running (0 = no limit) and paused (1 paused, -1 runs despite a pause of every queue,
#   0 neither); the row named '*' is `pause` with no name. Store.insert adds the rows of new
#   queues; a row goes when its queue has neither jobs nor settings (_prune).
_SCHEMA_V4 = """
ALTER TABLE jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE jobs ADD COLUMN blocked INTEGER NOT NULL DEFAULT 0;
DROP INDEX jobs_pending;
DROP INDEX jobs_failed;
CREATE INDEX jobs_pending ON jobs (priority, run_at) WHERE state = 'pending' AND blocked = 0;
CREATE INDEX jobs_failed ON jobs (priority, run_at) WHERE state = 'failed' AND blocked = 0;
CREATE INDEX jobs_pending_q ON jobs (queue, priority, run_at) WHERE state = 'pending' AND blocked = 0;
CREATE INDEX jobs_failed_q ON jobs (queue, priority, run_at) WHERE state = 'failed' AND blocked = 0;
-- `list --state pending|failed` shows the blocked jobs after the claimable ones, from this.
CREATE INDEX jobs_blocked ON jobs (state, priority, run_at) WHERE blocked > 0;
CREATE TABLE job_deps (
    child  INTEGER NOT NULL,  -- jobs.seq of the job that waits
    parent TEXT NOT NULL,     -- jobs.id of the job it waits for
    PRIMARY KEY (child, parent)
) WITHOUT ROWID;
CREATE INDEX job_deps_parent ON job_deps (parent);
CREATE TABLE queues (
    name        TEXT PRIMARY KEY,
    max_running INTEGER NOT NULL DEFAULT 0,
    paused      INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO queues (name) SELECT 'default' WHERE EXISTS (SELECT 1 FROM jobs);
"""

# v5 (cancel): when `cancel` names a processing job, the time it asked; its worker polls this
# during the run and stops it. Only ever set while the job is processing: every transition out
# of processing clears it (Store._finish).
_SCHEMA_V5 = """
ALTER TABLE jobs ADD COLUMN cancel_requested REAL;
"""

# v6: run history. One row per run in `runs`, written in the same transaction as the job's
# transition, and deleted with its job (by the trigger, so every way of deleting jobs takes
# them). `stats` and `metrics` read aggregates kept up to date in that same transaction, so
# their cost does not grow with the number of runs. `run_counts` holds, per queue and outcome,
# a row per minute (minute 0-59 of its hour), a row per hour (minute 60, after its minutes) and
# the running totals (hour TOTAL_HOUR): one table, so the three rows a run updates share the
# B-tree's last page (one page written per commit instead of three). A window reads its first,
# partial hour in minutes and every later hour in hours; rows older than RETENTION_MINUTES are
# dropped, never the totals, which delete and purge do not touch either (Prometheus counters).
# Histograms are JSON objects {bucket: count}, bucket being an index into stats.EDGES.
# `failure_counts` counts failed runs by command the same way (minutes and hours, no totals).
_SCHEMA_V6 = """
-- The aggregates use SQLite's JSON functions (built in since 3.38, and in every common build
-- before): fail here, at once and with the database's path, rather than at a worker's first run.
SELECT json_set('{}', '$."0"', 1);
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    job_seq     INTEGER NOT NULL,  -- jobs.seq of the job that ran
    queue       TEXT NOT NULL DEFAULT 'default',
    attempt     INTEGER NOT NULL,
    worker      TEXT,
    host        TEXT,
    started_at  REAL NOT NULL,
    ended_at    REAL NOT NULL,
    outcome     TEXT NOT NULL,
    exit_code   INTEGER,
    error       TEXT,
    output_tail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX runs_of_job ON runs (job_seq);
CREATE TRIGGER runs_go_with_their_job AFTER DELETE ON jobs BEGIN
    DELETE FROM runs WHERE job_seq = OLD.seq;
END;
CREATE TABLE run_counts (
    hour         INTEGER NOT NULL,  -- epoch hour the runs ended in; TOTAL_HOUR for the totals
    minute       INTEGER NOT NULL,  -- 0-59: a minute of that hour; 60: the whole hour
    queue        TEXT NOT NULL DEFAULT 'default',
    outcome      TEXT NOT NULL,
    runs         INTEGER NOT NULL,
    duration_sum REAL NOT NULL,
    duration_max REAL NOT NULL,
    wait_max     REAL NOT NULL,
    durations    TEXT NOT NULL,  -- histogram of run durations
    waits        TEXT NOT NULL,  -- histogram of waits from due to start
    PRIMARY KEY (hour, minute, queue, outcome)
) WITHOUT ROWID;
-- Written only when an hour's first run ends: updating a row leaves its index entry alone.
CREATE INDEX run_counts_hours ON run_counts (hour) WHERE minute = 60;
-- Failed runs by command (a hash of it), for "the commands that fail most".
CREATE TABLE failure_counts (
    hour         INTEGER NOT NULL,
    minute       INTEGER NOT NULL,
    queue        TEXT NOT NULL DEFAULT 'default',
    command_hash INTEGER NOT NULL,
    failures     INTEGER NOT NULL,
    command      TEXT NOT NULL,  -- its first COMMAND_CHARS characters
    PRIMARY KEY (hour, minute, queue, command_hash)
);
CREATE INDEX failure_counts_hours ON failure_counts (hour) WHERE minute = 60;
"""

# Each entry brings the schema from version N-1 to N; append, never edit.
MIGRATIONS = (_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3, _SCHEMA_V4, _SCHEMA_V5, _SCHEMA_V6)
SCHEMA_VERSION = len(MIGRATIONS)


def is_damage(exc: BaseException) -> bool:
    """True when SQLite says the file is corrupt or not a database: no retry can help."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in _DAMAGE_CODES
    return any(word in str(exc) for word in _DAMAGE_WORDS)


def _open_error(path: str, exc: sqlite3.Error) -> StoreError:
    if is_damage(exc):
        return DatabaseDamaged(path, str(exc))
    return StoreError(f"cannot open database {path}: {exc}")


class SqliteStore(StoreRules):
    """A queue's database. Open one per process (never share across fork)."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self.path = path
        self._depth = 0  # nesting of _write(): only the outermost begins and commits
        self._kept_minute: Optional[int] = None  # when record_run last dropped old aggregates

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, durable: bool = True) -> "SqliteStore":
        """Open (creating it 0600 if needed) and migrate the database at `path`.

        `durable=False` is for workers: a commit lost to power failure then only means a job
        runs again (delivery is at-least-once), while every enqueue stays fsynced.
        """
        if not os.path.exists(path):
            create_private(path)
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        except sqlite3.Error as exc:
            raise _open_error(path, exc) from None
        store = cls(conn, path)
        try:
            store._prepare(durable)
        except sqlite3.Error as exc:
            conn.close()
            raise _open_error(path, exc) from None
        return store

    def _prepare(self, durable: bool) -> None:
        """Migrate if needed and set the durability. Many processes opening a new database at
        once race to create its schema, and switching it to WAL can answer "database is locked"
        at once, without SQLite's busy wait: such a try is repeated until the busy timeout."""
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        while True:
            try:
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                if version != SCHEMA_VERSION:
                    self._migrate()
                break
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01 + os.urandom(1)[0] / 6400)  # 10–50 ms, so the racers spread out
        self._conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")

    @classmethod
    def open_readonly(cls, path: str) -> "SqliteStore":
        """Open an existing database to look at it only: never created, migrated or written."""
        from urllib.parse import quote

        try:
            conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True,
                                   timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
            conn.execute("PRAGMA user_version").fetchone()
        except sqlite3.Error as exc:
            raise _open_error(path, exc) from None
        return cls(conn, path)

    def _migrate(self) -> None:
        # journal_mode is persistent and cannot change inside a transaction.
        self._conn.execute("PRAGMA journal_mode = WAL")
        with self._write():
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database {self.path} has schema version {version}, newer than this "
                    f"queuectl knows ({SCHEMA_VERSION}); upgrade queuectl"
                )
            for script in MIGRATIONS[version:]:
                for statement in _statements(script):
                    self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction, taking the write lock up front (BEGIN IMMEDIATE).

        Nested uses join the outer transaction, so callers can make several transitions atomic.
        """
        if self._depth:
            self._depth += 1
            try:
                yield self._conn
            finally:
                self._depth -= 1
            return
        self._conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            if is_damage(exc):
                raise DatabaseDamaged(self.path, str(exc)) from None
            raise
        except BaseException:
            self._rollback()
            raise
        finally:
            self._depth = 0

    def _rollback(self) -> None:
        """End the transaction, if SQLite has not already (a full disk may roll it back itself).
        A COMMIT that failed (full disk, busy) leaves it open: every later BEGIN would fail."""
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def transaction(self):
        """Make the transitions inside one transaction: all happen, or none."""
        return self._write()

    def _select(self, sql: str, params: Iterable = ()) -> list:
        return [Job.from_row(row) for row in self._conn.execute(sql, params if isinstance(params, dict) else tuple(params))]

    # -- enqueue ---------------------------------------------------------------------------

    _duplicate_id = sqlite3.IntegrityError

    def _add_jobs(self, rows: list, queues: list, if_absent: bool,
                  progress: Optional[Callable[[int], None]]) -> None:
        """Insert the jobs' rows (see StoreRules.insert), count them, and add their queues."""
        before = self._conn.total_changes
        _insert_rows(self._conn, "INSERT OR IGNORE" if if_absent else "INSERT", rows, progress)
        self._conn.execute("UPDATE job_counts SET n = n + ? WHERE state = 'pending'",
                           (self._conn.total_changes - before,))
        self._conn.executemany("INSERT OR IGNORE INTO queues (name) VALUES (?)", [(queue,) for queue in queues])

    def _add_waits(self, job_id: str, parents: list, blocked: int) -> None:
        seq = self._conn.execute("SELECT seq FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
        self._conn.executemany("INSERT INTO job_deps (child, parent) VALUES (?, ?)",
                               [(seq, parent) for parent in parents])
        self._conn.execute("UPDATE jobs SET blocked = ? WHERE seq = ?", (blocked, seq))

    # -- reading ---------------------------------------------------------------------------

    def get(self, job_id: str) -> Optional[Job]:
        rows = self._with_after(self._select(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)))
        return rows[0] if rows else None

    def _with_after(self, jobs: list) -> list:
        """The jobs with their `after` (job_deps is not read by the claim or the worker)."""
        after: dict = {}
        for start in range(0, len(jobs), 500):
            chunk = [job.seq for job in jobs[start:start + 500]]
            marks = ",".join("?" * len(chunk))
            for child, parent in self._conn.execute(
                    f"SELECT child, parent FROM job_deps WHERE child IN ({marks})", chunk):
                after.setdefault(child, []).append(parent)
        return [job._replace(after=tuple(after[job.seq])) if job.seq in after else job for job in jobs]

    def waiting_for(self, job_id: str) -> list:
        """(id, state) of each job `job_id` waits for that has not completed; state None if deleted."""
        return self._conn.execute(
            "SELECT d.parent, p.state FROM jobs c JOIN job_deps d ON d.child = c.seq"
            " LEFT JOIN jobs p ON p.id = d.parent"
            " WHERE c.id = ? AND (p.state IS NULL OR p.state <> 'completed') ORDER BY d.parent",
            (job_id,)).fetchall()

    def resolve(self, token: str) -> str:
        """The full id for an id or a unique prefix of one (as git does with hashes)."""
        if self._conn.execute("SELECT 1 FROM jobs WHERE id = ?", (token,)).fetchone():
            return token
        # Ids are ASCII below 0x7f, so this range is exactly the ids starting with `token`.
        found = [r[0] for r in self._conn.execute(
            "SELECT id FROM jobs WHERE id > ? AND id < ? ORDER BY id LIMIT 6", (token, token + "\x7f"))]
        if not found:
            raise NotFound(f"no job with id or prefix {token!r}")
        if len(found) > 1:
            more = ", ..." if len(found) > 5 else ""
            raise NotFound(f"job id prefix {token!r} is ambiguous: it matches {', '.join(found[:5])}{more}")
        return found[0]

    def counts(self) -> dict:
        counted = dict(self._conn.execute("SELECT state, n FROM job_counts"))
        return {state: counted.get(state, 0) for state in STATES}

    def count(self, state: Optional[str], queue: Optional[str]) -> int:
        """Jobs in `state` (None: any) of `queue` (None: any); O(1) without a queue."""
        if queue is None:
            counts = self.counts()
            return counts[state] if state else sum(counts.values())
        where, params = ("queue = ?", [queue]) if state is None else ("queue = ? AND state = ?", [queue, state])
        return self._conn.execute(f"SELECT count(*) FROM jobs WHERE {where}", params).fetchone()[0]

    def list_jobs(self, state: Optional[str], limit: Optional[int], queue: Optional[str] = None) -> list:
        """A page of jobs: claim order for pending/failed, newest first otherwise."""
        if state in WAITING:
            return self._with_after(self._list_waiting(state, limit, queue))
        conditions = [sql for sql, value in (("state = :state", state), ("queue = :queue", queue)) if value]
        where = " WHERE " + " AND ".join(conditions) if conditions else ""
        page = " LIMIT :limit" if limit else ""
        return self._with_after(self._select(
            f"SELECT {JOB_COLUMNS} FROM jobs{where} ORDER BY seq DESC{page}",
            {"state": state, "queue": queue, "limit": limit}))

    def _list_waiting(self, state: str, limit: Optional[int], queue: Optional[str]) -> list:
        """Claimable jobs in claim order (an index walk), then those that wait for unfinished jobs."""
        sql = _EVERY_QUEUE if queue is None else _ONE_QUEUE
        params = {"queue": queue, "limit": limit, "state": state}
        page = " LIMIT :limit" if limit else ""
        jobs = self._select(f"SELECT {JOB_COLUMNS} {sql.by_state[state]} ORDER BY priority, run_at, seq{page}", params)
        if limit and len(jobs) >= limit:
            return jobs
        params["limit"] = limit and limit - len(jobs)
        only = " AND queue = :queue" if queue is not None else ""
        return jobs + self._select(f"SELECT {JOB_COLUMNS} FROM jobs INDEXED BY jobs_blocked"
                                   f" WHERE state = :state AND blocked > 0{only}"
                                   f" ORDER BY priority, run_at, seq{page}", params)

    def jobs_page(self, state: Optional[str], prefix: str, after: Optional[tuple], limit: int,
                  queue: Optional[str] = None) -> tuple:
        """A page for browsing: jobs in `state` (any when None) of `queue` (any when None) whose
        id starts with `prefix`, following the page key `after`; returns (jobs, the key of the
        next page or None). Keyset paging: a seek in an index per page, however deep the page,
        where OFFSET would walk every job before it."""
        if state in WAITING and not prefix:
            return self._waiting_page(state, after, limit, queue)
        order, keys = _page_order(state, prefix)
        where, params = [], []
        if state is not None:
            # With a prefix, `+state` keeps SQLite on the id index rather than sorting the state's jobs.
            where.append("+state = ?" if prefix else "state = ?")
            params.append(state)
        if queue is not None:
            where.append("queue = ?")
            params.append(queue)
        if prefix:
            # Ids are ASCII below 0x7f, so this range is exactly the ids starting with `prefix`.
            where.append("id >= ? AND id < ?")
            params += [prefix, prefix + "\x7f"]
        if after is not None:
            if len(after) != len(keys):
                raise ValueError("page key of the wrong shape")
            sign = "<" if order.endswith("DESC") else ">"
            where.append(f"({', '.join(keys)}) {sign} ({', '.join('?' * len(keys))})")
            params += list(after)
        conditions = "".join(f" AND {condition}" for condition in where)
        found = self._select(f"SELECT {JOB_COLUMNS} FROM jobs WHERE 1{conditions} ORDER BY {order} LIMIT ?",
                             [*params, limit + 1])
        page = found[:limit]
        return page, (tuple(getattr(page[-1], key) for key in keys) if len(found) > limit else None)

    def _waiting_page(self, state: str, after: Optional[tuple], limit: int, queue: Optional[str]) -> tuple:
        """Pending or failed jobs as `list` orders them: the claimable ones in claim order (their
        claim index), then those that wait for an unfinished job (jobs_blocked). The page key is
        (0 or 1 for claimable or blocked, priority, run_at, seq)."""
        if after is not None and (len(after) != 4 or after[0] not in (0, 1)):
            raise ValueError("page key of the wrong shape")
        part, position = (0, None) if after is None else (after[0], tuple(after[1:]))
        only = " AND queue = :queue" if queue is not None else ""
        sources = [(_ONE_QUEUE if queue is not None else _EVERY_QUEUE).by_state[state],
                   f"FROM jobs INDEXED BY jobs_blocked WHERE state = :state AND blocked > 0{only}"]
        found: list = []
        for number in range(part, 2):
            if len(found) > limit:
                break
            seek = "" if position is None else " AND (priority, run_at, seq) > (:priority, :run_at, :seq)"
            params = {"state": state, "queue": queue, "limit": limit + 1 - len(found),
                      **dict(zip(("priority", "run_at", "seq"), position or (None,) * 3))}
            found += [(number, job) for job in self._select(
                f"SELECT {JOB_COLUMNS} {sources[number]}{seek} ORDER BY priority, run_at, seq LIMIT :limit", params)]
            position = None
        page = found[:limit]
        key = None
        if len(found) > limit:
            number, last = page[-1]
            key = (number, last.priority, last.run_at, last.seq)
        return [job for _, job in page], key

    def states_of(self, ids: list) -> dict:
        """{id: state} for the ids that exist."""
        found = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(self._conn.execute(f"SELECT id, state FROM jobs WHERE id IN ({marks})", chunk))
        return found

    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap 'anything new?' for idle loops."""
        return self._conn.execute("PRAGMA data_version").fetchone()[0]

    def work_version(self) -> int:
        """Changes when new work may be due (here: at any commit); idle workers watch it."""
        return self.data_version()

    def change_stamp(self) -> tuple:
        """Changes whenever a transaction commits, comparable across connections (WAL mode: a
        commit writes to the -wal file). An empty -wal counts as none: every connection, a
        reader's too, creates one, and the last to close removes it."""
        stamp = []
        for name in (self.path, self.path + "-wal"):
            try:
                found = os.stat(name)
            except FileNotFoundError:
                stamp.append(None)
            else:
                stamp.append((found.st_mtime_ns, found.st_size, found.st_ino) if found.st_size else None)
        return tuple(stamp)

    def clock(self) -> float:
        """Now, by the clock every host of the queue agrees on: this machine's, for a file."""
        return time.time()

    # -- what is due -------------------------------------------------------------------------

    def next_run_at(self, queues: Optional[list] = None, skip_full: bool = True) -> Optional[float]:
        """The earliest run_at among claimable jobs, due or not, of `queues` (None: every
        queue) that are not paused and (unless `skip_full` is false) not full."""
        scope = self._scope(queues, skip_full)
        if scope is None:
            return self._earliest(_EVERY_QUEUE, {})
        times = [t for t in (self._earliest(_ONE_QUEUE, {"queue": q}) for q in scope) if t is not None]
        return min(times, default=None)

    def _earliest(self, sql: _ClaimSql, params: dict) -> Optional[float]:
        earliest, after = None, BELOW_ANY_PRIORITY
        for _ in range(PRIORITY_STEPS):
            priority = self._conn.execute(sql.next_priority, {**params, "after": after}).fetchone()[0]
            if priority is None:
                return earliest
            first = self._conn.execute(sql.first_at_priority, {**params, "priority": priority}).fetchone()[0]
            earliest = first if earliest is None else min(earliest, first)
            after = priority
        rest = self._conn.execute(sql.first_after, {**params, "after": after}).fetchone()[0]
        return earliest if rest is None else min(earliest, rest)

    def _next_due(self, now: float, scope: Optional[list]) -> Optional[Job]:
        """The job a claim takes: lowest priority, then earliest run_at, then enqueue order."""
        if scope is None:
            return self._head(_EVERY_QUEUE, now, {})
        heads = [job for job in (self._head(_ONE_QUEUE, now, {"queue": q}) for q in scope) if job is not None]
        return min(heads, key=lambda job: (job.priority, job.run_at, job.seq), default=None)

    def _head(self, sql: _ClaimSql, now: float, params: dict) -> Optional[Job]:
        after = BELOW_ANY_PRIORITY
        for _ in range(PRIORITY_STEPS):
            priority = self._conn.execute(sql.next_priority, {**params, "after": after}).fetchone()[0]
            if priority is None:
                return None
            row = self._conn.execute(sql.due_at_priority, {**params, "priority": priority, "now": now}).fetchone()
            if row is not None:
                return Job.from_row(row)
            after = priority
        row = self._conn.execute(sql.due_after, {**params, "after": after, "now": now}).fetchone()
        return None if row is None else Job.from_row(row)

    def _scope(self, queues: Optional[list], skip_full: bool = True) -> Optional[list]:
        """The queues a claim may take from: None for every queue (the fast path: nothing
        paused or full, every queue served), else the served queues not paused and not full
        (full ones kept when `skip_full` is false)."""
        return claim_scope(self._conn.execute(_SETTINGS).fetchall(), queues, skip_full, lambda: [
            row[0] for row in self._conn.execute("SELECT name FROM queues WHERE name <> ?", (ALL_QUEUES,))])

    def _running(self, queue: str) -> int:
        return self._conn.execute(_RUNNING_IN, (queue,)).fetchone()[0]

    def has_work(self, queues: Optional[list], now: float) -> bool:
        """Whether a --burst pool serving `queues` (None: every queue) has work left: a job of
        them running, or due or awaiting a retry in a queue that is neither paused nor full."""
        running = self.counts()[PROCESSING] if queues is None else any(map(self._running, queues))
        if running:
            return True
        scope = self._scope(queues)
        if scope is None and self.counts()[FAILED]:
            return True
        if scope and any(self._conn.execute(_FAILED_IN, (q,)).fetchone() for q in scope):
            return True
        next_run = self.next_run_at(queues)
        return next_run is not None and next_run <= now

    # -- queues ------------------------------------------------------------------------------

    def set_limit(self, queue: str, limit: int) -> None:
        """At most `limit` jobs of the queue processing at once; 0 removes the limit."""
        with self._write():
            self._set(queue, "max_running", limit)

    def _lift_pauses(self) -> list:
        """Every pause lifted; returns the queues that had one."""
        paused = [row[0] for row in self._conn.execute("SELECT name FROM queues WHERE paused <> 0")]
        self._conn.execute("UPDATE queues SET paused = 0")
        return paused

    def _set(self, queue: str, column: str, value: int) -> None:
        self._conn.execute("INSERT OR IGNORE INTO queues (name) VALUES (?)", (queue,))
        self._conn.execute(f"UPDATE queues SET {column} = ? WHERE name = ?", (value, queue))
        self._prune([queue])

    def _prune(self, queues: Iterable) -> None:
        """Forget these queues where they have neither jobs nor settings any more."""
        self._conn.executemany(
            "DELETE FROM queues WHERE name = ? AND max_running = 0 AND paused = 0"
            " AND NOT EXISTS (SELECT 1 FROM jobs WHERE queue = queues.name)", [(q,) for q in queues])

    def pauses(self) -> dict:
        """What is paused: `all` (a pause of every queue), `queues` paused by name, and
        `resumed`, the queues that run despite a pause of every queue."""
        return pauses_of(dict(self._conn.execute("SELECT name, paused FROM queues WHERE paused <> 0")))

    def queues(self) -> list:
        """Every queue that has jobs or settings, by name (counting its jobs reads them all)."""
        counts: dict = {}
        for queue, state, n in self._conn.execute("SELECT queue, state, count(*) FROM jobs GROUP BY queue, state"):
            counts.setdefault(queue, dict.fromkeys(STATES, 0))[state] = n
        settings = {name: (limit, flag) for name, limit, flag in self._conn.execute(
            "SELECT name, max_running, paused FROM queues WHERE max_running <> 0 OR paused <> 0")}
        every = settings.pop(ALL_QUEUES, (0, 0))[1] == 1
        return [QueueInfo(name, counts.get(name, dict.fromkeys(STATES, 0)), settings.get(name, (0, 0))[0] or None,
                          settings.get(name, (0, 0))[1] == 1 or (every and settings.get(name, (0, 0))[1] != -1))
                for name in sorted(counts.keys() | settings.keys())]

    # -- user transitions --------------------------------------------------------------------

    def delete(self, ids: list) -> None:
        """Remove jobs that are not processing and that no unfinished job waits for (unless it
        is removed too; a completed job is waited for no more); all or none."""
        with self._write() as conn:
            states = self._check_deletable(ids)
            self._unlink("id = ?", [(i,) for i in ids], [(i,) for i in ids if states[i] == COMPLETED])
            queues = {row[0] for start in range(0, len(ids), 500) for row in conn.execute(
                f"SELECT DISTINCT queue FROM jobs WHERE id IN ({','.join('?' * len(ids[start:start + 500]))})",
                ids[start:start + 500])}
            conn.executemany("DELETE FROM jobs WHERE id = ? AND state <> 'processing'", [(i,) for i in ids])
            self._prune(queues)

    def _waiters(self, ids: list) -> list:
        """(parent, child) for each unfinished job that waits for one of `ids`."""
        found = []
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found += self._conn.execute(
                "SELECT d.parent, j.id FROM job_deps d JOIN jobs j ON j.seq = d.child"
                f" WHERE d.parent IN ({','.join('?' * len(chunk))})"
                " AND (j.state = 'pending' OR j.state = 'processing' OR j.state = 'failed')", chunk).fetchall()
        return found

    def _unlink(self, where: str, gone: list, completed: list) -> None:
        """Before jobs are deleted: drop what they wait for, and the waits on those of them that
        completed (already satisfied). Waits on a job deleted unfinished stay: they keep it dead."""
        if self._conn.execute("SELECT 1 FROM job_deps LIMIT 1").fetchone() is None:
            return
        self._conn.executemany(f"DELETE FROM job_deps WHERE child IN (SELECT seq FROM jobs WHERE {where})", gone)
        self._conn.executemany(f"DELETE FROM job_deps WHERE parent IN (SELECT id FROM jobs WHERE {where})", completed)

    def purge(self, state: str, updated_before: Optional[float]) -> list:
        """Delete finished jobs in `state` (last changed before the given time); returns their ids."""
        if state not in (COMPLETED, DEAD):
            raise Conflict(f"only completed or dead jobs can be purged, not {state}")
        where = "state = ?" + (" AND updated_at < ?" if updated_before is not None else "")
        params = (state,) if updated_before is None else (state, updated_before)
        with self._write() as conn:
            ids = [r[0] for r in conn.execute(f"SELECT id FROM jobs WHERE {where}", params)]
            self._unlink(where, [params], [params] if state == COMPLETED else [])
            queues = [r[0] for r in conn.execute(f"SELECT DISTINCT queue FROM jobs WHERE {where}", params)]
            conn.execute(f"DELETE FROM jobs WHERE {where}", params)
            self._prune(queues)
        return ids

    def count_finished(self, state: str, updated_before: float) -> int:
        """How many jobs `purge(state, updated_before)` would delete now."""
        return self._conn.execute("SELECT count(*) FROM jobs WHERE state = ? AND updated_at < ?",
                                  (state, updated_before)).fetchone()[0]

    def requeue_dead(self, ids: Optional[list], now: float) -> list:
        """Move dead jobs (the given ones, or all when None) back to pending with attempts 0,
        and the jobs that died for them (see _revive); returns every id moved."""
        with self._write() as conn:
            if ids is None:
                ids = [r[0] for r in conn.execute("SELECT id FROM jobs WHERE state = 'dead'")]
            self._check_states(ids, (DEAD,), "dead", "only dead jobs can be retried")
            return self._revive(ids, now)

    # -- dependencies --------------------------------------------------------------------------

    def _bury(self, ids: list, error: str, now: float) -> list:
        """Make these pending or failed jobs dead with `error`, attempts unchanged, and every
        unfinished job that waits for them, down the chain (_bury_dependents). Joins the
        caller's transaction; returns the ids made dead."""
        with self._write() as conn:
            buried = [job_id for job_id in ids if conn.execute(
                "UPDATE jobs SET state = 'dead', last_error = ?, updated_at = ?"
                " WHERE id = ? AND (state = 'pending' OR state = 'failed')", (error, now, job_id)).rowcount]
            return buried + self._bury_dependents(buried, now)

    def _bury_dependents(self, dead: list, now: float) -> list:
        """The jobs that wait for these dead jobs become dead, "dependency ID is dead" (ID: the
        one they wait for directly), and so on down the chain; returns their ids."""
        made, frontier = [], list(dead)
        while frontier:
            parent = frontier.pop()
            children = [row[0] for row in self._conn.execute(
                "SELECT j.id FROM job_deps d JOIN jobs j ON j.seq = d.child"
                " WHERE d.parent = ? AND (j.state = 'pending' OR j.state = 'failed')", (parent,))]
            for child in children:
                if self._conn.execute(
                        "UPDATE jobs SET state = 'dead', last_error = ?, updated_at = ?"
                        " WHERE id = ? AND (state = 'pending' OR state = 'failed')",
                        (dependency_dead(parent), now, child)).rowcount:
                    made.append(child)
                    frontier.append(child)
        return made

    def _revive(self, ids: list, now: float) -> list:
        """Back to pending, attempts 0, run_at now: these completed or dead jobs and, down the
        chain, the dead jobs that died for one of them, which wait again. One that waits for a
        dead job (or one deleted unfinished) is dead again at once. Joins the caller's
        transaction; returns the ids moved, the given ones first."""
        revived, frontier, seen = [], list(ids), set()
        while frontier:
            job_id = frontier.pop(0)
            if job_id in seen:
                continue
            seen.add(job_id)
            row = self._conn.execute("SELECT seq, state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row[1] not in FINISHED:
                continue
            self._make_pending(job_id, row[0], row[1], now)
            revived.append(job_id)
            frontier += [r[0] for r in self._conn.execute(
                "SELECT j.id FROM job_deps d JOIN jobs j ON j.seq = d.child"
                " WHERE d.parent = ? AND j.state = 'dead' AND j.last_error = ?", (job_id, dependency_dead(job_id)))]
        for job_id in revived:
            gone = self._conn.execute(
                "SELECT d.parent FROM jobs c JOIN job_deps d ON d.child = c.seq LEFT JOIN jobs p ON p.id = d.parent"
                " WHERE c.id = ? AND (p.state IS NULL OR p.state = 'dead') ORDER BY d.parent LIMIT 1",
                (job_id,)).fetchone()
            if gone is not None:
                self._bury([job_id], dependency_dead(gone[0]), now)
        return revived

    def _make_pending(self, job_id: str, seq: int, state: str, now: float) -> None:
        if state == COMPLETED:  # its waiters wait for it again
            self._conn.execute("UPDATE jobs SET blocked = blocked + 1"
                               " WHERE seq IN (SELECT child FROM job_deps WHERE parent = ?)", (job_id,))
        unfinished = self._conn.execute(
            "SELECT count(*) FROM job_deps d LEFT JOIN jobs p ON p.id = d.parent"
            " WHERE d.child = ? AND (p.state IS NULL OR p.state <> 'completed')", (seq,)).fetchone()[0]
        self._conn.execute("UPDATE jobs SET state = 'pending', attempts = 0, run_at = ?, updated_at = ?,"
                           " blocked = ? WHERE seq = ?", (now, now, unfinished, seq))

    # -- worker transitions ----------------------------------------------------------------

    def claim_next(self, worker_id: str, now: float, queues: Optional[list] = None) -> Optional[Job]:
        """Take the next due job of `queues` (None: every queue) that is neither paused nor
        full, and waits for nothing unfinished: lowest priority, then earliest run_at, then
        enqueue order."""
        with self._write() as conn:
            job = self._next_due(now, self._scope(queues))
            if job is None:
                return None
            conn.execute(
                "UPDATE jobs SET state = 'processing', attempts = attempts + 1, worker_id = ?,"
                " started_at = ?, updated_at = ? WHERE seq = ?",
                (worker_id, now, now, job.seq),
            )
        return job._replace(state=PROCESSING, attempts=job.attempts + 1, worker_id=worker_id,
                            started_at=now, updated_at=now)

    def _finish(self, job: Job, worker_id: str, assignments: str, params: tuple, guard: str = "") -> bool:
        """Apply one transition to a job this worker holds; False if it moved on meanwhile
        (or `guard`, more SQL conditions, does not hold)."""
        with self._write():
            cursor = self._conn.execute(
                f"UPDATE jobs SET {assignments}, worker_id = NULL, cancel_requested = NULL"
                f" WHERE seq = ? AND state = 'processing' AND worker_id = ?{guard}",
                (*params, job.seq, worker_id),
            )
        return cursor.rowcount == 1

    def mark_completed(self, job: Job, worker_id: str, now: float) -> bool:
        """Completed; in the same transaction, the jobs waiting for it wait for one job fewer.
        One that waits for none any more becomes due now (if not later): it was not due while
        it waited, so neither its place in the claim order nor its wait in stats and metrics
        counts that time."""
        with self._write() as conn:
            done = self._finish(job, worker_id, "state = 'completed', exit_code = 0, last_error = NULL,"
                                " updated_at = ?", (now,))
            if done:
                conn.execute("UPDATE jobs SET blocked = blocked - 1, run_at = CASE WHEN blocked = 1"
                             " AND state IN ('pending', 'failed') AND run_at < ? THEN ? ELSE run_at END"
                             " WHERE seq IN (SELECT child FROM job_deps WHERE parent = ?)", (now, now, job.id))
        return done

    # mark_failed, mark_dead and release refuse (False) a job whose cancel was requested: the
    # worker then records the run with mark_cancelled, so a cancel that comes as the run ends
    # still wins over a retry. Only a success beats it.

    def mark_failed(self, job: Job, worker_id: str, exit_code: Optional[int], error: str,
                    run_at: float, now: float) -> bool:
        return self._finish(job, worker_id, "state = 'failed', exit_code = ?, last_error = ?,"
                            " run_at = ?, updated_at = ?", (exit_code, error, run_at, now), _NOT_CANCELLED)

    def mark_dead(self, job: Job, worker_id: str, exit_code: Optional[int], error: str,
                  now: float) -> bool:
        """Dead (in the DLQ); in the same transaction, so is every job waiting for it, down the chain."""
        with self._write():
            done = self._finish(job, worker_id, "state = 'dead', exit_code = ?, last_error = ?,"
                                " updated_at = ?", (exit_code, error, now), _NOT_CANCELLED)
            if done:
                self._bury_dependents([job.id], now)
        return done

    def release(self, job: Job, worker_id: str, now: float) -> bool:
        """Give back a job whose run was killed by a forced stop: pending, attempt not counted."""
        return self._finish(job, worker_id, "state = 'pending', attempts = attempts - 1,"
                            " updated_at = ?", (now,), _NOT_CANCELLED)

    def processing_holders(self) -> list:
        """(job, pid, host, heartbeat_at) for every processing job; None where no worker row is left."""
        columns = ", ".join(f"j.{name.strip()}" for name in JOB_COLUMNS.split(","))
        rows = self._conn.execute(
            f"SELECT {columns}, w.pid, w.host, w.heartbeat_at FROM jobs j"
            " LEFT JOIN workers w ON w.worker_id = j.worker_id WHERE j.state = 'processing'"
        )
        return [(Job.from_row(row[:-3]), *row[-3:]) for row in rows]

    def jobs_of_worker(self, worker_id: str) -> list:
        return self._select(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'processing' AND worker_id = ?", (worker_id,))

    def integrity_problems(self, limit: int = 20) -> list:
        """What PRAGMA integrity_check finds, at most `limit` lines; [] when the file is sound."""
        try:
            rows = [row[0] for row in self._conn.execute(f"PRAGMA integrity_check({int(limit)})")]
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            return [str(exc)]
        return [] if rows == ["ok"] else rows

    # -- cancelling ------------------------------------------------------------------------

    def cancel_waiting(self, job_id: str, now: float) -> bool:
        """A pending or failed job to the DLQ: dead, "cancelled", attempts unchanged."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET state = 'dead', exit_code = NULL, last_error = ?, updated_at = ?"
                " WHERE id = ? AND (state = 'pending' OR state = 'failed')", (CANCELLED, now, job_id))
            if cursor.rowcount:
                self._bury_dependents([job_id], now)
        return cursor.rowcount == 1

    def request_cancel(self, job_id: str, now: float) -> bool:
        """Ask the worker of a processing job to stop its run (a repeated request keeps the first time)."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET cancel_requested = coalesce(cancel_requested, ?)"
                " WHERE id = ? AND state = 'processing'", (now, job_id))
        return cursor.rowcount == 1

    def cancel_requested(self, job: Job) -> bool:
        """Whether `cancel` asked to stop this job's run: one rowid lookup, so workers can poll it."""
        row = self._conn.execute("SELECT cancel_requested FROM jobs WHERE seq = ?", (job.seq,)).fetchone()
        return row is not None and row[0] is not None

    def mark_cancelled(self, job: Job, worker_id: str, now: float) -> bool:
        """Record a run stopped by `cancel`: dead, "cancelled", exit_code null, the run counted;
        in the same transaction, so is every job waiting for it, down the chain."""
        with self._write():
            done = self._finish(job, worker_id, "state = 'dead', exit_code = NULL, last_error = ?,"
                                " updated_at = ?", (CANCELLED, now))
            if done:
                self._bury_dependents([job.id], now)
        return done

    # -- run history ------------------------------------------------------------------------

    def record_run(self, job: Job, run: Run, queue: str = "default") -> None:
        """Record one finished run of `job` and count it in the aggregates; call it in the
        transaction of the job's transition, so history and job never disagree."""
        duration = max(0.0, run.ended_at - run.started_at)
        wait = max(0.0, run.started_at - job.run_at)
        minute = int(run.ended_at // 60)
        params = {
            "seq": job.seq, "queue": queue, "attempt": run.attempt, "worker": run.worker,
            "host": run.host, "started": run.started_at, "ended": run.ended_at,
            "outcome": run.outcome, "exit_code": run.exit_code, "error": run.error,
            "tail": run.output_tail, "duration": duration, "wait": wait,
            "dpath": f'$."{stats.bucket(duration)}"', "wpath": f'$."{stats.bucket(wait)}"',
        }
        with self._write() as conn:
            conn.execute(_RUN_INSERT, params)
            for hour, slot in ((minute // 60, minute % 60), (minute // 60, WHOLE_HOUR), (TOTAL_HOUR, WHOLE_HOUR)):
                params.update(hour=hour, slot=slot)
                conn.execute(_COUNT_UPSERT, params)
            if run.outcome in FAILED_RUNS:
                params.update(hash=command_hash(job.command), command=job.command[:COMMAND_CHARS])
                for slot in (minute % 60, WHOLE_HOUR):
                    params.update(hour=minute // 60, slot=slot)
                    conn.execute(_FAILURE_UPSERT, params)
            if minute != self._kept_minute:  # once a minute: drop aggregates past retention
                self._kept_minute = minute
                past = (minute - RETENTION_MINUTES) // 60
                conn.execute("DELETE FROM run_counts WHERE hour < ?", (past,))
                conn.execute("DELETE FROM failure_counts WHERE hour < ?", (past,))

    def runs_of(self, job: Job) -> list:
        """The job's runs, oldest first."""
        rows = self._conn.execute(
            "SELECT attempt, worker, host, started_at, ended_at, outcome, exit_code, error, output_tail"
            " FROM runs WHERE job_seq = ? ORDER BY id", (job.seq,))
        return [Run(*row) for row in rows]

    def run_window(self, since: float, queue: Optional[str] = None) -> "stats.Window":
        """The runs that ended from the minute of `since` on, summed from the aggregates."""
        periods, params = _window("run_counts", "outcome, runs, duration_sum, duration_max, wait_max, durations, waits",
                                  since, queue)
        by_outcome, total, longest, waited = {}, 0.0, 0.0, 0.0
        for outcome, runs, duration_sum, duration_max, wait_max in self._conn.execute(
                "SELECT outcome, sum(runs), sum(duration_sum), max(duration_max), max(wait_max)"
                f" FROM ({periods}) GROUP BY outcome", params):
            by_outcome[outcome] = runs
            total += duration_sum
            longest, waited = max(longest, duration_max), max(waited, wait_max)
        histograms = [
            dict((int(key), n) for key, n in self._conn.execute(
                f"SELECT h.key, sum(h.value) FROM ({periods}) AS p, json_each(p.{column}) AS h GROUP BY h.key",
                params))
            for column in ("durations", "waits")
        ]
        return stats.Window(by_outcome, histograms[0], total, longest, histograms[1], waited)

    def failing_commands(self, since: float, queue: Optional[str] = None, limit: int = 5) -> list:
        """[(command, failed runs)] of the commands with the most failed runs from `since` on."""
        periods, params = _window("failure_counts", "command_hash, command, failures", since, queue)
        return [tuple(row) for row in self._conn.execute(
            f"SELECT command, sum(failures) AS n FROM ({periods})"
            " GROUP BY command_hash ORDER BY n DESC, command LIMIT :limit", {**params, "limit": limit})]

    def run_totals(self) -> list:
        """[(queue, outcome, runs, duration_sum, durations histogram)] since the queue began:
        deleting or purging jobs never lowers them."""
        import json

        rows = self._conn.execute("SELECT queue, outcome, runs, duration_sum, durations FROM run_counts"
                                  " WHERE hour = ? AND minute = ? ORDER BY queue, outcome",
                                  (TOTAL_HOUR, WHOLE_HOUR))
        return [(queue, outcome, runs, total, stats.merge({}, json.loads(histogram)))
                for queue, outcome, runs, total, histogram in rows]

    def paused_queues(self) -> dict:
        """{queue: paused?} for every queue with jobs or settings (its `queues` row): cheap,
        whatever the number of jobs."""
        return paused_map(dict(self._conn.execute("SELECT name, paused FROM queues")))

    def queue_limits(self) -> dict:
        """{queue: its limit} of the queues that have one: cheap, whatever the number of jobs."""
        return dict(self._conn.execute("SELECT name, max_running FROM queues WHERE max_running > 0 AND name <> ?",
                                       (ALL_QUEUES,)))

    def runs_per_minute(self, now: float, minutes: int = 60, queue: Optional[str] = None) -> list:
        """[(minute, outcome, runs)] for the runs that ended in the last `minutes` minutes (the
        one of `now` included), `minute` being epoch seconds / 60: one range of the minute rows."""
        only = " AND queue = :queue" if queue is not None else ""
        rows = self._conn.execute(
            "SELECT hour, minute, outcome, sum(runs) FROM run_counts"
            " WHERE (hour, minute) >= (:hour0, :minute0) AND (hour, minute) <= (:hour1, :minute1)"
            f" AND minute < 60{only} GROUP BY hour, minute, outcome",
            {**minute_range(now, minutes), "queue": queue})
        return [(hour * 60 + minute, outcome, runs) for hour, minute, outcome, runs in rows]

    # -- workers ---------------------------------------------------------------------------

    def register_worker(self, worker_id: str, pid: int, pool_id: str, host: str, home: str,
                        now: float) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO workers (worker_id, pid, pool_id, host, home, started_at, heartbeat_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (worker_id, pid, pool_id, host, home, now, now),
        )

    def heartbeat(self, worker_id: str, now: float) -> bool:
        """Record that the worker lives; False if its row was removed (it was presumed dead)."""
        cursor = self._conn.execute(
            "UPDATE workers SET heartbeat_at = ? WHERE worker_id = ?", (now, worker_id))
        return cursor.rowcount == 1

    def remove_worker(self, worker_id: str) -> None:
        self._conn.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))

    def remove_stale_workers(self, now: float, lease_seconds: float) -> None:
        self._conn.execute("DELETE FROM workers WHERE heartbeat_at < ?", (now - lease_seconds,))

    def workers(self, now: float, lease_seconds: float) -> list:
        """Workers heard from within the lease, each with the job it is running."""
        rows = self._conn.execute(
            "SELECT w.worker_id, w.pid, w.pool_id, w.host, w.home, w.started_at, w.heartbeat_at,"
            " j.id, j.started_at"
            " FROM workers w LEFT JOIN jobs j ON j.state = 'processing' AND j.worker_id = w.worker_id"
            " WHERE w.heartbeat_at >= ? ORDER BY w.pool_id, w.started_at, w.worker_id",
            (now - lease_seconds,),
        )
        return [WorkerInfo(*row) for row in rows]


def _reporting_damage(method):
    """Turn SQLite's corrupt/not-a-database errors into DatabaseDamaged, naming the file."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise DatabaseDamaged(self.path, str(exc)) from None
            raise
    return guarded


def _page_order(state: Optional[str], prefix: str) -> tuple:
    """(ORDER BY, key columns) of a browsing page: by id when searching, claim order for the
    waiting states, newest first otherwise (as `list` orders them)."""
    if prefix:
        return "id", ("id",)
    if state in WAITING:
        return "priority, run_at, seq", ("priority", "run_at", "seq")
    return "seq DESC", ("seq",)




# Every public method, including those added later: a damaged page can surface in any query,
# and a caller must be able to tell it from a busy or full database without importing sqlite3.
for _name, _method in [(name, getattr(SqliteStore, name)) for name in dir(SqliteStore)]:  # inherited ones too
    if isinstance(_method, types.FunctionType) and not _name.startswith("_"):
        setattr(SqliteStore, _name, _reporting_damage(_method))


_INSERT_COLUMNS = "(id, command, state, max_retries, priority, timeout, run_at, cwd, created_at, updated_at, queue)"
_ROWS_PER_STATEMENT = 99  # 990 parameters: under SQLite's oldest limit of 999 per statement


def _insert_rows(conn: sqlite3.Connection, verb: str, rows: list,
                 progress: Optional[Callable[[int], None]] = None) -> None:
    """Insert many rows per statement: Python's sqlite3 costs more per statement than SQLite
    costs per row, so this halves bulk enqueue time."""
    one = "(?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)"
    per = _ROWS_PER_STATEMENT
    full = len(rows) - len(rows) % per
    if full:
        many = f"{verb} INTO jobs {_INSERT_COLUMNS} VALUES " + ", ".join([one] * per)
        params = (tuple(chain.from_iterable(rows[i:i + per])) for i in range(0, full, per))
        conn.executemany(many, params if progress is None else _telling(params, per, progress))
    if full < len(rows):
        conn.executemany(f"{verb} INTO jobs {_INSERT_COLUMNS} VALUES {one}", rows[full:])
        if progress is not None:
            progress(len(rows) - full)


def _telling(params: Iterator, rows_each: int, progress: Callable[[int], None]) -> Iterator:
    """The statements' parameters, telling `progress` every 100 statements (rows_each rows each)."""
    number = 0
    for number, item in enumerate(params, 1):
        yield item
        if number % 100 == 0:
            progress(100 * rows_each)
    if number % 100:
        progress(number % 100 * rows_each)


_RUN_INSERT = (
    "INSERT INTO runs (job_seq, queue, attempt, worker, host, started_at, ended_at, outcome,"
    " exit_code, error, output_tail) VALUES (:seq, :queue, :attempt, :worker,"
    " coalesce(:host, (SELECT host FROM workers WHERE worker_id = :worker)),"
    " :started, :ended, :outcome, :exit_code, :error, :tail)"
)
_COUNT_UPSERT = (
    "INSERT INTO run_counts (hour, minute, queue, outcome, runs, duration_sum, duration_max, wait_max,"
    " durations, waits) VALUES (:hour, :slot, :queue, :outcome, 1, :duration, :duration, :wait,"
    " json_set('{}', :dpath, 1), json_set('{}', :wpath, 1))"
    " ON CONFLICT (hour, minute, queue, outcome) DO UPDATE SET runs = runs + 1,"
    " duration_sum = duration_sum + :duration, duration_max = max(duration_max, :duration),"
    " wait_max = max(wait_max, :wait),"
    " durations = json_set(durations, :dpath, coalesce(json_extract(durations, :dpath), 0) + 1),"
    " waits = json_set(waits, :wpath, coalesce(json_extract(waits, :wpath), 0) + 1)"
)
_FAILURE_UPSERT = (
    "INSERT INTO failure_counts (hour, minute, queue, command_hash, failures, command)"
    " VALUES (:hour, :slot, :queue, :hash, 1, :command)"
    " ON CONFLICT (hour, minute, queue, command_hash) DO UPDATE SET failures = failures + 1"
)


def _window(table: str, columns: str, since: float, queue: Optional[str]) -> tuple:
    """The aggregate rows of a window from the minute of `since` on: its first, partial hour
    in minutes, every later hour in hours (at most 59 + 744 rows for 31 days). Returns
    (a SELECT of `columns`, its parameters)."""
    only = " AND queue = :queue" if queue is not None else ""
    sql = (f"SELECT {columns} FROM {table} WHERE hour = :partial AND minute >= :minute AND minute < 60{only}"
           f" UNION ALL SELECT {columns} FROM {table} WHERE minute = 60 AND hour >= :whole"
           f" AND hour < {TOTAL_HOUR}{only}")
    return sql, {**window_bounds(since), "queue": queue}


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _statements(script: str) -> list:
    """Split a schema script into statements (sqlite3.complete_statement knows about triggers)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return [s for s in statements if s]
