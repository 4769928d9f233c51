"""The PostgreSQL store: one database shared by the workers of many hosts.

The same methods as the SQLite store, over a schema of its own (MIGRATIONS, kept in the
database's queuectl_meta table). What differs, and why:
- The claim is one statement: a CTE picks the best due job with FOR UPDATE SKIP LOCKED over a
  partial index of claimable jobs, so claimers on many hosts never wait for each other's rows.
  A queue with a limit is counted under a lock on its `queues` row, so the limit holds across
  hosts.
- Times are the database's: `clock()` is this host's clock corrected by its measured offset
  from the server's `clock_timestamp()`, so hosts with skewed clocks agree on run_at and leases.
- Idle workers are woken by LISTEN/NOTIFY: one notify per enqueue transaction (and per
  transition that frees waiting work), never a trigger per row. `?listen=off` in the URL turns
  it off (PgBouncer in transaction mode): workers then poll every poll_interval.
- Counts per state are kept by triggers in rows of the writing connection's own (state,
  backend pid), so concurrent transitions never queue behind one hot counter row.
- Every psycopg error becomes DatabaseError, worded without the URL's password; a broken
  connection is replaced at the next call, so a restarted server costs a retry, not a worker.
"""
from __future__ import annotations

import functools
import json
import os
import time
import types
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg

from ..errors import Conflict, DatabaseError, NotFound, StoreError
from .. import stats
from ..models import (CANCELLED, COMPLETED, DEAD, FAILED, FAILED_RUNS, FINISHED, PENDING, PROCESSING, STATES,
                      Job, QueueInfo, Run, WorkerInfo)
from . import redact
from .common import (ALL_QUEUES, COMMAND_CHARS, RETENTION_MINUTES, TOTAL_HOUR, WHOLE_HOUR, StoreRules,
                     claim_scope, command_hash, dependency_dead, minute_range, pauses_of, paused_map, window_bounds)

CONNECT_TIMEOUT = 10  # seconds, unless the URL says otherwise
FULL_SERVER_SECONDS = 30.0  # how long to wait for a free connection slot
_FULL_SERVER = ("too many clients", "remaining connection slots are reserved")
CLOCK_CHECK_SECONDS = 60.0  # how often the offset from the server's clock is measured again
COUNT_FOLD_ROWS = 256  # job_counts rows (one per state and writing connection) before folding
JOB_COLUMNS = ("seq, id, command, state, attempts, max_retries, priority, timeout, run_at, cwd,"
               " created_at, updated_at, exit_code, last_error, worker_id, started_at, queue")
_J_COLUMNS = ", ".join(f"j.{c.strip()}" for c in JOB_COLUMNS.split(","))
CLAIMABLE = "state IN ('pending', 'failed') AND blocked = 0"  # the partial indexes' predicate, word for word
_NOT_CANCELLED = " AND cancel_requested IS NULL"
_FOLD_LOCK = 0x71756575  # advisory lock key: one fold of job_counts at a time

_SCHEMA_V1 = r"""
CREATE TABLE jobs (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- enqueue order
    id          text COLLATE "C" NOT NULL UNIQUE,  -- byte order: a prefix is an index range
    command     text NOT NULL,
    state       text NOT NULL CHECK (state IN ('pending', 'processing', 'completed', 'failed', 'dead')),
    attempts    integer NOT NULL DEFAULT 0,
    max_retries integer NOT NULL,
    priority    bigint NOT NULL DEFAULT 0,
    timeout     double precision,
    run_at      double precision NOT NULL,  -- epoch seconds, as every time here
    cwd         text NOT NULL,
    created_at  double precision NOT NULL,
    updated_at  double precision NOT NULL,
    exit_code   integer,
    last_error  text,
    worker_id   text,
    started_at  double precision,
    queue       text COLLATE "C" NOT NULL DEFAULT 'default',
    blocked     integer NOT NULL DEFAULT 0,  -- unfinished jobs it waits for (job_deps)
    cancel_requested double precision
);
-- Claim order over the claimable jobs only: a job that waits, runs or has finished is in none.
CREATE INDEX jobs_claim ON jobs (priority, run_at, seq) WHERE state IN ('pending', 'failed') AND blocked = 0;
CREATE INDEX jobs_claim_q ON jobs (queue, priority, run_at, seq) WHERE state IN ('pending', 'failed') AND blocked = 0;
-- No index on run_at alone: without statistics (a table just filled, autovacuum not yet by),
-- the planner took one for the claim and sorted every due job (65 ms a claim at 100,000).
CREATE INDEX jobs_blocked ON jobs (state, priority, run_at, seq) WHERE blocked > 0;
CREATE INDEX jobs_state_recent ON jobs (state, seq);
CREATE INDEX jobs_queue_state ON jobs (queue, state);

CREATE TABLE job_deps (
    child  bigint NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,  -- the job that waits
    parent text COLLATE "C" NOT NULL,  -- the id of the job it waits for (kept when that goes)
    PRIMARY KEY (child, parent)
);
CREATE INDEX job_deps_parent ON job_deps (parent);

CREATE TABLE queues (
    name        text COLLATE "C" PRIMARY KEY,
    max_running integer NOT NULL DEFAULT 0,
    paused      integer NOT NULL DEFAULT 0  -- 1 paused, -1 runs despite a pause of every queue ('*')
);

CREATE TABLE workers (
    worker_id    text PRIMARY KEY,
    pid          integer NOT NULL,
    pool_id      text NOT NULL,
    host         text NOT NULL,
    home         text NOT NULL DEFAULT '',
    started_at   double precision NOT NULL,
    heartbeat_at double precision NOT NULL
);

-- Jobs per state: the sum of a row per state and writing connection (shard: its backend pid),
-- so no two transactions ever update the same row; rows of gone connections are folded into
-- shard 0 now and then.
CREATE TABLE job_counts (
    state text NOT NULL,
    shard integer NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (state, shard)
);
CREATE FUNCTION queuectl_count_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO job_counts AS c VALUES (OLD.state, pg_backend_pid(), -1)
            ON CONFLICT (state, shard) DO UPDATE SET n = c.n - 1;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO job_counts AS c VALUES (NEW.state, pg_backend_pid(), 1)
            ON CONFLICT (state, shard) DO UPDATE SET n = c.n + 1;
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION queuectl_count_inserts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts AS c SELECT state, pg_backend_pid(), count(*) FROM inserted GROUP BY state
        ON CONFLICT (state, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_counted_update AFTER UPDATE OF state ON jobs FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION queuectl_count_change();
CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs FOR EACH ROW EXECUTE FUNCTION queuectl_count_change();
CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION queuectl_count_inserts();

-- Run history: a row per run, gone with its job; the aggregates as in the SQLite store
-- (minute rows, hour rows at minute 60, totals at hour TOTAL_HOUR), histograms as jsonb.
CREATE TABLE runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_seq     bigint NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
    queue       text NOT NULL DEFAULT 'default',
    attempt     integer NOT NULL,
    worker      text,
    host        text,
    started_at  double precision NOT NULL,
    ended_at    double precision NOT NULL,
    outcome     text NOT NULL,
    exit_code   integer,
    error       text,
    output_tail text NOT NULL DEFAULT ''
);
CREATE INDEX runs_of_job ON runs (job_seq);
-- Every job is updated a few times in its life and its old versions are dead tuples: vacuum
-- the queue's tables after 2 % of their rows changed rather than PostgreSQL's 20 %, so the
-- claim's partial indexes stay small (README: "Autovacuum").
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE job_counts SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
ALTER TABLE workers SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
CREATE TABLE run_counts (
    hour         bigint NOT NULL,
    minute       integer NOT NULL,
    queue        text COLLATE "C" NOT NULL DEFAULT 'default',
    outcome      text NOT NULL,
    runs         bigint NOT NULL,
    duration_sum double precision NOT NULL,
    duration_max double precision NOT NULL,
    wait_max     double precision NOT NULL,
    durations    jsonb NOT NULL,
    waits        jsonb NOT NULL,
    PRIMARY KEY (hour, minute, queue, outcome)
);
CREATE TABLE failure_counts (
    hour         bigint NOT NULL,
    minute       integer NOT NULL,
    queue        text COLLATE "C" NOT NULL DEFAULT 'default',
    command_hash bigint NOT NULL,
    failures     bigint NOT NULL,
    command      text NOT NULL,
    PRIMARY KEY (hour, minute, queue, command_hash)
);
"""

# Each entry brings the schema from version N-1 to N; append, never edit.
MIGRATIONS = (_SCHEMA_V1,)
SCHEMA_VERSION = len(MIGRATIONS)
_MIGRATION_LOCK = 0x71756574  # advisory lock key: one process migrates, the others wait for it


def connection_options(url: str) -> tuple:
    """(the URL libpq is given, whether to LISTEN): `listen=off` is ours, not libpq's."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    listen = all(value.lower() not in ("off", "0", "false", "no") for key, value in pairs if key == "listen")
    pairs = [(key, value) for key, value in pairs if key != "listen"]
    if not any(key == "connect_timeout" for key, _ in pairs):
        pairs.append(("connect_timeout", str(CONNECT_TIMEOUT)))
    return urlunsplit(parts._replace(query=urlencode(pairs))), listen


class PostgresStore(StoreRules):
    """A queue's database on a PostgreSQL server. Open one per process (never share across fork)."""

    def __init__(self, url: str, durable: bool = True) -> None:
        self.path = redact(url)  # what messages name: never the password
        self._password = urlsplit(url).password
        self._conninfo, self._listen = connection_options(url)
        self._durable = durable
        self._conn: Optional[psycopg.Connection] = None
        self._depth = 0
        self._offset = 0.0  # the server's clock minus ours
        self._clock_checked = float("-inf")
        self._notified = 0
        self._listening: Optional[psycopg.Connection] = None  # the connection that LISTENs, once a worker waits
        self._channel = ""
        self._kept_minute: Optional[int] = None

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, durable: bool = True) -> "PostgresStore":
        """Connect and migrate. `durable=False` is for workers: a commit may then return before
        the server has flushed it (synchronous_commit off); a commit lost to a crash of the
        server only means a job runs again (delivery is at-least-once)."""
        store = cls(url, durable)
        store._connect()
        return store

    def _connect(self) -> None:
        deadline = time.monotonic() + FULL_SERVER_SECONDS
        while True:
            try:
                # listen=off means PgBouncer in transaction mode, which cannot keep prepared statements either.
                conn = psycopg.connect(self._conninfo, autocommit=True,
                                       prepare_threshold=5 if self._listen else None)
                break
            except psycopg.Error as exc:
                # A burst of commands (200 cron jobs enqueueing at once) can find every
                # connection slot taken: a moment later one is free.
                if not any(words in str(exc) for words in _FULL_SERVER) or time.monotonic() >= deadline:
                    raise DatabaseError(f"cannot connect to {self.path}: {self._words(exc)}") from None
                time.sleep(0.05 + os.urandom(1)[0] / 1000)  # 50–305 ms, so the waiting spread out
            except ValueError as exc:  # psycopg's own checks of the URL (a bad port, say)
                raise DatabaseError(f"cannot connect to {self.path}: {self._words(exc)}") from None
        self._conn = conn
        try:
            if not self._durable:
                conn.execute("SET synchronous_commit = off")
            schema = self._migrate()
            self._channel = f"queuectl_{schema}"[:63]
        except psycopg.Error as exc:
            self._drop()
            raise DatabaseError(f"cannot open database {self.path}: {self._words(exc)}") from None
        except BaseException:
            self._drop()
            raise

    def _migrate(self) -> str:
        """Bring the schema to SCHEMA_VERSION (one process at a time); returns the current schema's name."""
        schema, known = self._conn.execute(
            "SELECT current_schema(), to_regclass('queuectl_meta') IS NOT NULL").fetchone()
        if known and self._version() == SCHEMA_VERSION:
            return schema
        with self._write() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS queuectl_meta (key text PRIMARY KEY, value text NOT NULL)")
            version = self._version()
            if version > SCHEMA_VERSION:
                raise StoreError(f"database {self.path} has schema version {version}, newer than this "
                                 f"queuectl knows ({SCHEMA_VERSION}); upgrade queuectl")
            for script in MIGRATIONS[version:]:
                conn.execute(script)
            conn.execute("INSERT INTO queuectl_meta VALUES ('schema_version', %s) ON CONFLICT (key)"
                         " DO UPDATE SET value = excluded.value", (str(SCHEMA_VERSION),))
        return schema

    def _version(self) -> int:
        if self._conn.execute("SELECT to_regclass('queuectl_meta')").fetchone()[0] is None:
            return 0
        row = self._conn.execute("SELECT value FROM queuectl_meta WHERE key = 'schema_version'").fetchone()
        return 0 if row is None else int(row[0])

    def _measure_clock(self) -> None:
        before = time.time()
        server = self._conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]
        after = time.time()
        self._offset = server - (before + after) / 2
        self._clock_checked = time.monotonic()

    def close(self) -> None:
        self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None

    def _ready(self) -> None:
        """Reconnect if the last connection broke (a restarted server, say), between transactions."""
        if self._depth == 0 and (self._conn is None or self._conn.closed or self._conn.broken):
            self._drop()
            self._connect()

    def _words(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split()) or type(exc).__name__
        return text.replace(self._password, "***") if self._password else text

    def clock(self) -> float:
        """Now by the database server's clock, which every host of the queue shares: this
        host's clock plus its offset from the server's, measured at the first call and every
        CLOCK_CHECK_SECONDS after (between transactions, but for the first)."""
        due = time.monotonic() - self._clock_checked > CLOCK_CHECK_SECONDS
        if due and (self._depth == 0 or self._clock_checked == float("-inf")):
            try:
                if self._depth == 0:
                    self._ready()
                self._measure_clock()
            except (psycopg.Error, DatabaseError):
                self._clock_checked = time.monotonic()  # keep the last offset; try again later
        return time.time() + self._offset

    # -- transactions ----------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection]:
        """One transaction; nested uses join the outer one, so callers can make several
        transitions atomic."""
        if self._depth:
            self._depth += 1
            try:
                yield self._conn
            finally:
                self._depth -= 1
            return
        self._conn.execute("BEGIN")
        self._depth = 1
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        finally:
            self._depth = 0

    def _rollback(self) -> None:
        try:
            if not self._conn.broken and self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self._conn.execute("ROLLBACK")
        except psycopg.Error:
            pass

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """Make the transitions inside one transaction: all happen, or none."""
        try:
            if self._depth == 0:
                self._ready()
            with self._write() as conn:
                yield conn
        except psycopg.Error as exc:  # BEGIN or COMMIT: the methods inside report their own
            raise DatabaseError(f"database {self.path}: {self._words(exc)}") from None

    def _rows(self, sql: str, params=None) -> list:
        return self._conn.execute(sql, params).fetchall()

    def _one(self, sql: str, params=None):
        row = self._conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def _select(self, sql: str, params=None) -> list:
        return [_job(row) for row in self._conn.execute(sql, params)]

    def _notify(self) -> None:
        """Wake idle workers of every host: one notify per transaction (the server sends a
        transaction's identical notifies once)."""
        self._conn.execute("SELECT pg_notify(%s, '')", (self._channel,))

    # -- enqueue ---------------------------------------------------------------------------

    _duplicate_id = psycopg.errors.UniqueViolation

    def _add_jobs(self, rows: list, queues: list, if_absent: bool,
                  progress: Optional[Callable[[int], None]]) -> None:
        """Insert the jobs' rows (see StoreRules.insert): arrays of columns unnested in one
        statement per 5,000 jobs, in the batch's order (the enqueue order); add their queues,
        and wake idle workers once."""
        skip = " ON CONFLICT (id) DO NOTHING" if if_absent else ""
        for start in range(0, len(rows), 5000):
            chunk = rows[start:start + 5000]
            self._conn.execute(
                "INSERT INTO jobs (id, command, state, max_retries, priority, timeout, run_at, cwd,"
                " created_at, updated_at, queue) SELECT i, c, 'pending', m, p, t, r, w, a, u, q FROM"
                " unnest(%s::text[], %s::text[], %s::int[], %s::bigint[], %s::float8[], %s::float8[],"
                " %s::text[], %s::float8[], %s::float8[], %s::text[]) WITH ORDINALITY"
                f" AS x(i, c, m, p, t, r, w, a, u, q, n) ORDER BY n{skip}", [list(column) for column in zip(*chunk)])
            if progress is not None:
                progress(len(chunk))
        self._conn.execute("INSERT INTO queues (name) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING", (queues,))
        self._notify()

    def _add_waits(self, job_id: str, parents: list, blocked: int) -> None:
        self._conn.execute("WITH c AS (UPDATE jobs SET blocked = %s WHERE id = %s RETURNING seq)"
                           " INSERT INTO job_deps (child, parent) SELECT c.seq, unnest(%s::text[]) FROM c",
                           (blocked, job_id, parents))

    # -- reading ---------------------------------------------------------------------------

    def get(self, job_id: str) -> Optional[Job]:
        rows = self._with_after(self._select(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %s", (job_id,)))
        return rows[0] if rows else None

    def _with_after(self, jobs: list) -> list:
        if not jobs:
            return jobs
        after: dict = {}
        for child, parent in self._rows("SELECT child, parent FROM job_deps WHERE child = ANY(%s)"
                                        " ORDER BY child, parent", ([job.seq for job in jobs],)):
            after.setdefault(child, []).append(parent)
        return [job._replace(after=tuple(after[job.seq])) if job.seq in after else job for job in jobs]

    def waiting_for(self, job_id: str) -> list:
        """(id, state) of each job `job_id` waits for that has not completed; state None if deleted."""
        return [tuple(row) for row in self._rows(
            "SELECT d.parent, p.state FROM jobs c JOIN job_deps d ON d.child = c.seq"
            " LEFT JOIN jobs p ON p.id = d.parent"
            " WHERE c.id = %s AND (p.state IS NULL OR p.state <> 'completed') ORDER BY d.parent", (job_id,))]

    def resolve(self, token: str) -> str:
        """The full id for an id or a unique prefix of one (as git does with hashes)."""
        if self._one("SELECT 1 FROM jobs WHERE id = %s", (token,)):
            return token
        found = [row[0] for row in self._rows(
            "SELECT id FROM jobs WHERE id > %s AND id < %s ORDER BY id LIMIT 6", (token, token + "\x7f"))]
        if not found:
            raise NotFound(f"no job with id or prefix {token!r}")
        if len(found) > 1:
            more = ", ..." if len(found) > 5 else ""
            raise NotFound(f"job id prefix {token!r} is ambiguous: it matches {', '.join(found[:5])}{more}")
        return found[0]

    def counts(self) -> dict:
        rows = self._rows("SELECT state, sum(n)::bigint, count(*) FROM job_counts GROUP BY state")
        if sum(row[2] for row in rows) > COUNT_FOLD_ROWS:
            self._fold_counts()
        counted = {state: n for state, n, _ in rows}
        return {state: counted.get(state, 0) for state in STATES}

    def _fold_counts(self) -> None:
        """Sum the counter rows of connections that are gone into shard 0 (in one transaction,
        so the sums never change)."""
        with self._write() as conn:
            if not self._one("SELECT pg_try_advisory_xact_lock(%s)", (_FOLD_LOCK,)):
                return
            conn.execute(
                "WITH gone AS (DELETE FROM job_counts WHERE shard <> 0 AND shard NOT IN"
                " (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL) RETURNING state, n)"
                " INSERT INTO job_counts AS c SELECT state, 0, sum(n) FROM gone GROUP BY state"
                " ON CONFLICT (state, shard) DO UPDATE SET n = c.n + excluded.n")

    def count(self, state: Optional[str], queue: Optional[str]) -> int:
        """Jobs in `state` (None: any) of `queue` (None: any)."""
        if queue is None:
            counts = self.counts()
            return counts[state] if state else sum(counts.values())
        if state is None:
            return self._one("SELECT count(*) FROM jobs WHERE queue = %s", (queue,))
        return self._one("SELECT count(*) FROM jobs WHERE queue = %s AND state = %s", (queue, state))

    def list_jobs(self, state: Optional[str], limit: Optional[int], queue: Optional[str] = None) -> list:
        """A page of jobs: claim order for pending/failed, newest first otherwise."""
        if state in (PENDING, FAILED):
            jobs, _ = self._waiting_page(state, None, limit, queue)
            return self._with_after(jobs)
        where, params = self._filters(state, queue)
        page = " LIMIT %(limit)s" if limit else ""
        return self._with_after(self._select(f"SELECT {JOB_COLUMNS} FROM jobs WHERE true{where}"
                                             f" ORDER BY seq DESC{page}", {**params, "limit": limit}))

    @staticmethod
    def _filters(state: Optional[str], queue: Optional[str]) -> tuple:
        where = (" AND state = %(state)s" if state else "") + (" AND queue = %(queue)s" if queue is not None else "")
        return where, {"state": state, "queue": queue}

    def jobs_page(self, state: Optional[str], prefix: str, after: Optional[tuple], limit: int,
                  queue: Optional[str] = None) -> tuple:
        """A page for browsing (keyset paging): jobs in `state` of `queue` whose id starts with
        `prefix`, following the page key `after`; returns (jobs, the next page's key or None)."""
        if state in (PENDING, FAILED) and not prefix:
            return self._waiting_page(state, after, limit, queue)
        order, keys = ("id", ("id",)) if prefix else ("seq DESC", ("seq",))
        where, params = self._filters(state, queue)
        if prefix:
            where += " AND id >= %(low)s AND id < %(high)s"
            params.update(low=prefix, high=prefix + "\x7f")
        if after is not None:
            if len(after) != len(keys):
                raise ValueError("page key of the wrong shape")
            where += f" AND {keys[0]} {'<' if order.endswith('DESC') else '>'} %(key)s"
            params["key"] = after[0]
        found = self._select(f"SELECT {JOB_COLUMNS} FROM jobs WHERE true{where} ORDER BY {order} LIMIT %(limit)s",
                             {**params, "limit": limit + 1})
        page = found[:limit]
        return page, (tuple(getattr(page[-1], key) for key in keys) if len(found) > limit else None)

    def _waiting_page(self, state: str, after: Optional[tuple], limit: Optional[int], queue: Optional[str]) -> tuple:
        """Pending or failed jobs as `list` orders them: the claimable ones in claim order, then
        those that wait for an unfinished job. The page key is (0 or 1, priority, run_at, seq)."""
        if after is not None and (len(after) != 4 or after[0] not in (0, 1)):
            raise ValueError("page key of the wrong shape")
        part, position = (0, None) if after is None else (after[0], tuple(after[1:]))
        only = " AND queue = %(queue)s" if queue is not None else ""
        sources = [f"state = %(state)s AND blocked = 0{only}", f"state = %(state)s AND blocked > 0{only}"]
        found: list = []
        for number in range(part, 2):
            if limit and len(found) > limit:
                break
            seek = "" if position is None else " AND (priority, run_at, seq) > (%(priority)s, %(run_at)s, %(seq)s)"
            params = {"state": state, "queue": queue, "limit": None if not limit else limit + 1 - len(found),
                      **dict(zip(("priority", "run_at", "seq"), position or (None,) * 3))}
            found += [(number, job) for job in self._select(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE {sources[number]}{seek}"
                " ORDER BY priority, run_at, seq LIMIT %(limit)s", params)]
            position = None
        page = found[:limit] if limit else found
        key = None
        if limit and len(found) > limit:
            number, last = page[-1]
            key = (number, last.priority, last.run_at, last.seq)
        return [job for _, job in page], key

    def states_of(self, ids: list) -> dict:
        """{id: state} for the ids that exist."""
        if not ids:
            return {}
        return dict(self._rows("SELECT id, state FROM jobs WHERE id = ANY(%s)", (list(ids),)))

    def data_version(self) -> str:
        """Changes whenever anything is committed (to any database of the server, so at times
        when nothing of ours changed): a cheap 'anything new?' for commands that watch."""
        return self._one("SELECT pg_current_wal_lsn()::text")

    def change_stamp(self) -> str:
        """As data_version, and comparable across connections."""
        return self.data_version()

    def work_version(self) -> int:
        """Changes when a notify says new work may be due: read from the connection's socket,
        no query. Without LISTEN it never changes, and idle workers wait out poll_interval."""
        if self._listen and self._depth == 0:
            self._ready()
            if self._listening is not self._conn:  # the first wait, or a new connection after a broken one
                self._conn.execute(f'LISTEN "{self._channel}"')
                self._listening = self._conn
                self._notified += 1  # what came meanwhile was missed: look again
            self._notified += sum(1 for _ in self._conn.notifies(timeout=0))
        return self._notified

    # -- what is due -------------------------------------------------------------------------

    def next_run_at(self, queues: Optional[list] = None, skip_full: bool = True) -> Optional[float]:
        """The earliest run_at among claimable jobs, due or not, of `queues` (None: every
        queue) that are not paused and (unless `skip_full` is false) not full."""
        scope = self._scope(queues, skip_full)
        if scope is None:
            return self._one(_EARLIEST.format(only=""))
        if not scope:
            return None
        return self._one(f"SELECT min(t) FROM unnest(%(scope)s::text[]) AS q(name),"
                         f" LATERAL ({_EARLIEST.format(only='AND queue = q.name')}) AS m(t)", {"scope": scope})

    def _scope(self, queues: Optional[list], skip_full: bool = True, locked: bool = False) -> Optional[list]:
        """The queues a claim may take from (see common.claim_scope). With `locked`, the rows
        of the limited queues it may take from are locked first, so their running jobs are
        counted while no other claim can add one: a limit holds across hosts."""
        rows = self._rows("SELECT name, max_running, paused FROM queues WHERE max_running <> 0 OR paused <> 0")
        limited = sorted(name for name, limit, _ in rows if limit > 0 and (queues is None or name in queues))
        if limited and skip_full:
            if locked:
                self._conn.execute("SELECT name FROM queues WHERE name = ANY(%s) ORDER BY name FOR UPDATE",
                                   (limited,))
            running = dict(self._rows("SELECT queue, count(*) FROM jobs WHERE state = 'processing'"
                                      " AND queue = ANY(%s) GROUP BY queue", (limited,)))
            rows = [(name, limit, paused, running.get(name, 0)) for name, limit, paused in rows]
        else:
            rows = [(name, limit, paused, 0) for name, limit, paused in rows]
        return claim_scope(rows, queues, skip_full, lambda: [
            row[0] for row in self._rows("SELECT name FROM queues WHERE name <> %s", (ALL_QUEUES,))])

    def has_work(self, queues: Optional[list], now: float) -> bool:
        """Whether a --burst pool serving `queues` (None: every queue) has work left: a job of
        them running, or due or awaiting a retry in a queue that is neither paused nor full."""
        if queues is None:
            running = self.counts()[PROCESSING]
        else:
            running = self._one("SELECT count(*) FROM jobs WHERE state = 'processing' AND queue = ANY(%s)", (queues,))
        if running:
            return True
        scope = self._scope(queues)
        if scope is None and self.counts()[FAILED]:
            return True
        if scope and self._one("SELECT 1 FROM jobs WHERE state = 'failed' AND blocked = 0 AND queue = ANY(%s)"
                               " LIMIT 1", (scope,)):
            return True
        next_run = self.next_run_at(queues)
        return next_run is not None and next_run <= now

    # -- queues ------------------------------------------------------------------------------

    def set_limit(self, queue: str, limit: int) -> None:
        """At most `limit` jobs of the queue processing at once; 0 removes the limit."""
        with self._write():
            self._set(queue, "max_running", limit)
            self._notify()

    def _lift_pauses(self) -> list:
        """Every pause lifted; returns the queues that had one."""
        return [row[0] for row in self._rows("UPDATE queues SET paused = 0 WHERE paused <> 0 RETURNING name")]

    def _wake_workers(self) -> None:
        self._notify()

    def _set(self, queue: str, column: str, value: int) -> None:
        self._conn.execute(f"INSERT INTO queues AS q (name, {column}) VALUES (%s, %s)"
                           f" ON CONFLICT (name) DO UPDATE SET {column} = excluded.{column}", (queue, value))
        self._prune([queue])

    def _prune(self, queues: Iterable) -> None:
        """Forget these queues where they have neither jobs nor settings any more."""
        names = sorted(set(queues))
        if names:
            self._conn.execute("DELETE FROM queues WHERE name = ANY(%s) AND max_running = 0 AND paused = 0"
                               " AND NOT EXISTS (SELECT 1 FROM jobs WHERE queue = queues.name)", (names,))

    def pauses(self) -> dict:
        """What is paused: `all`, `queues` paused by name, and `resumed` despite a pause of all."""
        return pauses_of(dict(self._rows("SELECT name, paused FROM queues WHERE paused <> 0")))

    def queues(self) -> list:
        """Every queue that has jobs or settings, by name (counting its jobs reads them all)."""
        counts: dict = {}
        for queue, state, n in self._rows("SELECT queue, state, count(*) FROM jobs GROUP BY queue, state"):
            counts.setdefault(queue, dict.fromkeys(STATES, 0))[state] = n
        settings = {name: (limit, flag) for name, limit, flag in self._rows(
            "SELECT name, max_running, paused FROM queues WHERE max_running <> 0 OR paused <> 0")}
        every = settings.pop(ALL_QUEUES, (0, 0))[1] == 1
        return [QueueInfo(name, counts.get(name, dict.fromkeys(STATES, 0)), settings.get(name, (0, 0))[0] or None,
                          settings.get(name, (0, 0))[1] == 1 or (every and settings.get(name, (0, 0))[1] != -1))
                for name in sorted(counts.keys() | settings.keys())]

    def paused_queues(self) -> dict:
        """{queue: paused?} for every queue with jobs or settings: cheap, whatever the jobs."""
        return paused_map(dict(self._rows("SELECT name, paused FROM queues")))

    def queue_limits(self) -> dict:
        """{queue: its limit} of the queues that have one."""
        return dict(self._rows("SELECT name, max_running FROM queues WHERE max_running > 0 AND name <> %s",
                               (ALL_QUEUES,)))

    # -- user transitions --------------------------------------------------------------------

    def delete(self, ids: list) -> None:
        """Remove jobs that are not processing and that no unfinished job waits for (unless it
        is removed too); all or none."""
        with self._write() as conn:
            states = self._check_deletable(ids)
            completed = [i for i in ids if states[i] == COMPLETED]
            if completed:  # what waited for them is satisfied: those waits go (a child's own go with it)
                conn.execute("DELETE FROM job_deps WHERE parent = ANY(%s)", (completed,))
            queues = [row[0] for row in self._rows(
                "DELETE FROM jobs WHERE id = ANY(%s) AND state <> 'processing' RETURNING queue", (list(ids),))]
            self._prune(queues)

    def _waiters(self, ids: list) -> list:
        """(parent, child) for each unfinished job that waits for one of `ids`."""
        if not ids:
            return []
        return [tuple(row) for row in self._rows(
            "SELECT d.parent, j.id FROM job_deps d JOIN jobs j ON j.seq = d.child WHERE d.parent = ANY(%s)"
            " AND j.state IN ('pending', 'processing', 'failed') ORDER BY d.parent, j.id", (ids,))]

    def purge(self, state: str, updated_before: Optional[float]) -> list:
        """Delete finished jobs in `state` (last changed before the given time); returns their ids."""
        if state not in (COMPLETED, DEAD):
            raise Conflict(f"only completed or dead jobs can be purged, not {state}")
        where = "state = %(state)s" + (" AND updated_at < %(before)s" if updated_before is not None else "")
        params = {"state": state, "before": updated_before}
        with self._write() as conn:
            if state == COMPLETED:
                conn.execute(f"DELETE FROM job_deps WHERE parent IN (SELECT id FROM jobs WHERE {where})", params)
            gone = self._rows(f"DELETE FROM jobs WHERE {where} RETURNING id, queue", params)
            self._prune({queue for _, queue in gone})
        return [job_id for job_id, _ in gone]

    def count_finished(self, state: str, updated_before: float) -> int:
        """How many jobs `purge(state, updated_before)` would delete now."""
        return self._one("SELECT count(*) FROM jobs WHERE state = %s AND updated_at < %s", (state, updated_before))

    def requeue_dead(self, ids: Optional[list], now: float) -> list:
        """Move dead jobs (the given ones, or all when None) back to pending with attempts 0,
        and the jobs that died for them (see _revive); returns every id moved."""
        with self._write():
            if ids is None:
                ids = [row[0] for row in self._rows("SELECT id FROM jobs WHERE state = 'dead' ORDER BY seq")]
            self._check_states(ids, (DEAD,), "dead", "only dead jobs can be retried")
            return self._revive(ids, now)

    # -- dependencies --------------------------------------------------------------------------

    def _bury(self, ids: list, error: str, now: float) -> list:
        """These pending or failed jobs become dead with `error`, attempts unchanged, and every
        unfinished job that waits for them, down the chain; returns the ids made dead."""
        buried = [row[0] for row in self._rows(
            "UPDATE jobs SET state = 'dead', last_error = %s, updated_at = %s"
            " WHERE id = ANY(%s) AND state IN ('pending', 'failed') RETURNING id", (error, now, ids))]
        return buried + self._bury_dependents(buried, now)

    def _bury_dependents(self, dead: list, now: float) -> list:
        """The jobs that wait for these dead jobs become dead, "dependency ID is dead", and so
        on down the chain; returns their ids."""
        made, frontier = [], list(dead)
        while frontier:
            parent = frontier.pop()
            children = [row[0] for row in self._rows(
                "UPDATE jobs SET state = 'dead', last_error = %s, updated_at = %s"
                " WHERE seq IN (SELECT child FROM job_deps WHERE parent = %s)"
                " AND state IN ('pending', 'failed') RETURNING id", (dependency_dead(parent), now, parent))]
            made += children
            frontier += children
        return made

    def _revive(self, ids: list, now: float) -> list:
        """Back to pending, attempts 0, run_at now: these finished jobs and, down the chain,
        the dead jobs that died for one of them; returns the ids moved, the given ones first."""
        revived, frontier, seen = [], list(ids), set()
        while frontier:
            job_id = frontier.pop(0)
            if job_id in seen:
                continue
            seen.add(job_id)
            row = self._conn.execute("SELECT seq, state FROM jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
            if row is None or row[1] not in FINISHED:
                continue
            self._make_pending(job_id, row[0], row[1], now)
            revived.append(job_id)
            frontier += [r[0] for r in self._rows(
                "SELECT j.id FROM job_deps d JOIN jobs j ON j.seq = d.child"
                " WHERE d.parent = %s AND j.state = 'dead' AND j.last_error = %s ORDER BY j.seq",
                (job_id, dependency_dead(job_id)))]
        for job_id in revived:
            gone = self._one(
                "SELECT d.parent FROM jobs c JOIN job_deps d ON d.child = c.seq LEFT JOIN jobs p ON p.id = d.parent"
                " WHERE c.id = %s AND (p.state IS NULL OR p.state = 'dead') ORDER BY d.parent LIMIT 1", (job_id,))
            if gone is not None:
                self._bury([job_id], dependency_dead(gone), now)
        if revived:
            self._notify()
        return revived

    def _make_pending(self, job_id: str, seq: int, state: str, now: float) -> None:
        if state == COMPLETED:  # its waiters wait for it again
            self._conn.execute("UPDATE jobs SET blocked = blocked + 1"
                               " WHERE seq IN (SELECT child FROM job_deps WHERE parent = %s)", (job_id,))
        unfinished = self._one(
            "SELECT count(*) FROM job_deps d LEFT JOIN jobs p ON p.id = d.parent"
            " WHERE d.child = %s AND (p.state IS NULL OR p.state <> 'completed')", (seq,))
        self._conn.execute("UPDATE jobs SET state = 'pending', attempts = 0, run_at = %s, updated_at = %s,"
                           " blocked = %s WHERE seq = %s", (now, now, unfinished, seq))

    # -- worker transitions ----------------------------------------------------------------

    def claim_next(self, worker_id: str, now: float, queues: Optional[list] = None) -> Optional[Job]:
        """Take the next due job of `queues` (None: every queue) that is neither paused nor
        full and waits for nothing unfinished: lowest priority, then earliest run_at, then
        enqueue order. Rows another claimer holds are skipped, never waited for."""
        params = {"now": now, "worker": worker_id}
        with self._write() as conn:
            if queues is None:  # first the fast path: one statement, taken when no queue has settings
                row = conn.execute(_CLAIM.format(pick=_PICK_ANY_UNSET), params).fetchone()
                if row is not None:
                    return _job(row)
            scope = self._scope(queues, locked=True)
            if scope is not None and not scope:
                return None
            if scope is None:
                pick = _PICK_ANY
            else:
                pick = ("SELECT h.seq FROM unnest(%(scope)s::text[]) AS q(name), LATERAL (SELECT seq, priority,"
                        f" run_at FROM jobs WHERE queue = q.name AND {CLAIMABLE} AND run_at <= %(now)s"
                        " ORDER BY priority, run_at, seq LIMIT 1 FOR UPDATE SKIP LOCKED) h"
                        " ORDER BY h.priority, h.run_at, h.seq LIMIT 1")
            row = conn.execute(_CLAIM.format(pick=pick), {**params, "scope": scope}).fetchone()
        return None if row is None else _job(row)

    def _finish(self, job: Job, worker_id: str, assignments: str, params: tuple, guard: str = "") -> bool:
        """Apply one transition to a job this worker holds; False if it moved on meanwhile."""
        with self._write():
            cursor = self._conn.execute(
                f"UPDATE jobs SET {assignments}, worker_id = NULL, cancel_requested = NULL"
                f" WHERE seq = %s AND state = 'processing' AND worker_id = %s{guard}",
                (*map(_text, params), job.seq, worker_id))
        return cursor.rowcount == 1

    def mark_completed(self, job: Job, worker_id: str, now: float) -> bool:
        """Completed; in the same transaction, the jobs waiting for it wait for one job fewer,
        and one that waits for none any more becomes due now (if not later)."""
        with self._write() as conn:
            done, freed = conn.execute(_COMPLETE, {"now": now, "seq": job.seq, "worker": worker_id}).fetchone()
            if freed:
                self._notify()
        return done == 1

    def mark_failed(self, job: Job, worker_id: str, exit_code: Optional[int], error: str,
                    run_at: float, now: float) -> bool:
        return self._finish(job, worker_id, "state = 'failed', exit_code = %s, last_error = %s,"
                            " run_at = %s, updated_at = %s", (exit_code, error, run_at, now), _NOT_CANCELLED)

    def mark_dead(self, job: Job, worker_id: str, exit_code: Optional[int], error: str, now: float) -> bool:
        """Dead (in the DLQ); in the same transaction, so is every job waiting for it."""
        with self._write():
            done = self._finish(job, worker_id, "state = 'dead', exit_code = %s, last_error = %s,"
                                " updated_at = %s", (exit_code, error, now), _NOT_CANCELLED)
            if done:
                self._bury_dependents([job.id], now)
        return done

    def release(self, job: Job, worker_id: str, now: float) -> bool:
        """Give back a job whose run was killed by a forced stop: pending, attempt not counted."""
        with self._write():
            done = self._finish(job, worker_id, "state = 'pending', attempts = attempts - 1,"
                                " updated_at = %s", (now,), _NOT_CANCELLED)
            if done:
                self._notify()
        return done

    def processing_holders(self) -> list:
        """(job, pid, host, heartbeat_at) for every processing job; None where no worker row is left."""
        rows = self._rows(f"SELECT {_J_COLUMNS}, w.pid, w.host, w.heartbeat_at FROM jobs j"
                          " LEFT JOIN workers w ON w.worker_id = j.worker_id WHERE j.state = 'processing'"
                          " ORDER BY j.seq")
        return [(_job(row[:-3]), *row[-3:]) for row in rows]

    def jobs_of_worker(self, worker_id: str) -> list:
        return self._select(f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'processing' AND worker_id = %s"
                            " ORDER BY seq", (worker_id,))

    def integrity_problems(self, limit: int = 20) -> list:
        """The server keeps its own files sound; what is checked here is that the schema is ours."""
        version = self._version()
        return [] if version == SCHEMA_VERSION else [f"schema version {version}, expected {SCHEMA_VERSION}"]

    # -- cancelling ------------------------------------------------------------------------

    def cancel_waiting(self, job_id: str, now: float) -> bool:
        """A pending or failed job to the DLQ: dead, "cancelled", attempts unchanged."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET state = 'dead', exit_code = NULL, last_error = %s, updated_at = %s"
                " WHERE id = %s AND state IN ('pending', 'failed')", (CANCELLED, now, job_id))
            if cursor.rowcount:
                self._bury_dependents([job_id], now)
        return cursor.rowcount == 1

    def request_cancel(self, job_id: str, now: float) -> bool:
        """Ask the worker of a processing job to stop its run (a repeated request keeps the first time)."""
        with self._write() as conn:
            cursor = conn.execute("UPDATE jobs SET cancel_requested = coalesce(cancel_requested, %s)"
                                  " WHERE id = %s AND state = 'processing'", (now, job_id))
        return cursor.rowcount == 1

    def cancel_requested(self, job: Job) -> bool:
        """Whether `cancel` asked to stop this job's run: one primary-key lookup."""
        return self._one("SELECT cancel_requested FROM jobs WHERE seq = %s", (job.seq,)) is not None

    def mark_cancelled(self, job: Job, worker_id: str, now: float) -> bool:
        """Record a run stopped by `cancel`: dead, "cancelled", exit_code null, the run counted."""
        with self._write():
            done = self._finish(job, worker_id, "state = 'dead', exit_code = NULL, last_error = %s,"
                                " updated_at = %s", (CANCELLED, now))
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
        hour = minute // 60
        params = {"seq": job.seq, "queue": queue, "attempt": run.attempt, "worker": run.worker,
                  "host": run.host, "started": run.started_at, "ended": run.ended_at, "outcome": run.outcome,
                  "exit_code": run.exit_code, "error": _text(run.error), "tail": _text(run.output_tail),
                  "duration": duration, "wait": wait, "dkey": str(stats.bucket(duration)),
                  "wkey": str(stats.bucket(wait)), "hour": hour, "minute": minute % 60,
                  "whole": WHOLE_HOUR, "total": TOTAL_HOUR}
        failed = run.outcome in FAILED_RUNS
        if failed:
            params.update(hash=command_hash(job.command), command=job.command[:COMMAND_CHARS])
        with self._write() as conn:
            conn.execute(_RECORD_FAILED if failed else _RECORD, params)
            if minute != self._kept_minute:  # once a minute: drop aggregates past retention
                self._kept_minute = minute
                past = (minute - RETENTION_MINUTES) // 60
                conn.execute("DELETE FROM run_counts WHERE hour < %s", (past,))
                conn.execute("DELETE FROM failure_counts WHERE hour < %s", (past,))

    def runs_of(self, job: Job) -> list:
        """The job's runs, oldest first."""
        return [Run(*row) for row in self._rows(
            "SELECT attempt, worker, host, started_at, ended_at, outcome, exit_code, error, output_tail"
            " FROM runs WHERE job_seq = %s ORDER BY id", (job.seq,))]

    def run_window(self, since: float, queue: Optional[str] = None) -> "stats.Window":
        """The runs that ended from the minute of `since` on, summed from the aggregates."""
        periods, params = _window("run_counts", "outcome, runs, duration_sum, duration_max, wait_max,"
                                  " durations, waits", since, queue)
        by_outcome, total, longest, waited = {}, 0.0, 0.0, 0.0
        for outcome, runs, duration_sum, duration_max, wait_max in self._rows(
                "SELECT outcome, sum(runs)::bigint, sum(duration_sum), max(duration_max), max(wait_max)"
                f" FROM ({periods}) p GROUP BY outcome", params):
            by_outcome[outcome] = runs
            total += duration_sum
            longest, waited = max(longest, duration_max), max(waited, wait_max)
        histograms = [
            {int(key): n for key, n in self._rows(
                f"SELECT h.key, sum(h.value::bigint)::bigint FROM ({periods}) AS p,"
                f" jsonb_each_text(p.{column}) AS h GROUP BY h.key", params)}
            for column in ("durations", "waits")
        ]
        return stats.Window(by_outcome, histograms[0], total, longest, histograms[1], waited)

    def failing_commands(self, since: float, queue: Optional[str] = None, limit: int = 5) -> list:
        """[(command, failed runs)] of the commands with the most failed runs from `since` on."""
        periods, params = _window("failure_counts", "command_hash, command, failures", since, queue)
        return [tuple(row) for row in self._rows(
            f"SELECT min(command), sum(failures)::bigint AS n FROM ({periods}) p"
            " GROUP BY command_hash ORDER BY n DESC, min(command) LIMIT %(limit)s", {**params, "limit": limit})]

    def run_totals(self) -> list:
        """[(queue, outcome, runs, duration_sum, durations histogram)] since the queue began."""
        rows = self._rows("SELECT queue, outcome, runs, duration_sum, durations FROM run_counts"
                          " WHERE hour = %s AND minute = %s ORDER BY queue, outcome", (TOTAL_HOUR, WHOLE_HOUR))
        return [(queue, outcome, runs, total, stats.merge({}, histogram))
                for queue, outcome, runs, total, histogram in rows]

    def runs_per_minute(self, now: float, minutes: int = 60, queue: Optional[str] = None) -> list:
        """[(minute, outcome, runs)] for the runs that ended in the last `minutes` minutes."""
        only = " AND queue = %(queue)s" if queue is not None else ""
        rows = self._rows(
            "SELECT hour, minute, outcome, sum(runs)::bigint FROM run_counts"
            " WHERE (hour, minute) >= (%(hour0)s, %(minute0)s) AND (hour, minute) <= (%(hour1)s, %(minute1)s)"
            f" AND minute < 60{only} GROUP BY hour, minute, outcome ORDER BY hour, minute, outcome",
            {**minute_range(now, minutes), "queue": queue})
        return [(hour * 60 + minute, outcome, runs) for hour, minute, outcome, runs in rows]

    # -- settings --------------------------------------------------------------------------

    def read_settings(self):
        """The configuration object stored in the database, shared by every host (None: defaults)."""
        text = self._one("SELECT value FROM queuectl_meta WHERE key = 'config'")
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise StoreError(f"corrupt configuration in {self.path}: {exc}") from None

    def write_settings(self, values: dict) -> None:
        with self._write() as conn:
            conn.execute("INSERT INTO queuectl_meta VALUES ('config', %s) ON CONFLICT (key)"
                         " DO UPDATE SET value = excluded.value", (json.dumps(values),))

    def settings_stamp(self) -> object:
        return self._one("SELECT value FROM queuectl_meta WHERE key = 'config'")

    # -- workers ---------------------------------------------------------------------------

    def register_worker(self, worker_id: str, pid: int, pool_id: str, host: str, home: str, now: float) -> None:
        self._conn.execute(
            "INSERT INTO workers (worker_id, pid, pool_id, host, home, started_at, heartbeat_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (worker_id) DO UPDATE SET pid = excluded.pid,"
            " pool_id = excluded.pool_id, host = excluded.host, home = excluded.home,"
            " started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at",
            (worker_id, pid, pool_id, host, home, now, now))

    def heartbeat(self, worker_id: str, now: float) -> bool:
        """Record that the worker lives; False if its row was removed (it was presumed dead)."""
        return self._conn.execute("UPDATE workers SET heartbeat_at = %s WHERE worker_id = %s",
                                  (now, worker_id)).rowcount == 1

    def remove_worker(self, worker_id: str) -> None:
        self._conn.execute("DELETE FROM workers WHERE worker_id = %s", (worker_id,))

    def remove_stale_workers(self, now: float, lease_seconds: float) -> None:
        self._conn.execute("DELETE FROM workers WHERE heartbeat_at < %s", (now - lease_seconds,))

    def workers(self, now: float, lease_seconds: float) -> list:
        """Workers heard from within the lease, each with the job it is running."""
        rows = self._rows(
            "SELECT w.worker_id, w.pid, w.pool_id, w.host, w.home, w.started_at, w.heartbeat_at, j.id, j.started_at"
            " FROM workers w LEFT JOIN jobs j ON j.state = 'processing' AND j.worker_id = w.worker_id"
            " WHERE w.heartbeat_at >= %s ORDER BY w.pool_id, w.started_at, w.worker_id", (now - lease_seconds,))
        return [WorkerInfo(*row) for row in rows]


def _text(value):
    """A run's words as PostgreSQL can store them: its text type holds no NUL character, which
    a job's output may well contain (the SQLite store keeps it)."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _job(row) -> Job:
    """A Job from a row of JOB_COLUMNS: a whole-number timeout reads back as an integer, as
    the SQLite store's NUMERIC column gives it."""
    timeout = row[7]
    if timeout is not None and float(timeout).is_integer():
        row = (*row[:7], int(timeout), *row[8:])
    return Job(*row)


def _window(table: str, columns: str, since: float, queue: Optional[str]) -> tuple:
    """The aggregate rows of a window from the minute of `since` on (see common.window_bounds)."""
    only = " AND queue = %(queue)s" if queue is not None else ""
    sql = (f"SELECT {columns} FROM {table} WHERE hour = %(partial)s AND minute >= %(minute)s AND minute < 60{only}"
           f" UNION ALL SELECT {columns} FROM {table} WHERE minute = 60 AND hour >= %(whole)s"
           f" AND hour < {TOTAL_HOUR}{only}")
    return sql, {**window_bounds(since), "queue": queue}


# The earliest run_at among claimable jobs (of one queue: `only`), from the claim index: a seek
# for each distinct priority (a loose index scan), then the first run_at of each; as cheap with a
# million jobs due tomorrow as with none.
_EARLIEST = (
    "WITH RECURSIVE p(v) AS ((SELECT priority FROM jobs WHERE " + CLAIMABLE + " {only} ORDER BY priority LIMIT 1)"
    " UNION ALL SELECT (SELECT priority FROM jobs WHERE " + CLAIMABLE + " {only} AND priority > p.v"
    " ORDER BY priority LIMIT 1) FROM p WHERE p.v IS NOT NULL)"
    " SELECT min((SELECT run_at FROM jobs WHERE " + CLAIMABLE + " {only} AND priority = p.v"
    " ORDER BY run_at LIMIT 1)) FROM p WHERE p.v IS NOT NULL"
)
# The claim: the row `pick` chose, locked (rows other claimers hold are skipped), made processing.
_CLAIM = ("WITH next AS ({pick}) UPDATE jobs j SET state = 'processing', attempts = j.attempts + 1,"
          " worker_id = %(worker)s, started_at = %(now)s, updated_at = %(now)s FROM next"
          f" WHERE j.seq = next.seq RETURNING {_J_COLUMNS}")
_PICK_ANY = (f"SELECT seq FROM jobs WHERE {CLAIMABLE} AND run_at <= %(now)s"
             " ORDER BY priority, run_at, seq LIMIT 1 FOR UPDATE SKIP LOCKED")
# The same, while no queue is paused or limited (an uncorrelated check, made once per claim).
_PICK_ANY_UNSET = _PICK_ANY.replace(
    " ORDER BY", " AND NOT EXISTS (SELECT 1 FROM queues WHERE max_running <> 0 OR paused <> 0) ORDER BY")
# Completed, and the jobs that wait for it wait for one job fewer (due now if none is left), in
# one statement: (1 if it was this worker's to complete, how many jobs were waiting for it).
_COMPLETE = (
    "WITH done AS (UPDATE jobs SET state = 'completed', exit_code = 0, last_error = NULL, updated_at = %(now)s,"
    " worker_id = NULL, cancel_requested = NULL WHERE seq = %(seq)s AND state = 'processing'"
    " AND worker_id = %(worker)s RETURNING id),"
    " freed AS (UPDATE jobs c SET blocked = c.blocked - 1, run_at = CASE WHEN c.blocked = 1"
    " AND c.state IN ('pending', 'failed') AND c.run_at < %(now)s THEN %(now)s ELSE c.run_at END"
    " FROM job_deps d, done WHERE d.parent = done.id AND c.seq = d.child RETURNING 1)"
    " SELECT (SELECT count(*) FROM done), (SELECT count(*) FROM freed)"
)
_RUN_INSERT = (
    "INSERT INTO runs (job_seq, queue, attempt, worker, host, started_at, ended_at, outcome, exit_code, error,"
    " output_tail) VALUES (%(seq)s, %(queue)s, %(attempt)s, %(worker)s,"
    " coalesce(%(host)s, (SELECT host FROM workers WHERE worker_id = %(worker)s)),"
    " %(started)s, %(ended)s, %(outcome)s, %(exit_code)s, %(error)s, %(tail)s)"
)
# The run's minute, its hour and the totals in one statement (three different rows, always in
# this order, so two transactions never wait for each other's rows the other way round).
_COUNT_UPSERT = (
    "INSERT INTO run_counts AS c (hour, minute, queue, outcome, runs, duration_sum, duration_max, wait_max,"
    " durations, waits) SELECT h, m, %(queue)s, %(outcome)s, 1, %(duration)s, %(duration)s, %(wait)s,"
    " jsonb_build_object(%(dkey)s::text, 1), jsonb_build_object(%(wkey)s::text, 1)"
    " FROM (VALUES (%(hour)s::bigint, %(minute)s::int), (%(hour)s, %(whole)s), (%(total)s, %(whole)s)) AS v(h, m)"
    " ON CONFLICT (hour, minute, queue, outcome) DO UPDATE SET runs = c.runs + 1,"
    " duration_sum = c.duration_sum + excluded.duration_sum,"
    " duration_max = greatest(c.duration_max, excluded.duration_max),"
    " wait_max = greatest(c.wait_max, excluded.wait_max),"
    " durations = c.durations"
    " || jsonb_build_object(%(dkey)s::text, coalesce((c.durations ->> %(dkey)s::text)::bigint, 0) + 1),"
    " waits = c.waits || jsonb_build_object(%(wkey)s::text, coalesce((c.waits ->> %(wkey)s::text)::bigint, 0) + 1)"
)
_FAILURE_UPSERT = (
    "INSERT INTO failure_counts AS c (hour, minute, queue, command_hash, failures, command)"
    " SELECT %(hour)s, m, %(queue)s, %(hash)s, 1, %(command)s FROM (VALUES (%(minute)s::int), (%(whole)s)) AS v(m)"
    " ON CONFLICT (hour, minute, queue, command_hash) DO UPDATE SET failures = c.failures + 1"
)

# A run and its counts in one statement (each WITH part runs once, referenced or not).
_RECORD = f"WITH run AS ({_RUN_INSERT}) {_COUNT_UPSERT}"
_RECORD_FAILED = f"WITH run AS ({_RUN_INSERT}), failure AS ({_FAILURE_UPSERT}) {_COUNT_UPSERT}"


def _reporting_errors(method):
    """Every psycopg error as DatabaseError, worded without the password; a connection that
    broke is replaced at the next call."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            if self._depth == 0:
                self._ready()
            return method(self, *args, **kwargs)
        except psycopg.Error as exc:
            if self._conn is not None and self._conn.broken and self._depth == 0:
                self._drop()
            raise DatabaseError(f"database {self.path}: {self._words(exc)}") from None
    return guarded


_UNGUARDED = ("close", "clock", "transaction")  # they report their own errors
for _name, _method in [(name, getattr(PostgresStore, name)) for name in dir(PostgresStore)]:  # inherited ones too
    if isinstance(_method, types.FunctionType) and not _name.startswith("_") and _name not in _UNGUARDED:
        setattr(PostgresStore, _name, _reporting_errors(_method))
