"""The only module that speaks SQL: schema, migrations, and one method per transition or query.

Everything above this module sees Job records and plain values, never a cursor, so a PostgreSQL
store for workers on several hosts can later implement the same methods.
"""
from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from itertools import chain
from typing import Iterable, Iterator, Optional

from .errors import Conflict, NotFound, StoreError
from .home import create_private
from .models import COMPLETED, DEAD, FAILED, PENDING, PROCESSING, STATES, Job, WorkerInfo

# Callers catch these to report a database failure with its path, without importing sqlite3.
DB_ERRORS = (sqlite3.Error,)
BUSY_TIMEOUT_SECONDS = 60.0
JOB_COLUMNS = (
    "seq, id, command, state, attempts, max_retries, priority, timeout, run_at, cwd, "
    "created_at, updated_at, exit_code, last_error, worker_id, started_at"
)
WAITING = ("pending", "failed")
# Claim order within a waiting state is (priority, run_at, seq), which is exactly the order of
# that state's partial index (schema v2): its rowid, seq, comes last. Queries name the index,
# because SQLite's planner, without ANALYZE statistics, may prefer jobs_state_recent and sort.
_BY_STATE = {state: f"FROM jobs INDEXED BY jobs_{state} WHERE state = '{state}'" for state in WAITING}


def _best(selects: list, order: str) -> str:
    """The best row of several per-state queries, each an index seek: one `state IN (...)`
    query would instead make SQLite sort every waiting job (O(n) per claim)."""
    return " UNION ALL ".join(f"SELECT * FROM ({sql})" for sql in selects) + f" ORDER BY {order} LIMIT 1"


# The claim walks the distinct waiting priorities, best first, and takes the head of the first
# that has a due job: a few index seeks, however many not-yet-due jobs sit at better priorities.
_NEXT_PRIORITY = "SELECT min(p) FROM (" + " UNION ALL ".join(
    f"SELECT min(priority) AS p {where} AND priority > :after" for where in _BY_STATE.values()) + ")"
_DUE_AT_PRIORITY = _best([
    f"SELECT {JOB_COLUMNS} {where} AND priority = :priority AND run_at <= :now ORDER BY run_at, seq LIMIT 1"
    for where in _BY_STATE.values()], "run_at, seq")
_FIRST_AT_PRIORITY = "SELECT min(t) FROM (" + " UNION ALL ".join(
    f"SELECT min(run_at) AS t {where} AND priority = :priority" for where in _BY_STATE.values()) + ")"
BELOW_ANY_PRIORITY = -(2**63)  # SQLite's smallest integer; enqueue allows -1e9 to 1e9
# After PRIORITY_STEPS priorities with nothing due, one range scan over the rest instead.
PRIORITY_STEPS = 8
_DUE_AFTER = _best([
    f"SELECT {JOB_COLUMNS} {where} AND priority > :after AND run_at <= :now"
    " ORDER BY priority, run_at, seq LIMIT 1" for where in _BY_STATE.values()], "priority, run_at, seq")
_FIRST_AFTER = "SELECT min(t) FROM (" + " UNION ALL ".join(
    f"SELECT min(run_at) AS t {where} AND priority > :after" for where in _BY_STATE.values()) + ")"

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

# Each entry brings the schema from version N-1 to N; append, never edit.
MIGRATIONS = (_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3)
SCHEMA_VERSION = len(MIGRATIONS)


def new_job_ids(count: int) -> list:
    """`count` ids of 16 random hex digits: collisions stay negligible at millions of jobs, and
    any unique prefix works. One urandom call for all (a call per id was 5% of bulk enqueue)."""
    digits = os.urandom(8 * count).hex()
    # Sorted, so a batch's ids go into the id index in order: random order made inserting 100k
    # jobs a third slower (a random B-tree page touched per row). They are no less random.
    return sorted(digits[start:start + 16] for start in range(0, 16 * count, 16))


class Store:
    """A queue's database. Open one per process (never share across fork)."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self.path = path
        self._depth = 0  # nesting of _write(): only the outermost begins and commits

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, durable: bool = True) -> "Store":
        """Open (creating it 0600 if needed) and migrate the database at `path`.

        `durable=False` is for workers: a commit lost to power failure then only means a job
        runs again (delivery is at-least-once), while every enqueue stays fsynced.
        """
        if not os.path.exists(path):
            create_private(path)
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from None
        store = cls(conn, path)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                store._migrate()
            conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open database {path}: {exc}") from None
        return store

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
        except BaseException:
            self._depth = 0
            self._conn.execute("ROLLBACK")
            raise
        self._depth = 0
        self._conn.execute("COMMIT")

    def transaction(self):
        """Make the transitions inside one transaction: all happen, or none."""
        return self._write()

    def _select(self, sql: str, params: Iterable = ()) -> list:
        return [Job.from_row(row) for row in self._conn.execute(sql, tuple(params))]

    # -- enqueue ---------------------------------------------------------------------------

    def insert(self, jobs: list, now: float, if_absent: bool = False) -> list:
        """Insert NewJobs in one transaction, all or none; returns the ids actually inserted.

        With `if_absent`, jobs whose id exists already are skipped instead of refusing all.
        """
        given = [j.id for j in jobs if j.id is not None]
        fresh = iter(new_job_ids(len(jobs) - len(given)))
        ids = [job.id or next(fresh) for job in jobs]
        if not if_absent and len(set(given)) < len(given):
            _refuse_repeats(given)
        rows = [
            (job_id, j.command, PENDING, j.max_retries, j.priority, j.timeout, j.run_at, j.cwd, now, now)
            for job_id, j in zip(ids, jobs)
        ]
        verb = "INSERT OR IGNORE" if if_absent else "INSERT"
        try:
            with self._write() as conn:
                existing = self._existing_ids(given) if if_absent else set()
                before = conn.total_changes
                _insert_rows(conn, verb, rows)
                conn.execute("UPDATE job_counts SET n = n + ? WHERE state = 'pending'",
                             (conn.total_changes - before,))
        except sqlite3.IntegrityError:
            # Looked up after the rollback, so ids inserted earlier in this batch are not named.
            taken = sorted(self._existing_ids(given))
            shown = ", ".join(taken[:5]) + (" ..." if len(taken) > 5 else "")
            raise Conflict(f"job id already exists: {shown}; nothing was enqueued") from None
        if not if_absent:
            return ids
        return list(dict.fromkeys(job_id for job_id in ids if job_id not in existing))

    def _existing_ids(self, ids: list) -> set:
        found = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self._conn.execute(f"SELECT id FROM jobs WHERE id IN ({marks})", chunk))
        return found

    # -- reading ---------------------------------------------------------------------------

    def get(self, job_id: str) -> Optional[Job]:
        rows = self._select(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return rows[0] if rows else None

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

    def list_jobs(self, state: Optional[str], limit: Optional[int]) -> list:
        """A page of jobs: claim order for pending/failed, newest first otherwise."""
        if state in (PENDING, FAILED):
            where, order, params = _BY_STATE[state], "ORDER BY priority, run_at, seq", []
        elif state is not None:
            where, order, params = "FROM jobs WHERE state = ?", "ORDER BY seq DESC", [state]
        else:
            where, order, params = "FROM jobs", "ORDER BY seq DESC", []
        page = " LIMIT ?" if limit else ""
        if limit:
            params.append(limit)
        return self._select(f"SELECT {JOB_COLUMNS} {where} {order}{page}", params)

    def jobs_page(self, state: Optional[str], prefix: str, after: Optional[tuple], limit: int) -> list:
        """A page for browsing: jobs in `state` (any when None) whose id starts with `prefix`,
        following the job whose `page_key` is `after`. Keyset paging: a seek in an index per
        page, however deep the page, where OFFSET would walk every job before it."""
        order, keys = _page_order(state, prefix)
        if state in WAITING and not prefix:
            source, where, params = _BY_STATE[state], [], []  # its partial index, in claim order
        else:
            source, where, params = "FROM jobs WHERE 1", [], []
            if state is not None:
                # With a prefix, `+state` keeps SQLite on the id index rather than sorting the state's jobs.
                where.append("+state = ?" if prefix else "state = ?")
                params.append(state)
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
        return self._select(f"SELECT {JOB_COLUMNS} {source}{conditions} ORDER BY {order} LIMIT ?",
                            [*params, limit])

    @staticmethod
    def page_key(job: Job, state: Optional[str], prefix: str) -> tuple:
        """Where the page after `job` starts, for `jobs_page(..., after=...)`."""
        return tuple(getattr(job, key) for key in _page_order(state, prefix)[1])

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

    def next_run_at(self) -> Optional[float]:
        """The earliest run_at among waiting jobs, due or not."""
        earliest, after = None, BELOW_ANY_PRIORITY
        for _ in range(PRIORITY_STEPS):
            priority = self._conn.execute(_NEXT_PRIORITY, {"after": after}).fetchone()[0]
            if priority is None:
                return earliest
            first = self._conn.execute(_FIRST_AT_PRIORITY, {"priority": priority}).fetchone()[0]
            earliest = first if earliest is None else min(earliest, first)
            after = priority
        rest = self._conn.execute(_FIRST_AFTER, {"after": after}).fetchone()[0]
        return earliest if rest is None else min(earliest, rest)

    def _next_due(self, now: float) -> Optional[Job]:
        """The job a claim takes: lowest priority, then earliest run_at, then enqueue order."""
        after = BELOW_ANY_PRIORITY
        for _ in range(PRIORITY_STEPS):
            priority = self._conn.execute(_NEXT_PRIORITY, {"after": after}).fetchone()[0]
            if priority is None:
                return None
            row = self._conn.execute(_DUE_AT_PRIORITY, {"priority": priority, "now": now}).fetchone()
            if row is not None:
                return Job.from_row(row)
            after = priority
        row = self._conn.execute(_DUE_AFTER, {"after": after, "now": now}).fetchone()
        return None if row is None else Job.from_row(row)

    # -- user transitions --------------------------------------------------------------------

    def delete(self, ids: list) -> None:
        """Remove jobs that are not processing; all or none."""
        with self._write() as conn:
            states = self.states_of(ids)
            busy = [job_id for job_id in ids if states.get(job_id) == PROCESSING]
            if busy:
                raise Conflict(f"job {busy[0]} is processing; stop its worker or wait for it")
            missing = [job_id for job_id in ids if job_id not in states]
            if missing:
                raise NotFound(f"no job with id {missing[0]!r}")
            conn.executemany("DELETE FROM jobs WHERE id = ? AND state <> 'processing'", [(i,) for i in ids])

    def purge(self, state: str, updated_before: Optional[float]) -> list:
        """Delete finished jobs in `state` (last changed before the given time); returns their ids."""
        if state not in (COMPLETED, DEAD):
            raise Conflict(f"only completed or dead jobs can be purged, not {state}")
        where = "state = ?" + (" AND updated_at < ?" if updated_before is not None else "")
        params = (state,) if updated_before is None else (state, updated_before)
        with self._write() as conn:
            ids = [r[0] for r in conn.execute(f"SELECT id FROM jobs WHERE {where}", params)]
            conn.execute(f"DELETE FROM jobs WHERE {where}", params)
        return ids

    def requeue_dead(self, ids: Optional[list], now: float) -> list:
        """Move dead jobs (the given ones, or all when None) back to pending with attempts 0."""
        with self._write() as conn:
            if ids is None:
                ids = [r[0] for r in conn.execute("SELECT id FROM jobs WHERE state = 'dead'")]
            states = self.states_of(ids)
            for job_id in ids:
                if job_id not in states:
                    raise NotFound(f"no job with id {job_id!r}")
                if states[job_id] != DEAD:
                    raise Conflict(f"job {job_id} is {states[job_id]}, not dead; only dead jobs can be retried")
            conn.executemany(
                "UPDATE jobs SET state = 'pending', attempts = 0, run_at = ?, updated_at = ?"
                " WHERE id = ? AND state = 'dead'",
                [(now, now, job_id) for job_id in ids],
            )
        return ids

    # -- worker transitions ----------------------------------------------------------------

    def claim_next(self, worker_id: str, now: float) -> Optional[Job]:
        """Take the next due job: lowest priority, then earliest run_at, then enqueue order."""
        with self._write() as conn:
            job = self._next_due(now)
            if job is None:
                return None
            conn.execute(
                "UPDATE jobs SET state = 'processing', attempts = attempts + 1, worker_id = ?,"
                " started_at = ?, updated_at = ? WHERE seq = ?",
                (worker_id, now, now, job.seq),
            )
        return job._replace(state=PROCESSING, attempts=job.attempts + 1, worker_id=worker_id,
                            started_at=now, updated_at=now)

    def _finish(self, job: Job, worker_id: str, assignments: str, params: tuple) -> bool:
        """Apply one transition to a job this worker holds; False if it moved on meanwhile."""
        with self._write():
            cursor = self._conn.execute(
                f"UPDATE jobs SET {assignments}, worker_id = NULL"
                " WHERE seq = ? AND state = 'processing' AND worker_id = ?",
                (*params, job.seq, worker_id),
            )
        return cursor.rowcount == 1

    def mark_completed(self, job: Job, worker_id: str, now: float) -> bool:
        return self._finish(job, worker_id, "state = 'completed', exit_code = 0, last_error = NULL,"
                            " updated_at = ?", (now,))

    def mark_failed(self, job: Job, worker_id: str, exit_code: Optional[int], error: str,
                    run_at: float, now: float) -> bool:
        return self._finish(job, worker_id, "state = 'failed', exit_code = ?, last_error = ?,"
                            " run_at = ?, updated_at = ?", (exit_code, error, run_at, now))

    def mark_dead(self, job: Job, worker_id: str, exit_code: Optional[int], error: str,
                  now: float) -> bool:
        return self._finish(job, worker_id, "state = 'dead', exit_code = ?, last_error = ?,"
                            " updated_at = ?", (exit_code, error, now))

    def release(self, job: Job, worker_id: str, now: float) -> bool:
        """Give back a job whose run was killed by a forced stop: pending, attempt not counted."""
        return self._finish(job, worker_id, "state = 'pending', attempts = attempts - 1,"
                            " updated_at = ?", (now,))

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


def _page_order(state: Optional[str], prefix: str) -> tuple:
    """(ORDER BY, key columns) of a browsing page: by id when searching, claim order for the
    waiting states, newest first otherwise (as `list` orders them)."""
    if prefix:
        return "id", ("id",)
    if state in WAITING:
        return "priority, run_at, seq", ("priority", "run_at", "seq")
    return "seq DESC", ("seq",)


_INSERT_COLUMNS = "(id, command, state, max_retries, priority, timeout, run_at, cwd, created_at, updated_at)"
_ROWS_PER_STATEMENT = 99  # 990 parameters: under SQLite's oldest limit of 999 per statement


def _insert_rows(conn: sqlite3.Connection, verb: str, rows: list) -> None:
    """Insert many rows per statement: Python's sqlite3 costs more per statement than SQLite
    costs per row, so this halves bulk enqueue time."""
    one = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    per = _ROWS_PER_STATEMENT
    full = len(rows) - len(rows) % per
    if full:
        many = f"{verb} INTO jobs {_INSERT_COLUMNS} VALUES " + ", ".join([one] * per)
        conn.executemany(many, (tuple(chain.from_iterable(rows[i:i + per])) for i in range(0, full, per)))
    if full < len(rows):
        conn.executemany(f"{verb} INTO jobs {_INSERT_COLUMNS} VALUES {one}", rows[full:])


def _refuse_repeats(ids: list) -> None:
    seen: set = set()
    for job_id in ids:
        if job_id in seen:
            raise Conflict(f"job id {job_id} appears twice; nothing was enqueued")
        seen.add(job_id)


def _statements(script: str) -> list:
    """Split a schema script into statements (sqlite3.complete_statement knows about triggers)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return [s for s in statements if s]
