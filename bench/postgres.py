#!/usr/bin/env python3
"""queuectl on PostgreSQL beside SQLite: the same measures on both backends, taking turns.

    .venv/bin/python bench/postgres.py [--quick] [--url URL] [--keep] [--json PATH]

Standard library plus psycopg (queuectl[postgres]). As bench/run.py does: the CLI is the console
script next to this Python, every measure gets fresh temporary queue homes, and the backends
(and the floor, where there is one) take turns round by round, so the noise of a shared machine
falls on all of them. Every PostgreSQL measure gets its own schema `bench_<random>` in the
database of --url (default $QUEUECTL_BENCH_PG, else postgresql://postgres@127.0.0.1:5432/test),
reached through `?options=-csearch_path%3Dbench_...`; each schema is dropped (CASCADE) when its
measure ends, whatever happens. See bench/README.md for what each measure means.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
from typing import Callable, List, NamedTuple, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402  (bench/run.py: its helpers, the house style)

import psycopg  # noqa: E402

from queuectl.home import QueueHome  # noqa: E402
from queuectl.models import NewJob  # noqa: E402
from queuectl.store import open_store  # noqa: E402

QUEUECTL = R.QUEUECTL
ENV = R.ENV  # shared with run.py's helpers (run, timed): main() sets it up
DEFAULT_URL = os.environ.get("QUEUECTL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


class Config(NamedTuple):
    drain_jobs: int
    drain_runs: int
    pickup_jobs: int
    big_rows: int
    claim_runs: int
    claims: int
    ledger_jobs: int
    ledger_runs: int


QUICK = Config(drain_jobs=500, drain_runs=1, pickup_jobs=6, big_rows=100_000, claim_runs=2, claims=500,
               ledger_jobs=500, ledger_runs=1)
FULL = Config(drain_jobs=2000, drain_runs=2, pickup_jobs=20, big_rows=1_000_000, claim_runs=4, claims=500,
              ledger_jobs=2000, ledger_runs=1)
CLAIM_SECONDS = 2.0  # a claim run stops after this long (and at least 20 claims): a slow plan costs 100 ms a claim


class Fig(NamedTuple):
    """One line of the table: the same measure on each backend."""

    measure: str
    sqlite: Optional[List[float]]
    pg: Optional[List[float]]
    ratio: Optional[float]  # PostgreSQL / SQLite unless the measure says otherwise
    floor: Optional[List[float]]
    target: str
    met: Optional[bool]
    fmt: Callable[[float], str]
    note: str = ""
    head_first: bool = False  # percentile rows: the first value is the statistic


# -- PostgreSQL schemas ----------------------------------------------------------------------------

class Schemas:
    """Creates `bench_<random>` schemas in one database and drops them, always."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.admin = psycopg.connect(base, autocommit=True)
        self.live: set = set()

    def new(self) -> str:
        name = "bench_" + os.urandom(5).hex()
        self.admin.execute(f'CREATE SCHEMA "{name}"')
        self.live.add(name)
        return name

    def url(self, schema: str, listen: bool = True) -> str:
        sep = "&" if "?" in self.base else "?"
        # application_name: so that a connection left behind by a pool that would not stop can
        # be found (and only ours ended) before its schema is dropped.
        return (f"{self.base}{sep}options=-csearch_path%3D{schema}&application_name={schema}"
                + ("" if listen else "&listen=off"))

    def drop(self, schema: str) -> None:
        if schema not in self.live:
            return
        self.admin.execute("SET lock_timeout = '20s'")
        try:
            self.admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        except psycopg.errors.LockNotAvailable:
            self.admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s"
                               " AND pid <> pg_backend_pid()", (schema,))
            time.sleep(0.5)
            self.admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        self.live.discard(schema)

    def close(self) -> None:
        try:
            for schema in sorted(self.live):
                try:
                    self.drop(schema)
                except psycopg.Error as exc:
                    print(f"warning: could not drop schema {schema}: {exc}", file=sys.stderr)
        finally:
            self.admin.close()

    def scalar(self, schema: str, sql: str, params=None):
        with psycopg.connect(self.url(schema), autocommit=True) as conn:
            return conn.execute(sql, params).fetchone()[0]


class Backend(NamedTuple):
    name: str  # "sqlite", "pg", "pg-nolisten"
    url: Optional[str]


# -- the CLI -------------------------------------------------------------------------------------

def qctl(home: str, url: Optional[str], *args: str) -> list:
    return [QUEUECTL, "--home", home, *(("--db", url) if url else ()), *args]


def status(home: str, url: Optional[str]) -> dict:
    return json.loads(R.run(qctl(home, url, "status", "--json"), os.path.dirname(home)).stdout)


def stop_pools(home: str, url: Optional[str]) -> None:
    if os.path.isdir(home):
        R.run(qctl(home, url, "worker", "stop", "--force", "--timeout", "10"), os.path.dirname(home),
              check=False, timeout=60)


def start_detached(home: str, url: Optional[str], count: int = 1) -> None:
    out = R.run(qctl(home, url, "worker", "start", "--count", str(count), "--detach"), os.path.dirname(home)).stdout
    if sum(1 for line in out.splitlines() if line.startswith("worker ")) != count:
        raise R.BenchError(f"unexpected output of worker start --detach: {out!r}")


def burst_pools(argvs: list, where: str, timeout: float = 600) -> float:
    """Start these `worker start --burst` pools at once; seconds until the last one exited."""
    procs, outs = [], []
    started = time.perf_counter()
    try:
        for n, (argv, cwd) in enumerate(argvs):
            out = open(os.path.join(where, f"pool{n}.out"), "w")
            outs.append(out)
            procs.append(subprocess.Popen(argv, cwd=cwd, env=ENV, stdout=out, stderr=subprocess.STDOUT))
        for proc in procs:
            proc.wait(timeout=max(1.0, timeout - (time.perf_counter() - started)))
        seconds = time.perf_counter() - started
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for out in outs:
            out.close()
    for n, proc in enumerate(procs):
        if proc.returncode != 0:
            with open(os.path.join(where, f"pool{n}.out")) as handle:
                raise R.BenchError(f"burst pool {n} exited {proc.returncode}: {handle.read()[-500:]}")
    return seconds


class ServerCpu:
    """CPU seconds of the server backends serving a schema (found by application_name), read
    from /proc every 50 ms while they live: the last 50 ms of each can escape it."""

    def __init__(self, pg: Schemas, schema: Optional[str]) -> None:
        self.pg, self.schema, self.ticks, self.seconds = pg, schema, {}, 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "ServerCpu":
        if self.schema:
            self._conn = psycopg.connect(self.pg.base, autocommit=True)
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            for (pid,) in self._conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                             (self.schema,)).fetchall():
                try:
                    self.ticks[pid] = R.cpu_ticks(pid)
                except OSError:
                    pass
            self._stop.wait(0.05)

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._conn.close()
            self.seconds = sum(self.ticks.values()) / R.CLK_TCK


def rotate(rounds: int, steps: list) -> None:
    """Run every step once per round, in an order that rotates round by round (and is reversed
    every other round), so that no step always follows the same one."""
    for n in range(rounds):
        order = steps[n % len(steps):] + steps[:n % len(steps)]
        for step in (order if n % 2 == 0 else order[::-1]):
            step()


def paired(a: list, b: list) -> float:
    return R.paired_ratio(a, b)


def fmt_x(x: float) -> str:
    return f"{x:.2f}×"


def fmt_n(x: float) -> str:
    return f"{x:.0f}"


# -- 1. drain ----------------------------------------------------------------------------------

# 1d: a worker's database work per job, in one process, without running anything: record the
# outcome and claim the next job in one transaction, as Worker._record does (run.py's 9'').
RECORD_LOOP = """\
import sys, time
from queuectl.models import NewJob, Outcome
from queuectl.store import open_store
from queuectl.worker import record_outcome
db, url, n = sys.argv[1], sys.argv[2] or None, int(sys.argv[3])
store = open_store(db, url, durable=False)
now = store.clock()
store.insert([NewJob(None, "true", 3, 0, None, now, "/") for _ in range(n + 1)], now)
settings = {"backoff_base": 2, "backoff_max": 3600}
job = store.claim_next("w", store.clock())
cpu, wall = time.process_time(), time.perf_counter()
for _ in range(n):
    with store.transaction():
        record_outcome(store, settings, job, "w", Outcome(0, None), store.clock())
        job = store.claim_next("w", store.clock())
print((time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6)
store.close()
"""


def m1_drain(cfg: Config, scratch: R.Scratch, pg: Schemas) -> list:
    n = cfg.drain_jobs
    where = scratch.new("drain-input")
    jobs = R.write(os.path.join(where, "jobs.jsonl"), "".join('{"command": "true"}\n' for _ in range(n)))
    loop = R.write(os.path.join(where, "record_loop.py"), RECORD_LOOP)
    got: dict = collections.defaultdict(list)

    def drain(backend: str, pools: int) -> Callable[[], None]:
        def once() -> None:
            schema = pg.new() if backend == "pg" else None
            url = pg.url(schema) if schema else None
            try:
                # PostgreSQL: one queue home per pool (as on separate hosts), sharing the database;
                # SQLite: every pool on the one home, as its database is a file in it.
                homes = [R.fresh_home(scratch, f"drain-{backend}") for _ in range(pools if url else 1)]
                for home in homes:
                    R.run(qctl(home, url, "status"), os.path.dirname(home))  # home (and schema) exist
                argvs = [(qctl(homes[i % len(homes)], url, "worker", "start", "--count", "2", "--burst"),
                          os.path.dirname(homes[i % len(homes)])) for i in range(pools)]
                try:
                    if pools == 1:  # the fixed part: the same pool on an empty queue
                        got[(backend, "empty")].append(burst_pools(argvs, os.path.dirname(homes[0])))
                    R.run(qctl(homes[0], url, "enqueue", "--file", jobs), os.path.dirname(homes[0]))
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    with ServerCpu(pg, schema) as server:
                        seconds = burst_pools(argvs, os.path.dirname(homes[0]))
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    if pools == 1:
                        used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                        got[(backend, "cpu")].append(used / n * 1e6)
                        got[(backend, "server")].append(server.seconds / n * 1e6)
                finally:
                    for home in homes:
                        stop_pools(home, url)
                done = status(homes[0], url)
                logs = sum(len(os.listdir(os.path.join(home, "logs"))) for home in homes)
                if done["completed"] != n or logs != n:
                    raise R.BenchError(f"drain {backend} x{pools}: {done['completed']} of {n} completed, {logs} logs")
                got[(backend, pools)].append(n / seconds)
            finally:
                if schema:
                    pg.drop(schema)
        return once

    def floor() -> None:
        got["floor"].append(n / R.timed(["sh", "-c", f"seq {n} | xargs -P2 -n1 sh -c true"], where))

    def record(backend: str) -> Callable[[], None]:
        def once() -> None:
            schema = pg.new() if backend == "pg" else None
            try:
                there = scratch.new(f"record-{backend}")
                out = R.run([sys.executable, loop, os.path.join(there, "queue.db"), pg.url(schema) if schema else "",
                             "500"], there).stdout.split()
                got[(backend, "record")].append(float(out[0]))
                got[(backend, "record-cpu")].append(float(out[1]))
            finally:
                if schema:
                    pg.drop(schema)
        return once

    rotate(cfg.drain_runs, [floor, drain("sqlite", 1), drain("pg", 1), drain("sqlite", 2), drain("pg", 2),
                            record("sqlite"), record("pg")])
    rows = []
    for pools, label in ((1, "1 pool × 2 workers"), (2, "2 pools × 2 workers")):
        lite, post = got[("sqlite", pools)], got[("pg", pools)]
        rows.append(Fig(f"1{'ab'[pools - 1]}. drain {n:,} `true` jobs, {label} (jobs/s)", lite, post,
                        paired(post, lite), got["floor"], "(report)", None, R.fmt_rate,
                        "floor: seq N | xargs -P2 -n1 sh -c true, in the same rounds; "
                        f"vs the floor: SQLite {paired(lite, got['floor']):.2f}×, PostgreSQL "
                        f"{paired(post, got['floor']):.2f}×" + ("" if pools == 1 else
                        "; PostgreSQL: two queue homes sharing the schema, SQLite: two pools on one home")))
    le, pe = got[("sqlite", "empty")], got[("pg", "empty")]
    rows.append(Fig("1c. that pool on an empty queue: start-up + shutdown (s)", le, pe, paired(pe, le), None,
                    "(report)", None, R.fmt_s, "so 1a without it: SQLite "
                    f"{R.fmt_rate(statistics.median(n / (n / r - e) for r, e in zip(got[('sqlite', 1)], le)))}, "
                    f"PostgreSQL {R.fmt_rate(statistics.median(n / (n / r - e) for r, e in zip(got[('pg', 1)], pe)))}"))
    lc, pc, ps = got[("sqlite", "cpu")], got[("pg", "cpu")], got[("pg", "server")]
    rows.append(Fig("1c'. CPU per job of 1a: pool, workers, the jobs' shells (µs)", lc, pc, paired(pc, lc), None,
                    "(report)", None, R.fmt_us, "RUSAGE_CHILDREN around the drain; PostgreSQL's server backends "
                    f"on top of that: {R.fmt_us(statistics.median(ps))} per job (from /proc, sampled every 50 ms)"))
    lr, pr = got[("sqlite", "record")], got[("pg", "record")]
    lc, pc = got[("sqlite", "record-cpu")], got[("pg", "record-cpu")]
    rows.append(Fig("1d. record + claim per job, one process, no run (µs of wall time)", lr, pr, paired(pr, lr),
                    None, "(report)", None, R.fmt_us,
                    "the database work of Worker._record per job (500 jobs), as bench/run.py's 9''; the client's "
                    f"CPU of it: SQLite {R.fmt_us(statistics.median(lc))}, PostgreSQL {R.fmt_us(statistics.median(pc))} "
                    "(PostgreSQL's server works on top of that, on the same 2 cores)"))
    return rows


# -- 2. pickup latency ----------------------------------------------------------------------------

def m2_pickup(cfg: Config, scratch: R.Scratch, pg: Schemas) -> list:
    stamps = scratch.new("pickup-stamps")
    schemas = [pg.new(), pg.new()]
    backends = [Backend("sqlite", None), Backend("pg", pg.url(schemas[0])),
                Backend("pg-nolisten", pg.url(schemas[1], listen=False))]
    homes = {b.name: R.fresh_home(scratch, f"pickup-{b.name}") for b in backends}
    from_call: dict = collections.defaultdict(list)
    from_return: dict = collections.defaultdict(list)
    enqueue: dict = collections.defaultdict(list)
    from_commit: dict = collections.defaultdict(list)
    floor: list = []
    stores: dict = {}
    try:
        for b in backends:
            R.run(qctl(homes[b.name], b.url, "status"), os.path.dirname(homes[b.name]))
        for b in backends:  # three idle pools at once: each sample of one runs beside the other two idle
            start_detached(homes[b.name], b.url, 1)
        time.sleep(1.0)
        counter = [0]

        def sample(b: Backend) -> Callable[[], None]:
            def once() -> None:
                counter[0] += 1
                home = homes[b.name]
                path = os.path.join(stamps, f"{b.name}-{counter[0]}")
                before = time.time()
                R.run(qctl(home, b.url, "enqueue", f"date +%s.%N > {path}"), os.path.dirname(home))
                after = time.time()
                started = R._read_stamp(path)
                from_call[b.name].append(started - before)
                from_return[b.name].append(started - after)
                enqueue[b.name].append(after - before)
                time.sleep(random.uniform(0.1, 0.3))  # the worker idles again, at a random phase
            return once

        def committed(b: Backend) -> Callable[[], None]:
            """Enqueued through the store in this process: from the commit to the job's start,
            what the queue itself takes (no CLI start-up, no psycopg import)."""
            def once() -> None:
                counter[0] += 1
                home = homes[b.name]
                if b.name not in stores:
                    stores[b.name] = open_store(QueueHome(home).db_path, b.url)
                store = stores[b.name]
                path = os.path.join(stamps, f"{b.name}-commit-{counter[0]}")
                store.insert([NewJob(None, f"date +%s.%N > {path}", 0, 0, None, store.clock(),
                                     os.path.dirname(home))], store.clock())
                done = time.time()
                from_commit[b.name].append(R._read_stamp(path) - done)
                time.sleep(random.uniform(0.1, 0.3))
            return once

        def direct() -> None:
            path = os.path.join(stamps, f"floor-{len(floor)}")
            before = time.time()
            subprocess.run(["/bin/sh", "-c", f"date +%s.%N > {path}"], check=True)
            floor.append(R._read_stamp(path) - before)

        rotate(cfg.pickup_jobs, [sample(b) for b in backends] + [committed(b) for b in backends] + [direct])
    finally:
        for store in stores.values():
            store.close()
        for b in backends:
            stop_pools(homes[b.name], b.url)
        for schema in schemas:
            pg.drop(schema)

    def pct(values: list, p: float) -> list:
        return [R.percentile(values, p), *values]

    rows = []
    m = len(from_call["sqlite"])
    f50, f95 = pct(floor, 50), pct(floor, 95)
    for p, goal in ((50, 0.100), (95, None)):
        lite, post, off = (pct(from_call[k], p) for k in ("sqlite", "pg", "pg-nolisten"))
        rows.append(Fig(f"2{'ab'[p == 95]}. pickup p{p}, from before `enqueue` ({m} jobs each; PG: LISTEN)",
                        lite, post, post[0] / lite[0], f50 if p == 50 else f95,
                        "≤ 100 ms" if goal else "(report)",
                        (lite[0] <= goal and post[0] <= goal) if goal else None, R.fmt_ms,
                        "p50/p95 of one sample set (min–max); floor: the job command spawned directly; "
                        "the three idle pools ran at once, samples taking turns" if p == 50 else "",
                        head_first=True))
        rows.append(Fig(f"2{'cd'[p == 95]}. the same, PG with ?listen=off (polls every poll_interval, 1 s)",
                        lite, off, off[0] / lite[0], None, "(report)", None, R.fmt_ms, head_first=True))
    for p in (50, 95):
        lite, post, off = (pct(from_return[k], p) for k in ("sqlite", "pg", "pg-nolisten"))
        rows.append(Fig(f"2{'ef'[p == 95]}. pickup p{p}, from enqueue's return (PG: LISTEN; listen=off: "
                        f"{R.fmt_ms(off[0])})", lite, post, None, None, "(report)", None, R.fmt_ms,
                        "can be negative: the worker often starts the job while the enqueue process is "
                        "still exiting" if p == 50 else "", head_first=True))
    for p, goal in ((50, 0.100), (95, None)):
        lite, post, off = (pct(from_commit[k], p) for k in ("sqlite", "pg", "pg-nolisten"))
        rows.append(Fig(f"2{'hi'[p == 95]}. pickup p{p}, from the enqueue's commit (the store's insert in the bench"
                        f" process; PG: LISTEN; listen=off: {R.fmt_ms(off[0])})", lite, post, None, None,
                        "≤ 100 ms" if goal else "(report)", (lite[0] <= goal and post[0] <= goal) if goal else None,
                        R.fmt_ms, "what the queue takes, without a CLI process's start-up" if p == 50 else "",
                        head_first=True))
    lite, post = enqueue["sqlite"], enqueue["pg"] + enqueue["pg-nolisten"]
    rows.append(Fig("2g. one whole `enqueue` process (the share of 2a that is not the queue's)", lite, post,
                    statistics.median(post) / statistics.median(lite), None, "(report)", None, R.fmt_ms))
    return rows


# -- 3. claim cost at size --------------------------------------------------------------------------

def build_pg_bulk(pg: Schemas, schema: str, rows: int, cwd: str) -> float:
    """`rows` due pending jobs in one INSERT ... SELECT generate_series (the schema made by the
    store first, so its indexes and count triggers are all there: job_counts stays right), plus
    the 'default' queues row enqueue would add; returns seconds taken."""
    started = time.perf_counter()
    store = open_store("", pg.url(schema))
    try:
        now = store.clock()
        with store.transaction() as conn:
            conn.execute(
                "INSERT INTO jobs (id, command, state, max_retries, priority, timeout, run_at, cwd, created_at,"
                " updated_at, queue) SELECT substr(md5(i::text), 1, 16), 'echo ' || i, 'pending', 3, 0, NULL,"
                " %s, %s, %s, %s, 'default' FROM generate_series(1, %s) AS i ORDER BY i",
                (now, cwd, now, now, rows))
            conn.execute("INSERT INTO queues (name) VALUES ('default') ON CONFLICT DO NOTHING")
        if store.counts()["pending"] != rows:
            raise R.BenchError("the PostgreSQL table has the wrong pending count")
    finally:
        store.close()
    return time.perf_counter() - started


def build_pg_insert(pg: Schemas, schema: str, rows: int, cwd: str) -> float:
    """`rows` jobs through the store's own insert in batches of 50,000, as `enqueue --file` makes
    them; returns seconds taken."""
    started = time.perf_counter()
    store = open_store("", pg.url(schema))
    try:
        for begin in range(0, rows, 50_000):
            now = store.clock()
            store.insert([NewJob(None, f"echo {i}", 3, 0, None, now, cwd)
                          for i in range(begin, min(rows, begin + 50_000))], now)
    finally:
        store.close()
    return time.perf_counter() - started


def analyze(pg: Schemas, schema: str) -> None:
    with psycopg.connect(pg.url(schema), autocommit=True) as conn:
        conn.execute("ANALYZE jobs")


def claim_cost(db_path: str, url: Optional[str], claims: int, done: Optional[list] = None) -> float:
    """µs per store.claim_next(worker_id, store.clock()), the store opened as a worker opens it;
    `claims` of them, or fewer (at least 20) once CLAIM_SECONDS have gone (appended to `done`)."""
    store = open_store(db_path, url, durable=False)
    try:
        for _ in range(10):  # warm the caches (and, on PostgreSQL, prepare the statements)
            store.claim_next("bench-worker", store.clock())
        spent, made = 0.0, 0
        while made < claims and (made < 20 or spent < CLAIM_SECONDS):
            started = time.perf_counter()
            job = store.claim_next("bench-worker", store.clock())
            spent += time.perf_counter() - started
            made += 1
            if job is None:
                raise R.BenchError("claim_next found no job")
        if done is not None:
            done.append(made)
        return spent / made * 1e6
    finally:
        store.close()


def round_trip(url: str, times: int) -> float:
    """µs per `SELECT 1` on a connection like a worker's: the floor of any statement."""
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(10):
            conn.execute("SELECT 1").fetchone()
        started = time.perf_counter()
        for _ in range(times):
            conn.execute("SELECT 1").fetchone()
        return (time.perf_counter() - started) / times * 1e6


def m3_claim(cfg: Config, scratch: R.Scratch, pg: Schemas) -> list:
    small_rows, big_rows, mid_rows = 1000, cfg.big_rows, 100_000
    if cfg.claims + 10 > small_rows:
        raise R.BenchError("more claims than small rows")
    cwd = scratch.new("claim-cwd")
    big_home = R.fresh_home(scratch, "claim-big-sqlite")
    seconds = R.build_db(big_home, big_rows)
    print(f"   (SQLite: {big_rows:,} jobs via Store.insert in {seconds:.1f} s)", flush=True)
    big_db = QueueHome(big_home).db_path
    big_schema, mid_schema = pg.new(), None
    got: dict = collections.defaultdict(list)
    try:
        if big_rows > mid_rows:
            seconds = build_pg_bulk(pg, big_schema, big_rows, cwd)
            how = "INSERT ... SELECT generate_series"
            mid_schema = pg.new()
            mid = build_pg_insert(pg, mid_schema, mid_rows, cwd)
            print(f"   (PostgreSQL: {mid_rows:,} jobs via store.insert in {mid:.1f} s)", flush=True)
        else:
            seconds, how = build_pg_insert(pg, big_schema, big_rows, cwd), "store.insert"
        print(f"   (PostgreSQL: {big_rows:,} jobs via {how} in {seconds:.1f} s)", flush=True)

        def sqlite_small() -> None:
            home = R.fresh_home(scratch, "claim-small-sqlite")
            R.build_db(home, small_rows)
            got["sqlite-small"].append(claim_cost(QueueHome(home).db_path, None, cfg.claims))

        def pg_small(analyzed: bool) -> Callable[[], None]:
            def once() -> None:
                schema = pg.new()
                try:
                    build_pg_insert(pg, schema, small_rows, cwd)
                    if analyzed:
                        analyze(pg, schema)
                    got[f"pg-small{analyzed}"].append(claim_cost("", pg.url(schema), cfg.claims))
                    if not analyzed:
                        got["rtt"].append(round_trip(pg.url(schema), cfg.claims))
                finally:
                    pg.drop(schema)
            return once

        def pg_on(schema: str, key: str) -> Callable[[], None]:
            return lambda: got[key].append(claim_cost("", pg.url(schema), cfg.claims, got[key + "-n"]))

        # As the store leaves its tables: never analyzed (autovacuum, where it runs, analyzes a
        # table some time after it grew; on a server without it, never).
        steps = [lambda: got["sqlite-big"].append(claim_cost(big_db, None, cfg.claims)), sqlite_small,
                 pg_on(big_schema, "pg-big"), pg_small(False)]
        if mid_schema:
            steps.append(pg_on(mid_schema, "pg-mid"))
        rotate(cfg.claim_runs, steps)
        # Then after ANALYZE, as autovacuum would leave them.
        for schema in (big_schema, mid_schema):
            if schema:
                analyze(pg, schema)
        steps = [pg_on(big_schema, "pg-bigA"), pg_small(True)] + ([pg_on(mid_schema, "pg-midA")] if mid_schema else [])
        rotate(max(2, cfg.claim_runs // 2), steps)
    finally:
        pg.drop(big_schema)
        if mid_schema:
            pg.drop(mid_schema)
    ls, lb, ps, pb = got["sqlite-small"], got["sqlite-big"], got["pg-smallFalse"], got["pg-big"]
    lr = [b / s for b, s in zip(lb, ls)]
    pr = [b / s for b, s in zip(pb, ps)]
    boxed = f"; claims per run {', '.join(map(str, got['pg-big-n']))}" if min(got["pg-big-n"]) < cfg.claims else ""
    rows = [
        Fig(f"3a. claim_next at {small_rows:,} due jobs (µs/claim)", ls, ps, paired(ps, ls), None,
            "(report)", None, R.fmt_us,
            f"{cfg.claims} claims per run (fewer, at least 20, once {CLAIM_SECONDS:g} s have gone), store opened "
            f"with durable=False; {small_rows:,}: a fresh table each run (SQLite: build_db, PostgreSQL: store.insert); "
            f"{big_rows:,}: one table for every run (SQLite: build_db; PostgreSQL: {how}, then counts checked); "
            "PostgreSQL tables never analyzed, as the store leaves them (this server runs no autovacuum)"),
        Fig(f"3b. claim_next at {big_rows:,} due jobs (µs/claim)", lb, pb, paired(pb, lb), None,
            "(report)", None, R.fmt_us, boxed.lstrip("; ")),
        Fig(f"3c. {big_rows:,} ÷ {small_rows:,} (each backend's own; ratio column: n/a)", lr, pr,
            None, None, "≤ 1.20× (flat)", statistics.median(lr) <= 1.20 and statistics.median(pr) <= 1.20,
            fmt_x, "per round: big ÷ small of the same round, median (min–max)"),
    ]
    if mid_schema:
        pm = got["pg-mid"]
        rows.append(Fig(f"3d. PostgreSQL: claim_next at {mid_rows:,} jobs as `enqueue --file` leaves them (µs/claim)",
                        None, pm, None, None, "≤ 1.20× of 3a", statistics.median(pm) <= 1.2 * statistics.median(ps),
                        R.fmt_us, f"store.insert in batches of 50,000, never analyzed; ÷ 3a's PostgreSQL: "
                        f"{statistics.median(pm) / statistics.median(ps):.1f}×; claims per run "
                        f"{', '.join(map(str, got['pg-mid-n']))}"))
    sa, ba = got["pg-smallTrue"], got["pg-bigA"]
    rows.append(Fig(f"3e. PostgreSQL after `ANALYZE jobs`, {small_rows:,} due jobs (µs/claim)", None, sa, None, None,
                    "(report)", None, R.fmt_us, "ANALYZE: as autovacuum would leave the tables"))
    rows.append(Fig(f"3e'. PostgreSQL after `ANALYZE jobs`, {big_rows:,} due jobs (µs/claim)", None, ba, None, None,
                    "(report)", None, R.fmt_us))
    ratios = [statistics.median(ba) / statistics.median(sa)]
    note = ""
    if mid_schema:
        ma = got["pg-midA"]
        ratios.append(statistics.median(ma) / statistics.median(sa))
        note = (f"{mid_rows:,} jobs from store.insert, analyzed: {R.fmt_us(statistics.median(ma))} "
                f"({ratios[1]:.2f}× of 1,000)")
    rows.append(Fig(f"3f. PostgreSQL after ANALYZE: {big_rows:,} ÷ {small_rows:,}", None, [ratios[0]], None, None,
                    "≤ 1.20× (flat)", max(ratios) <= 1.20, fmt_x, note))
    rows.append(Fig("3g. one round trip `SELECT 1` to the server (µs; PostgreSQL only)", None, got["rtt"], None, None,
                    "(report)", None, R.fmt_us, "the PostgreSQL claim is BEGIN, the UPDATE (its check for queue "
                    "settings inside), COMMIT: three round trips; with settings, a `queues` SELECT more"))
    return rows


# -- 4. many pools on one PostgreSQL database ----------------------------------------------------

def m4_ledger(cfg: Config, scratch: R.Scratch, pg: Schemas) -> list:
    n, pools = cfg.ledger_jobs, 4
    got: dict = collections.defaultdict(list)

    def once(backend: str) -> Callable[[], None]:
        def go() -> None:
            where = scratch.new(f"ledger-{backend}")
            ledger = os.path.join(where, "ledger")
            ids = [f"L{i:05d}" for i in range(n)]
            jobs = R.write(os.path.join(where, "jobs.jsonl"), "".join(
                json.dumps({"id": job_id, "command": f"echo {job_id} >> {ledger}"}) + "\n" for job_id in ids))
            schema = pg.new() if backend == "pg" else None
            url = pg.url(schema) if schema else None
            try:
                homes = [R.fresh_home(scratch, f"ledger-{backend}") for _ in range(pools if url else 1)]
                for home in homes:
                    R.run(qctl(home, url, "status"), os.path.dirname(home))
                R.run(qctl(homes[0], url, "enqueue", "--file", jobs), os.path.dirname(homes[0]))
                argvs = [(qctl(homes[i % len(homes)], url, "worker", "start", "--count", "2", "--burst"),
                          os.path.dirname(homes[i % len(homes)])) for i in range(pools)]
                try:
                    seconds = burst_pools(argvs, where)
                finally:
                    for home in homes:
                        stop_pools(home, url)
                with open(ledger) as handle:
                    seen = collections.Counter(line.strip() for line in handle if line.strip())
                got[(backend, "rate")].append(n / seconds)
                got[(backend, "dup")].append(sum(c - 1 for c in seen.values() if c > 1))
                got[(backend, "missing")].append(sum(1 for job_id in ids if job_id not in seen))
                got[(backend, "completed")].append(status(homes[0], url)["completed"])
                if schema:
                    got[(backend, "runs")].append(pg.scalar(schema, "SELECT count(*) FROM runs"))
            finally:
                if schema:
                    pg.drop(schema)
        return go

    rotate(cfg.ledger_runs, [once("pg"), once("sqlite")])
    dup, missing = got[("pg", "dup")], got[("pg", "missing")]
    completed, runs = got[("pg", "completed")], got[("pg", "runs")]
    return [
        Fig(f"4. {pools} pools × 2 workers, {n:,} ledger jobs (jobs/s)", got[("sqlite", "rate")],
            got[("pg", "rate")], paired(got[("pg", "rate")], got[("sqlite", "rate")]), None, "(report)", None,
            R.fmt_rate, f"each job `echo ID >> ledger`; PostgreSQL: {pools} queue homes sharing one schema, "
            f"SQLite: {pools} pools on one home; PostgreSQL: completed {', '.join(map(str, completed))}, "
            f"run records {', '.join(map(str, runs))} (of {n:,} per run)"),
        Fig("4'. duplicates in the ledger (ids written more than once)", got[("sqlite", "dup")], dup, None, None,
            "0", max(dup) == 0 and max(got[("sqlite", "dup")]) == 0, fmt_n),
        Fig("4''. missing from the ledger", got[("sqlite", "missing")], missing, None, None, "0",
            max(missing) == 0 and max(got[("sqlite", "missing")]) == 0, fmt_n),
    ]


# -- the report ---------------------------------------------------------------------------------

def warm_up(scratch: R.Scratch, pg: Schemas) -> None:
    """Every code path once on each backend, so that its bytecode is cached before anything is timed."""
    schema = pg.new()
    try:
        for url in (None, pg.url(schema)):
            home = R.fresh_home(scratch, "warm-up")
            cwd = os.path.dirname(home)
            R.run(qctl(home, url, "enqueue", "true"), cwd)
            R.run(qctl(home, url, "status"), cwd)
            try:
                R.run(qctl(home, url, "worker", "start", "--burst"), cwd, timeout=60)
                start_detached(home, url, 1)
            finally:
                stop_pools(home, url)
    finally:
        pg.drop(schema)


def server_lines(pg: Schemas) -> list:
    settings = {name: pg.admin.execute(f"SHOW {name}").fetchone()[0]
                for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers", "autovacuum")}
    return [f"postgres: {settings.pop('server_version')} at {_redact(pg.base)}; "
            + ", ".join(f"{k} {v}" for k, v in settings.items()) + f"; psycopg {psycopg.__version__}"]


def _redact(url: str) -> str:
    from queuectl.store import redact

    return redact(url)


def table(rows: list) -> str:
    header = ["measure", "SQLite median (min–max)", "PostgreSQL median (min–max)", "PG ÷ SQLite", "floor",
              "target", "met"]
    lines = [[row.measure, R.cell(row.sqlite, row.fmt, row.head_first), R.cell(row.pg, row.fmt, row.head_first),
              "—" if row.ratio is None else fmt_x(row.ratio),
              R.cell(row.floor, row.fmt, row.head_first) if row.floor else "—",
              row.target, {True: "yes", False: "NO", None: "—"}[row.met]] for row in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths)) + " |" for line in lines]
    notes = [f"  {row.measure.split(' ')[0]} {row.note}" for row in rows if row.note]
    return "\n".join(out + ["", "notes:"] + notes)


MEASURES = {
    1: ("drain, one and two pools", m1_drain),
    2: ("pickup latency of an idle pool", m2_pickup),
    3: ("claim cost at size", m3_claim),
    4: ("4 pools on one database, ledger", m4_ledger),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer runs (about a minute)")
    parser.add_argument("--only", help="comma-separated measure numbers, e.g. 1,4")
    parser.add_argument("--url", default=DEFAULT_URL, help="the PostgreSQL database (a schema per measure)")
    parser.add_argument("--json", metavar="PATH", help="also write every sample to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = parser.parse_args()
    if not os.access(QUEUECTL, os.X_OK):
        print(f"no queuectl console script at {QUEUECTL}: install queuectl into this Python's venv", file=sys.stderr)
        return 2
    cfg = QUICK if args.quick else FULL
    chosen = sorted(int(x) for x in args.only.split(",")) if args.only else sorted(MEASURES)
    try:
        pg = Schemas(args.url)
    except psycopg.Error as exc:
        print(f"cannot connect to {_redact(args.url)}: {exc}", file=sys.stderr)
        return 2
    scratch = R.Scratch(args.keep)
    for name in ("QUEUECTL_DB", "PYTHONDONTWRITEBYTECODE"):
        ENV.pop(name, None)
    ENV["PYTHONPYCACHEPREFIX"] = scratch.new("pycache")
    rows, failures, loads = [], [], []
    began = time.monotonic()
    try:
        header = R.machine() + server_lines(pg) + [
            "bytecode: cached in a temporary PYTHONPYCACHEPREFIX, every code path run once first",
            f"mode:     {'quick' if args.quick else 'full'}"]
        print("\n".join(header) + "\n", flush=True)
        warm_up(scratch, pg)
        for number in chosen:
            name, fn = MEASURES[number]
            loads.append(os.getloadavg()[0])
            print(f"-- {number}. {name} (load {' '.join(f'{x:.1f}' for x in os.getloadavg())}) ...", flush=True)
            step = time.monotonic()
            try:
                got = fn(cfg, scratch, pg)
            except (R.BenchError, subprocess.SubprocessError, OSError, psycopg.Error) as exc:
                failures.append(f"{number}. {name}: {exc}")
                print(f"   FAILED: {exc}", flush=True)
                continue
            rows.extend(got)
            for row in got:
                print(f"   {row.measure}: SQLite {R.cell(row.sqlite, row.fmt, row.head_first)}, "
                      f"PostgreSQL {R.cell(row.pg, row.fmt, row.head_first)}", flush=True)
            print(f"   ({time.monotonic() - step:.1f} s)", flush=True)
    finally:
        try:
            pg.close()
        finally:
            scratch.close()
    print()
    print(table(rows))
    R.footer(loads, began, failures, "the backends took turns")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": header, "mode": "quick" if args.quick else "full", "loads": loads,
                       "rows": [{"measure": r.measure, "sqlite": r.sqlite, "postgres": r.pg, "ratio": r.ratio,
                                 "floor": r.floor, "target": r.target, "met": r.met, "note": r.note}
                                for r in rows], "failures": failures}, handle, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
