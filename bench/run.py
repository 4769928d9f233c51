#!/usr/bin/env python3
"""queuectl benchmarks: every measure next to a baseline measured in the same run.

    python bench/run.py [--quick] [--only 1,3] [--json results.json] [--keep]

Standard library only, plus the installed queuectl. The CLI is always the console script next
to this Python (`<venv>/bin/queuectl`), every measure gets a fresh temporary queue home
(`--home`), and queuectl and its baseline take turns round by round, so that the noise of a
shared machine falls on both. See bench/README.md for what each measure means.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Callable, List, NamedTuple, Optional

QUEUECTL = os.path.join(os.path.dirname(sys.executable), "queuectl")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# What every process of the bench runs with; main() points PYTHONPYCACHEPREFIX into the scratch
# directory, so that queuectl and the baselines alike run from cached bytecode (see README).
ENV = {k: v for k, v in os.environ.items() if k != "QUEUECTL_HOME"}
NO_PYC = os.environ.get("PYTHONDONTWRITEBYTECODE")  # set in some sandboxes: then nothing is cached


class Config(NamedTuple):
    drain_jobs: int
    drain_runs: int
    one_runs: int
    bulk_jobs: int
    bulk_runs: int
    pickup_jobs: int
    idle_seconds: float
    big_rows: int
    read_runs: int
    claim_runs: int
    claims: int
    delayed_rows: int


QUICK = Config(drain_jobs=500, drain_runs=3, one_runs=10, bulk_jobs=100_000, bulk_runs=1,
               pickup_jobs=12, idle_seconds=3.0, big_rows=100_000, read_runs=5, claim_runs=5,
               claims=300, delayed_rows=20_000)
FULL = Config(drain_jobs=2000, drain_runs=7, one_runs=20, bulk_jobs=100_000, bulk_runs=5,
              pickup_jobs=40, idle_seconds=10.0, big_rows=1_000_000, read_runs=20, claim_runs=7,
              claims=500, delayed_rows=100_000)


class Row(NamedTuple):
    """One line of the table. `ratio` is queuectl / baseline unless said otherwise."""

    measure: str
    ours: List[float]
    base: Optional[List[float]]
    ratio: Optional[float]
    target: str
    met: Optional[bool]  # None: reported, no target
    fmt: Callable[[float], str]
    note: str = ""


class BenchError(Exception):
    pass


# -- helpers -------------------------------------------------------------------------------------

class Scratch:
    """Temporary directories for one run of the suite; removed at the end unless --keep."""

    def __init__(self, keep: bool) -> None:
        self.root = tempfile.mkdtemp(prefix="queuectl-bench-")
        self.keep = keep
        self._n = 0

    def new(self, label: str) -> str:
        self._n += 1
        path = os.path.join(self.root, f"{self._n:02d}-{label}")
        os.makedirs(path)
        return path

    def close(self) -> None:
        if self.keep:
            print(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def run(argv: list, cwd: str, timeout: float = 300, check: bool = True,
        env: Optional[dict] = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=cwd, env=env or ENV, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc


def timed(argv: list, cwd: str, timeout: float = 300, env: Optional[dict] = None) -> float:
    """Wall time of one whole process, start to exit (output captured, as a script would)."""
    start = time.perf_counter()
    run(argv, cwd, timeout, env=env)
    return time.perf_counter() - start


def qctl(home: str, *args: str) -> list:
    return [QUEUECTL, "--home", home, *args]


def fresh_home(scratch: Scratch, label: str) -> str:
    """A new queue home inside its own directory; commands run from that directory (never ours)."""
    return os.path.join(scratch.new(label), "home")


def counts(home: str) -> dict:
    return json.loads(run(qctl(home, "status", "--json"), os.path.dirname(home)).stdout)


def start_pool(home: str, count: int) -> tuple:
    """`worker start --detach`: (supervisor PID, [worker PIDs])."""
    out = run(qctl(home, "worker", "start", "--count", str(count), "--detach"), os.path.dirname(home)).stdout
    supervisor, workers = None, []
    for line in out.splitlines():
        kind, _, pid = line.partition(" ")
        if kind == "supervisor":
            supervisor = int(pid)
        elif kind == "worker":
            workers.append(int(pid))
    if supervisor is None or len(workers) != count:
        raise BenchError(f"unexpected output of worker start --detach: {out!r}")
    return supervisor, workers


def stop_pools(home: str) -> None:
    if os.path.isdir(home):
        run(qctl(home, "worker", "stop", "--force", "--timeout", "10"), os.path.dirname(home), check=False)


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def percentile(values: list, p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def alternate(rounds: int, ours: Callable[[], float], base: Callable[[], float]) -> tuple:
    """Run both `rounds` times, taking turns (who goes first alternates too)."""
    mine, theirs = [], []
    for n in range(rounds):
        pair = [(ours, mine), (base, theirs)]
        for fn, into in (pair if n % 2 == 0 else pair[::-1]):
            into.append(fn())
    return mine, theirs


def paired_ratio(ours: list, base: list) -> float:
    """The median of the per-round ratios: each round ran both back to back, so a slow spell of
    a shared machine cancels out within a pair rather than skewing one side's median."""
    return statistics.median(a / b for a, b in zip(ours, base))


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}/s"


def fmt_ms(x: float) -> str:
    return f"{x * 1000:.1f} ms" if abs(x) < 10 else f"{x * 1000:.0f} ms"


def fmt_s(x: float) -> str:
    return f"{x:.2f} s"


def fmt_us(x: float) -> str:
    return f"{x:.0f} µs"


def fmt_pct(x: float) -> str:
    return f"{x:.2f} %"


# -- baselines written to temporary files ---------------------------------------------------------

# Measure 2's and 6's baseline: the least a Click command that records a job can do.
MINIMAL_CLICK = textwrap.dedent('''\
    import os, sqlite3, time
    import click

    @click.command()
    @click.option("--db", required=True)
    @click.argument("command")
    def main(db, command):
        """Insert one job row and say so."""
        conn = sqlite3.connect(db, timeout=60, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS jobs (seq INTEGER PRIMARY KEY, id TEXT UNIQUE,"
                     " command TEXT, state TEXT, created_at REAL)")
        conn.execute("BEGIN IMMEDIATE")
        job_id = os.urandom(8).hex()
        conn.execute("INSERT INTO jobs (id, command, state, created_at) VALUES (?, ?, 'pending', ?)",
                     (job_id, command, time.time()))
        conn.execute("COMMIT")
        conn.close()
        click.echo(f"Enqueued job {job_id}")

    main()
''')

# Measure 3's reference: the plain way to load JSON Lines into the same schema.
PLAIN_BULK = textwrap.dedent('''\
    import json, os, sqlite3, sys, time
    db, path = sys.argv[1], sys.argv[2]
    now, cwd = time.time(), os.getcwd()
    rows = []
    with open(path) as handle:
        for line in handle:
            if line.strip():
                job = json.loads(line)
                rows.append((job.get("id") or os.urandom(8).hex(), job["command"], "pending",
                             job.get("max_retries", 3), job.get("priority", 0), None, now, cwd, now, now))
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO jobs (id, command, state, max_retries, priority, timeout, run_at,"
                     " cwd, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("UPDATE job_counts SET n = n + ? WHERE state = 'pending'", (len(rows),))
    conn.execute("COMMIT")
    print(f"Enqueued {len(rows)} jobs")
''')

IDLE_LOOP = "import time\nwhile True:\n    time.sleep(0.05)\n"


def write(path: str, text: str) -> str:
    with open(path, "w") as handle:
        handle.write(text)
    return path


def minimal_click(scratch: Scratch, env: Optional[dict] = None) -> Callable[[], float]:
    """Measure 2's baseline as a callable: one whole process, warmed up (its database exists)."""
    where = scratch.new("baseline-click")
    script = write(os.path.join(where, "minimal_click.py"), MINIMAL_CLICK)
    argv = [sys.executable, script, "--db", os.path.join(where, "base.db"), "true"]
    timed(argv, where, env=env)
    return lambda: timed(argv, where, env=env)


# -- the measures ---------------------------------------------------------------------------------

def m1_drain(cfg: Config, scratch: Scratch) -> list:
    n = cfg.drain_jobs
    where = scratch.new("drain-input")
    jobs = write(os.path.join(where, "jobs.jsonl"), "".join('{"command": "true"}\n' for _ in range(n)))

    creates, empty = [], []

    def ours() -> float:
        home = fresh_home(scratch, "drain")
        cwd = os.path.dirname(home)
        creates.append(file_create_us(os.path.join(cwd, "probe")))
        # The fixed part: the same pool on an empty queue (start-up and shutdown only).
        run(qctl(home, "status"), cwd)
        try:
            empty.append(timed(qctl(home, "worker", "start", "--count", "2", "--burst"), cwd, timeout=60))
        finally:
            stop_pools(home)
        run(qctl(home, "enqueue", "--file", jobs), cwd)
        try:
            seconds = timed(qctl(home, "worker", "start", "--count", "2", "--burst"), cwd, timeout=600)
        finally:
            stop_pools(home)
        done = counts(home)
        logs = len([f for f in os.listdir(os.path.join(home, "logs"))])
        if done["completed"] != n or logs != n:
            raise BenchError(f"drain: {done['completed']} of {n} completed, {logs} logs")
        return n / seconds

    def base() -> float:
        return n / timed(["sh", "-c", f"seq {n} | xargs -P2 -n1 sh -c true"], where)

    mine, theirs = alternate(cfg.drain_runs, ours, base)
    ratio = paired_ratio(mine, theirs)
    steady = [n / (n / rate - fixed) for rate, fixed in zip(mine, empty)]
    return [
        Row(f"1. drain {n:,} `true` jobs, 2 workers (jobs/s)", mine, theirs, ratio,
            "≥ 0.60× (aim 0.75×)", ratio >= 0.60, fmt_rate,
            "baseline: seq | xargs -P2 -n1 sh -c true; creating one empty file (each job's log) "
            f"cost {statistics.median(creates):.0f} µs (median before each run)"),
        Row("1'. the same pool on an empty queue (start-up + shutdown)", empty, None, None, "(report)",
            None, fmt_ms),
        Row("1''. drain rate without that fixed part (jobs/s)", steady, theirs, paired_ratio(steady, theirs),
            "(report)", None, fmt_rate),
    ]


def m2_enqueue_one(cfg: Config, scratch: Scratch) -> list:
    home = fresh_home(scratch, "enqueue-one")
    cwd = os.path.dirname(home)
    run(qctl(home, "enqueue", "true"), cwd)  # creates the home and database: not what we time
    base = minimal_click(scratch)
    mine, theirs = alternate(cfg.one_runs, lambda: timed(qctl(home, "enqueue", "true"), cwd), base)
    ratio = paired_ratio(mine, theirs)
    rows = [Row("2. one `enqueue \"true\"` (whole process)", mine, theirs, ratio, "≤ 1.25×",
                ratio <= 1.25, fmt_ms, "baseline: minimal Click command inserting one row")]
    if NO_PYC:
        # As this environment runs it: no bytecode written, so queuectl's own modules are
        # compiled from source at every call (click's .pyc came with pip; the script is tiny).
        raw = {k: v for k, v in ENV.items() if k != "PYTHONPYCACHEPREFIX"}
        raw["PYTHONDONTWRITEBYTECODE"] = NO_PYC
        base = minimal_click(scratch, raw)
        mine, theirs = alternate(max(5, cfg.one_runs // 2),
                                 lambda: timed(qctl(home, "enqueue", "true"), cwd, env=raw), base)
        ratio = paired_ratio(mine, theirs)
        rows.append(Row("2'. the same without .pyc (PYTHONDONTWRITEBYTECODE=1, as set here)", mine, theirs,
                        ratio, "(report)", None, fmt_ms,
                        "queuectl's modules compiled from source at every call: an editable install "
                        "in an environment that never writes bytecode"))
    return rows


def m3_bulk(cfg: Config, scratch: Scratch) -> list:
    from queuectl.store.sqlite import MIGRATIONS

    n = cfg.bulk_jobs
    where = scratch.new("bulk-input")
    script = write(os.path.join(where, "plain_bulk.py"), PLAIN_BULK)
    variants = [
        ("generated ids", "plain.jsonl", lambda i: f'{{"command": "echo {i}"}}\n'),
        ("with id, priority, max_retries", "full.jsonl",
         lambda i: f'{{"id": "job-{i:07d}", "command": "echo {i}", "priority": {i % 3}, "max_retries": 2}}\n'),
    ]
    rows = []
    for label, name, line in variants[:1] if cfg is QUICK else variants:
        path = write(os.path.join(where, name), "".join(line(i) for i in range(n)))

        def ours() -> float:
            home = fresh_home(scratch, "bulk")
            run(qctl(home, "status"), os.path.dirname(home))  # the home and database exist already
            seconds = timed(qctl(home, "enqueue", "--file", path), os.path.dirname(home))
            if counts(home)["pending"] != n:
                raise BenchError("bulk enqueue: wrong pending count")
            return seconds

        def base() -> float:
            there = scratch.new("bulk-baseline")
            db = os.path.join(there, "base.db")
            conn = sqlite3.connect(db, isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(MIGRATIONS[0])
            conn.close()
            return timed([sys.executable, script, db, path], there)

        mine, theirs = alternate(cfg.bulk_runs, ours, base)
        median = statistics.median(mine)
        rows.append(Row(f"3. enqueue --file {n:,} jobs, {label} (s)", mine, theirs,
                        paired_ratio(mine, theirs), "≤ 2 s", median <= 2.0, fmt_s,
                        "baseline (reference only): json.loads per line + executemany, same schema"))
    return rows


def _read_stamp(path: str, timeout: float = 15.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as handle:
                text = handle.read()
            if text.endswith("\n"):
                return float(text)
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    raise BenchError(f"job did not start within {timeout}s (no {path})")


def m4_pickup(cfg: Config, scratch: Scratch) -> list:
    home = fresh_home(scratch, "pickup")
    cwd = os.path.dirname(home)
    stamps = scratch.new("pickup-stamps")
    run(qctl(home, "status"), cwd)
    from_return, from_call, floor = [], [], []
    start_pool(home, 1)
    try:
        time.sleep(1.0)
        for i in range(cfg.pickup_jobs):
            path = os.path.join(stamps, f"q{i}")
            before = time.time()
            run(qctl(home, "enqueue", f"date +%s.%N > {path}"), cwd)
            after = time.time()
            started = _read_stamp(path)
            from_call.append(started - before)
            from_return.append(started - after)
            # The floor: the same command spawned directly, no queue in between.
            path = os.path.join(stamps, f"b{i}")
            before = time.time()
            subprocess.run(["/bin/sh", "-c", f"date +%s.%N > {path}"], cwd=cwd, check=True)
            floor.append(_read_stamp(path) - before)
            time.sleep(random.uniform(0.1, 0.3))  # the worker idles again, at a random phase
    finally:
        stop_pools(home)
    p50, p95 = percentile(from_return, 50), percentile(from_return, 95)
    note = "baseline (floor): the job command spawned directly; value is p50/p95 of one sample set (min–max)"
    f50, f95 = percentile(floor, 50), percentile(floor, 95)
    return [
        Row(f"4a. pickup p50, from enqueue's return ({len(from_return)} jobs)", [p50, *from_return],
            [f50, *floor], None, "≤ 100 ms", p50 <= 0.100, fmt_ms, note),
        Row("4b. pickup p95, from enqueue's return", [p95, *from_return], [f95, *floor], None,
            "≤ 250 ms", p95 <= 0.250, fmt_ms),
        Row("4c. pickup p50, from before the enqueue call", [percentile(from_call, 50), *from_call],
            [f50, *floor], None, "(report)", None, fmt_ms),
        Row("4d. pickup p95, from before the enqueue call", [percentile(from_call, 95), *from_call],
            [f95, *floor], None, "(report)", None, fmt_ms),
    ]


def _idle_cpu(home: str, seconds: float) -> tuple:
    """CPU (% of a core) of a detached 2-worker pool's processes and of a sleep-loop baseline,
    sampled over the same window: (supervisor %, [worker %], baseline %)."""
    cwd = os.path.dirname(home)
    loop = None
    supervisor, workers = start_pool(home, 2)
    try:
        loop = subprocess.Popen([sys.executable, "-c", IDLE_LOOP], cwd=cwd, env=ENV)
        time.sleep(1.5)  # past start-up
        pids = [supervisor, *workers, loop.pid]
        first = {pid: cpu_ticks(pid) for pid in pids}
        began = time.monotonic()
        time.sleep(seconds)
        last = {pid: cpu_ticks(pid) for pid in pids}
        elapsed = time.monotonic() - began
    finally:
        stop_pools(home)
        if loop is not None:
            loop.kill()
            loop.wait()
    pct = {pid: (last[pid] - first[pid]) / CLK_TCK / elapsed * 100 for pid in pids}
    return pct[supervisor], [pct[pid] for pid in workers], pct[loop.pid]


def m5_idle_cpu(cfg: Config, scratch: Scratch) -> list:
    home = fresh_home(scratch, "idle")
    run(qctl(home, "status"), os.path.dirname(home))
    supervisor, workers, base = _idle_cpu(home, cfg.idle_seconds)
    resolution = 100 / CLK_TCK / cfg.idle_seconds
    note = (f"{cfg.idle_seconds:g} s window, utime+stime at {CLK_TCK} Hz (resolution {resolution:.2f} %); "
            "baseline: python loop of time.sleep(0.05)")
    # Idle too: nothing is due, but many jobs wait for tomorrow (delayed jobs, or retries).
    later = fresh_home(scratch, "idle-delayed")
    build_db(later, cfg.delayed_rows, delay=86400)
    _, waiting, base2 = _idle_cpu(later, cfg.idle_seconds)
    return [
        Row("5a. idle worker CPU, empty queue (% of a core; 2 workers)", workers, [base], None, "≤ 1 %",
            max(workers) <= 1.0, fmt_pct, note),
        Row("5b. idle supervisor CPU (% of a core)", [supervisor], [base], None, "≤ 1 %",
            supervisor <= 1.0, fmt_pct),
        Row(f"5c. (extra) idle worker CPU, {cfg.delayed_rows:,} jobs due tomorrow", waiting, [base2], None,
            "≤ 1 %", max(waiting) <= 1.0, fmt_pct, "nothing is due, so the workers are idle as in 5a"),
    ]


def build_db(home: str, rows: int, delay: float = 0.0, priority: int = 0) -> float:
    """`rows` pending jobs through queuectl's own Store.insert (indexes and counts as enqueue
    makes them), in batches; returns seconds taken."""
    from queuectl.home import QueueHome
    from queuectl.models import NewJob
    from queuectl.store.sqlite import SqliteStore as Store

    started = time.perf_counter()
    queue_home = QueueHome(home).ensure()
    store = Store.open(queue_home.db_path)
    cwd = os.path.dirname(home)
    try:
        for begin in range(0, rows, 100_000):
            now = time.time()
            batch = [NewJob(None, f"echo {i}", 3, priority, None, now + delay, cwd)
                     for i in range(begin, min(rows, begin + 100_000))]
            store.insert(batch, now)
    finally:
        store.close()  # the last connection out checkpoints the WAL into queue.db
    return time.perf_counter() - started


def m6_read_big(cfg: Config, scratch: Scratch, big_db: dict) -> list:
    home = fresh_home(scratch, "read-big")
    cwd = os.path.dirname(home)
    seconds = build_db(home, cfg.big_rows)
    big_db["path"] = os.path.join(home, "queue.db")
    print(f"   (built {cfg.big_rows:,} jobs via Store.insert in {seconds:.1f} s)", flush=True)
    if counts(home)["pending"] != cfg.big_rows:
        raise BenchError("the big database has the wrong pending count")
    status_argv = qctl(home, "status")
    list_argv = qctl(home, "list", "--state", "pending", "--limit", "20")
    run(status_argv, cwd)
    run(list_argv, cwd)
    base = minimal_click(scratch)
    st, ls, bs = [], [], []
    for n in range(cfg.read_runs):
        steps = [(lambda: timed(status_argv, cwd), st), (lambda: timed(list_argv, cwd), ls), (base, bs)]
        random.shuffle(steps)
        for fn, into in steps:
            into.append(fn())
    rows = []
    for label, mine in (("status", st), ("list --state pending --limit 20", ls)):
        ratio = paired_ratio(mine, bs)
        rows.append(Row(f"6. `{label}`, {cfg.big_rows:,} jobs", mine, bs, ratio, "≤ 2×",
                        ratio <= 2.0, fmt_ms, "baseline: measure 2's (minimal Click command)"))
    return rows


def _claim_cost(db: str, claims: int, queues: Optional[list] = None, finish: bool = False) -> float:
    """Per-claim seconds of Store.claim_next, as a worker opens the store. With `finish`, each
    claimed job is completed between two claims, untimed, as a worker would: what is processing
    stays what a pool runs at once (a limit is counted over it)."""
    from queuectl.store.sqlite import SqliteStore as Store

    store = Store.open(db, durable=False)
    try:
        for _ in range(10):  # warm the page cache and statement cache
            store.claim_next("bench-worker", time.time(), queues)
        spent = 0.0
        for _ in range(claims):
            started = time.perf_counter()
            job = store.claim_next("bench-worker", time.time(), queues)
            spent += time.perf_counter() - started
            if job is None:
                raise BenchError("claim_next found no job")
            if finish:
                store.mark_completed(job, "bench-worker", time.time())
        return spent / claims
    finally:
        store.close()


def m7_claim(cfg: Config, scratch: Scratch, big_db: dict) -> list:
    big_home = fresh_home(scratch, "claim-big")
    if big_db.get("path"):
        os.makedirs(big_home)
        conn = sqlite3.connect(big_db["path"])
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in queue.db before the copy
        conn.close()
        shutil.copyfile(big_db["path"], os.path.join(big_home, "queue.db"))
    else:
        build_db(big_home, cfg.big_rows)
    small_rows = 1000
    if cfg.claims + 10 > small_rows:
        raise BenchError("more claims than small rows")

    def small() -> float:
        home = fresh_home(scratch, "claim-small")
        build_db(home, small_rows)
        return _claim_cost(os.path.join(home, "queue.db"), cfg.claims) * 1e6

    big = lambda: _claim_cost(os.path.join(big_home, "queue.db"), cfg.claims) * 1e6  # noqa: E731
    mine, theirs = alternate(cfg.claim_runs, big, small)
    ratio = paired_ratio(mine, theirs)
    rows = [Row(f"7. Store.claim_next at {cfg.big_rows:,} rows (µs/claim)", mine, theirs, ratio,
                "≤ 1.20× (flat)", ratio <= 1.20, fmt_us,
                f"baseline: the same at {small_rows:,} rows; {cfg.claims} claims per run")]
    # Extra: 1,000 due jobs behind 10,000 delayed jobs of a more urgent priority.
    ahead = 10_000
    mixed = fresh_home(scratch, "claim-delayed")
    build_db(mixed, ahead, delay=86400, priority=-1)
    build_db(mixed, small_rows)
    mixed_db = os.path.join(mixed, "queue.db")
    costs = [_claim_cost(mixed_db, 100) * 1e6 for _ in range(3)]
    ratio = statistics.median(costs) / statistics.median(theirs)
    rows.append(Row(f"7'. (extra) claim_next, {ahead:,} delayed jobs of priority -1 ahead", costs, theirs, ratio,
                    "≤ 1.20× (flat)", ratio <= 1.20, fmt_us, "baseline: 7's at 1,000 rows"))
    return rows


def _steer_db(home: str, jobs: list, limits: Optional[dict] = None) -> str:
    """A queue home holding `jobs` (NewJobs, inserted in batches as enqueue does) and limits."""
    from queuectl.home import QueueHome
    from queuectl.store.sqlite import SqliteStore as Store

    queue_home = QueueHome(home).ensure()
    store = Store.open(queue_home.db_path)
    try:
        for begin in range(0, len(jobs), 100_000):
            store.insert(jobs[begin:begin + 100_000], time.time())
        for name, limit in (limits or {}).items():
            store.set_limit(name, limit)
    finally:
        store.close()
    return queue_home.db_path


def m8_steer_claim(cfg: Config, scratch: Scratch) -> list:
    """The claim with steering in play, each beside the plain claim (1,000 due jobs, one queue)."""
    from queuectl.models import NewJob

    now, cwd, due = time.time(), scratch.new("steer-cwd"), 1000
    waiting = cfg.big_rows // 10  # 100,000 in full mode
    enough = cfg.claim_runs * (cfg.claims + 10) + 10  # each measured db serves every run's claims

    def plain(job_id: str, queue: str = "default", **fields) -> NewJob:
        return NewJob(job_id, "true", 3, fields.get("priority", 0), None, fields.get("run_at", now), cwd, queue,
                      tuple(fields.get("after", ())))

    def small() -> float:
        db = _steer_db(fresh_home(scratch, "steer-plain"), [plain(f"j{i}") for i in range(due)])
        return _claim_cost(db, cfg.claims) * 1e6

    blocked_db = _steer_db(fresh_home(scratch, "steer-blocked"), [
        plain("root", run_at=now + 86400), *(plain(f"w{i}", after=["root"], priority=-1) for i in range(waiting)),
        *(plain(f"d{i}") for i in range(enough))])
    queues_db = _steer_db(fresh_home(scratch, "steer-queues"), [
        plain(f"q{q}-{i}", f"q{q:02}", priority=-1 if q != 37 else 0) for q in range(50)
        for i in range(enough if q == 37 else due)])
    full_db = _steer_db(fresh_home(scratch, "steer-full"), [
        *(plain(f"f{i}", "full", priority=-1) for i in range(10 * due)), *(plain(f"free{i}", "free") for i in range(enough))],
        limits={"full": 1})
    _claim_cost(full_db, 1)  # one full job processing: the queue is at its limit from now on

    def full() -> float:
        # Each claimed job is completed (untimed), as by a one-worker pool: a limit is counted
        # over the processing jobs, which a real pool keeps to its number of workers.
        return _claim_cost(full_db, cfg.claims, finish=True) * 1e6
    cases = [
        (f"8a. claim_next, {waiting:,} jobs waiting on an unfinished parent (µs/claim)",
         lambda: _claim_cost(blocked_db, cfg.claims) * 1e6, "the waiting jobs have a better priority"),
        ("8b. claim_next, 50 queues, the worker serves one (µs/claim)",
         lambda: _claim_cost(queues_db, cfg.claims, ["q37"]) * 1e6, "49 x 1,000 jobs of better priority elsewhere"),
        ("8c. claim_next, a full limited queue ahead of a free one (µs/claim)",
         full, f"{10 * due:,} jobs of better priority in the full queue"),
    ]
    rows = []
    for label, ours, note in cases:
        mine, theirs = alternate(cfg.claim_runs, ours, small)
        ratio = paired_ratio(mine, theirs)
        rows.append(Row(label, mine, theirs, ratio, "≤ 1.20×", ratio <= 1.20, fmt_us,
                        f"baseline: the plain claim, {due:,} due jobs in one queue; {note}"))
    return rows


# -- run history: stats and metrics at a million runs, the drain's cost, the database's size -------

def build_runs(home: str, runs: int, span: float, tail: str = "ok\n") -> float:
    """`runs` run records ending over the last `span` seconds, with their aggregates, in bulk SQL
    (as the workers would have left them: uniform durations 0-100 s, waits 0-10 s, 1 in 10
    failed, over 50 commands); returns seconds taken."""
    from queuectl.home import QueueHome
    from queuectl.store.sqlite import TOTAL_HOUR, SqliteStore as Store
    from queuectl.stats import EDGES

    started = time.perf_counter()
    db = QueueHome(home).ensure().db_path
    Store.open(db).close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("CREATE TEMP TABLE edges (i INTEGER PRIMARY KEY, edge REAL UNIQUE)")
    conn.executemany("INSERT INTO edges VALUES (?, ?)", enumerate(EDGES))
    conn.execute(
        "CREATE TEMP TABLE gen AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :runs)"
        " SELECT i, :now - :span * i / :runs AS ended, (abs(random()) % 100000) / 1000.0 AS took,"
        " (abs(random()) % 10000) / 1000.0 AS waited,"
        " CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'completed' END AS outcome FROM n",
        {"runs": runs, "now": time.time(), "span": span})
    conn.execute(
        "INSERT INTO runs (job_seq, attempt, worker, host, started_at, ended_at, outcome, exit_code, error,"
        " output_tail) SELECT i, 1, 'bench-worker', 'bench', ended - took, ended, outcome,"
        " CASE outcome WHEN 'failed' THEN 1 ELSE 0 END,"
        " CASE outcome WHEN 'failed' THEN 'exit code 1: it failed' END, ? FROM gen", (tail,))
    seek = "coalesce((SELECT i FROM edges WHERE edge >= {} ORDER BY edge LIMIT 1), {})".format
    # Each run counted three times, as record_run counts it: its minute, its hour, the totals.
    conn.execute(
        f"CREATE TEMP TABLE b AS SELECT CAST(ended / 3600 AS INTEGER) AS hour,"
        f" CAST(ended / 60 AS INTEGER) % 60 AS minute, outcome, took, waited, i % 50 AS command,"
        f" {seek('took', len(EDGES))} AS db, {seek('waited', len(EDGES))} AS wb FROM gen")
    conn.execute("INSERT INTO b SELECT hour, 60, outcome, took, waited, command, db, wb FROM b")
    conn.execute(f"INSERT INTO b SELECT {TOTAL_HOUR}, 60, outcome, took, waited, command, db, wb FROM b"
                 " WHERE minute = 60")
    for column in ("db", "wb"):
        conn.execute(
            f"CREATE TEMP TABLE h{column} AS SELECT hour, minute, outcome,"
            f" json_group_object(CAST({column} AS TEXT), n) AS j FROM (SELECT hour, minute, outcome, {column},"
            f" count(*) AS n FROM b GROUP BY hour, minute, outcome, {column}) GROUP BY hour, minute, outcome")
    conn.execute(
        "INSERT INTO run_counts SELECT a.hour, a.minute, 'default', a.outcome, a.runs, a.s, a.m, a.w, d.j, w.j"
        " FROM (SELECT hour, minute, outcome, count(*) AS runs, sum(took) AS s, max(took) AS m,"
        "       max(waited) AS w FROM b GROUP BY hour, minute, outcome) AS a"
        " JOIN hdb AS d USING (hour, minute, outcome) JOIN hwb AS w USING (hour, minute, outcome)")
    conn.execute(
        f"INSERT INTO failure_counts SELECT hour, minute, 'default', command, count(*),"
        f" 'failing command ' || command FROM b WHERE outcome = 'failed' AND hour < {TOTAL_HOUR}"
        " GROUP BY hour, minute, command")
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - started


def m10_history(cfg: Config, scratch: Scratch) -> list:
    n = cfg.big_rows
    rows = []
    for label, span in (("in the last hour", 3300.0), ("over 30 days", 30 * 86400.0)):
        home = fresh_home(scratch, "history")
        cwd = os.path.dirname(home)
        build_db(home, 100_000)  # jobs waiting, so that status and the `now` figures have work
        empty = os.path.getsize(os.path.join(home, "queue.db"))
        seconds = build_runs(home, n, span)
        grown = os.path.getsize(os.path.join(home, "queue.db")) - empty
        print(f"   (built {n:,} runs {label} in {seconds:.1f} s; the database grew {grown / 1e6:.0f} MB)", flush=True)
        total = json.loads(run(qctl(home, "stats", "--since", "31d", "--json"), cwd).stdout)["runs"]["total"]
        if total != n:
            raise BenchError(f"stats counts {total} runs, not {n}")
        argvs = {"status": qctl(home, "status"), "stats": qctl(home, "stats"),
                 "stats --json": qctl(home, "stats", "--json"), "metrics": qctl(home, "metrics")}
        if span > 86400:
            argvs = {"status": argvs["status"], "stats --since 30d": qctl(home, "stats", "--since", "30d")}
        for argv in argvs.values():
            run(argv, cwd)
        times: dict = {name: [] for name in argvs}
        for _ in range(cfg.read_runs):
            order = list(argvs)
            random.shuffle(order)
            for name in order:
                times[name].append(timed(argvs[name], cwd))
        for name in argvs:
            if name == "status":
                continue
            ratio = paired_ratio(times[name], times["status"])
            rows.append(Row(f"10. `{name}`, {n:,} runs {label}", times[name], times["status"], ratio,
                            "≤ 2×", ratio <= 2.0, fmt_ms,
                            "baseline: `status` on the same database (100,000 jobs waiting)"))
        if span < 86400:
            rows.append(Row(f"10'. database growth per {n:,} runs (MB; 3-byte output tails)", [grown / 1e6], None,
                            None, "(report)", None, lambda x: f"{x:,.0f} MB"))
    # The other end: every run keeping a full 4 KiB tail (measured on 20,000, scaled to a million).
    home = fresh_home(scratch, "history-tails")
    build_db(home, 1000)
    before = os.path.getsize(os.path.join(home, "queue.db"))
    build_runs(home, 20_000, 3000.0, tail="x" * 4095 + "\n")
    per_million = (os.path.getsize(os.path.join(home, "queue.db")) - before) / 20_000 * 1e6
    rows.append(Row("10''. database growth per 1,000,000 runs with 4 KiB output tails (MB)", [per_million / 1e6],
                    None, None, "(report)", None, lambda x: f"{x:,.0f} MB", "measured on 20,000 runs, scaled"))
    return rows


BASE_SRC: list = []  # --base-src: a checkout of queuectl without run history, for measure 9

# Measure 9'': a worker's database work per job, in one process, without running anything: record
# the outcome and claim the next job in one transaction, as Worker._record does.
RECORD_LOOP = textwrap.dedent('''\
    import os, sys, time
    from queuectl.models import NewJob, Outcome
    from queuectl.store.sqlite import SqliteStore as Store
    from queuectl.worker import record_outcome
    db, n = sys.argv[1], int(sys.argv[2])
    store = Store.open(db, durable=False)
    now = time.time()
    store.insert([NewJob(None, "true", 3, 0, None, now, "/") for _ in range(n + 1)], now)
    settings = {"backoff_base": 2, "backoff_max": 3600}
    job = store.claim_next("w", time.time())
    started = time.process_time()  # CPU time: a shared machine's load leaves it nearly alone
    for _ in range(n):
        with store.transaction():
            record_outcome(store, settings, job, "w", Outcome(0, None), time.time())
            job = store.claim_next("w", time.time())
    print((time.process_time() - started) / n * 1e6)
''')


def m9_drain_recording(cfg: Config, scratch: Scratch) -> list:
    if not BASE_SRC:
        raise BenchError("measure 9 needs --base-src PATH: a checkout to compare with "
                         "(git worktree add /tmp/base main)")
    import queuectl

    ours_src = os.path.dirname(os.path.dirname(os.path.abspath(queuectl.__file__)))
    n = cfg.drain_jobs
    where = scratch.new("drain9-input")
    jobs = write(os.path.join(where, "jobs.jsonl"), "".join('{"command": "true"}\n' for _ in range(n)))

    import resource

    cpu: dict = {}

    def drain(src: str) -> Callable[[], float]:
        env = {**ENV, "PYTHONPATH": src}

        def once() -> float:
            home = fresh_home(scratch, "drain9")
            cwd = os.path.dirname(home)
            argv = lambda *args: [sys.executable, "-m", "queuectl", "--home", home, *args]  # noqa: E731
            run(argv("enqueue", "--file", jobs), cwd, env=env)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            seconds = timed(argv("worker", "start", "--count", "2", "--burst"), cwd, timeout=600, env=env)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            # CPU of the whole pool and its jobs (every descendant is reaped): a shared machine's
            # load lengthens the wall time, much less the CPU each job costs.
            used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            cpu.setdefault(src, []).append(used / n * 1e6)
            done = json.loads(run(argv("status", "--json"), cwd, env=env).stdout)["completed"]
            if done != n:
                raise BenchError(f"drain ({src}): {done} of {n} completed")
            return n / seconds
        return once

    mine, theirs = alternate(cfg.drain_runs, drain(ours_src), drain(BASE_SRC[0]))
    ratio = paired_ratio(mine, theirs)
    script = write(os.path.join(where, "record_loop.py"), RECORD_LOOP)

    def record(src: str) -> Callable[[], float]:
        def once() -> float:
            there = scratch.new("record9")
            out = run([sys.executable, script, os.path.join(there, "queue.db"), str(n)], there,
                      env={**ENV, "PYTHONPATH": src}).stdout
            return float(out)
        return once

    rec_ours, rec_base = alternate(cfg.drain_runs, record(ours_src), record(BASE_SRC[0]))
    ours_cpu, base_cpu = cpu[ours_src], cpu[BASE_SRC[0]]
    cpu_ratio = paired_ratio(ours_cpu, base_cpu)
    return [Row(f"9. drain {n:,} `true` jobs, 2 workers, this checkout vs --base-src (jobs/s)", mine, theirs, ratio,
                "≥ 0.95×", ratio >= 0.95, fmt_rate, f"baseline: the same drain by {BASE_SRC[0]} (no run history)"),
            Row("9'. CPU per job of that drain (pool, workers and the jobs' shells)", ours_cpu, base_cpu,
                cpu_ratio, "≤ 1.05×", cpu_ratio <= 1.05, fmt_us),
            Row("9''. (extra) record + claim per job, in one process, no run (µs of CPU)", rec_ours, rec_base,
                paired_ratio(rec_ours, rec_base), "(report)", None, fmt_us,
                "the database work Worker._record does per job, without the run itself")]


def warm_up(scratch: Scratch) -> None:
    """Run each code path once, so that its bytecode is cached before anything is timed."""
    home = fresh_home(scratch, "warm-up")
    cwd = os.path.dirname(home)
    run(qctl(home, "enqueue", "true"), cwd)
    run(qctl(home, "list", "--state", "pending"), cwd)
    run(qctl(home, "status"), cwd)
    try:
        run(qctl(home, "worker", "start", "--burst"), cwd, timeout=60)
        run(qctl(home, "stats"), cwd)
        run(qctl(home, "metrics"), cwd)
        start_pool(home, 1)
    finally:
        stop_pools(home)


# -- the report -----------------------------------------------------------------------------------

def machine() -> list:
    model = "?"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    except OSError:
        nproc = str(len(os.sched_getaffinity(0)))
    import queuectl

    repo = os.path.dirname(os.path.dirname(os.path.abspath(queuectl.__file__)))
    git = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "queuectl"],
                           capture_output=True, text=True)
    revision = git.stdout.strip() or "?"
    if dirty.stdout.strip():
        revision += " + uncommitted changes in " + ", ".join(
            line[3:] for line in dirty.stdout.splitlines())
    return [
        f"date:     {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"machine:  nproc {nproc}, {model}, {platform.system()} {platform.release()}",
        f"python:   {platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        f"sqlite:   {sqlite3.sqlite_version}",
        f"speed:    {calibrate()} (to compare machines)",
        f"queuectl: {QUEUECTL} (source {repo}, {revision})",
        f"load:     {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min) at start",
    ]


def calibrate() -> str:
    """Two fixed pieces of work, so that absolute numbers can be compared across machines."""
    loops, inserts = [], []
    for _ in range(3):  # the best of three: the machine may be shared
        started = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        loops.append(time.perf_counter() - started)
        conn = sqlite3.connect(":memory:")
        conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)")
        started = time.perf_counter()
        conn.executemany("INSERT INTO t (b) VALUES (?)", (("x",) for _ in range(100_000)))
        inserts.append(time.perf_counter() - started)
        conn.close()
    return (f"pure-Python loop of 1M additions {min(loops) * 1000:.0f} ms; "
            f"SQLite :memory: 100k single-row inserts {min(inserts) * 1000:.0f} ms (best of 3)")


def file_create_us(directory: str, files: int = 300) -> float:
    """Microseconds to create one empty file, as a worker creates each job's log. On ext4 without
    a journal this grows tenfold for a minute after many files were deleted nearby."""
    os.makedirs(directory, exist_ok=True)
    started = time.perf_counter()
    for i in range(files):
        os.close(os.open(os.path.join(directory, f"{i:016x}.log"), os.O_WRONLY | os.O_CREAT, 0o600))
    return (time.perf_counter() - started) / files * 1e6


def cell(values: Optional[list], fmt: Callable[[float], str], head_first: bool = False) -> str:
    """`median (min–max)`; for percentile rows the first value is the statistic itself."""
    if not values:
        return "—"
    if head_first:
        head, rest = values[0], values[1:]
    else:
        head, rest = statistics.median(values), values
    if len(rest) == 1:
        return fmt(head)
    return f"{fmt(head)} ({fmt(min(rest))}–{fmt(max(rest))})"


def table(rows: list) -> str:
    header = ["measure", "queuectl median (min–max)", "baseline median (min–max)", "ratio", "target", "met"]
    lines = []
    for row in rows:
        head_first = row.measure.startswith("4")
        lines.append([
            row.measure,
            cell(row.ours, row.fmt, head_first),
            cell(row.base, row.fmt, head_first),
            "—" if row.ratio is None else f"{row.ratio:.2f}×",
            row.target,
            {True: "yes", False: "NO", None: "—"}[row.met],
        ])
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths)) + " |" for line in lines]
    notes = [f"  {row.measure.split(' ')[0]} {row.note}" for row in rows if row.note]
    return "\n".join(out + ["", "notes:"] + notes)


MEASURES = {
    1: ("drain", m1_drain),
    2: ("one enqueue", m2_enqueue_one),
    3: ("bulk enqueue", m3_bulk),
    4: ("pickup latency", m4_pickup),
    5: ("idle CPU", m5_idle_cpu),
    6: ("status/list at size", m6_read_big),
    7: ("claim cost at size", m7_claim),
    8: ("claim cost with steering", m8_steer_claim),
    9: ("drain against another checkout", m9_drain_recording),
    10: ("stats and metrics at a million runs", m10_history),
}


def footer(loads: list, began: float, failures: list, turns: str) -> None:
    """The lines after the table: the load average through the run (the end's appended to
    `loads`), a warning if the machine was busy (`turns`: why ratios suffer less), failures."""
    loads.append(os.getloadavg()[0])
    print(f"\n1-minute load average before the measures: {' '.join(f'{x:.1f}' for x in loads[:-1])}; "
          f"at the end {loads[-1]:.1f}; total {time.monotonic() - began:.0f} s")
    if max(loads) > (os.cpu_count() or 1):
        print(f"warning: the machine was busy (load above its core count): absolute numbers suffer; "
              f"ratios less so, since {turns}")
    if failures:
        print("\nfailed measures:\n  " + "\n  ".join(failures))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer runs (under a minute)")
    parser.add_argument("--only", help="comma-separated measure numbers, e.g. 1,4")
    parser.add_argument("--json", metavar="PATH", help="also write every sample to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument("--base-src", metavar="PATH", help="measure 9's baseline: a checkout without run history")
    args = parser.parse_args()
    if args.base_src:
        BASE_SRC.append(os.path.abspath(args.base_src))
    if not os.access(QUEUECTL, os.X_OK):
        print(f"no queuectl console script at {QUEUECTL}: install queuectl into this Python's venv",
              file=sys.stderr)
        return 2
    cfg = QUICK if args.quick else FULL
    chosen = (sorted(int(x) for x in args.only.split(",")) if args.only
              else sorted(m for m in MEASURES if m != 9 or BASE_SRC))
    scratch = Scratch(args.keep)
    ENV.pop("PYTHONDONTWRITEBYTECODE", None)
    ENV["PYTHONPYCACHEPREFIX"] = scratch.new("pycache")
    create = file_create_us(scratch.new("probe"))
    waited = 0
    while create > 80 and waited < 70 and not args.quick:
        # ext4 without a journal skips inodes freed within the last minute, one by one: right
        # after many deletions (a previous run's cleanup), every log file costs 10x more.
        time.sleep(10)
        waited += 10
        create = file_create_us(scratch.new("probe"))
    header = machine() + [
        f"files:    creating an empty file in {scratch.root}: {create:.0f} µs"
        + (f" (after waiting {waited} s for recent deletions to age)" if waited else ""),
        "bytecode: cached in a temporary PYTHONPYCACHEPREFIX for queuectl and baselines alike"
        + (f" (this environment sets PYTHONDONTWRITEBYTECODE={NO_PYC}: see 2')" if NO_PYC else ""),
        f"mode:     {'quick' if args.quick else 'full'}",
    ]
    print("\n".join(header) + "\n", flush=True)
    rows, failures, big_db, loads = [], [], {}, []
    began = time.monotonic()
    try:
        warm_up(scratch)
        for number in chosen:
            name, fn = MEASURES[number]
            load = " ".join(f"{x:.1f}" for x in os.getloadavg())
            loads.append(os.getloadavg()[0])
            print(f"-- {number}. {name} (load {load}) ...", flush=True)
            step = time.monotonic()
            try:
                extra = (big_db,) if number in (6, 7) else ()
                got = fn(cfg, scratch, *extra)
            except (BenchError, subprocess.SubprocessError, OSError) as exc:
                failures.append(f"{number}. {name}: {exc}")
                print(f"   FAILED: {exc}", flush=True)
                continue
            rows.extend(got)
            for row in got:
                print(f"   {row.measure}: {cell(row.ours, row.fmt, row.measure.startswith('4'))}"
                      f" vs {cell(row.base, row.fmt, row.measure.startswith('4'))}", flush=True)
            print(f"   ({time.monotonic() - step:.1f} s)", flush=True)
    finally:
        scratch.close()
    print()
    print(table(rows))
    footer(loads, began, failures, "each baseline ran in turn with queuectl")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": header, "mode": "quick" if args.quick else "full", "loads": loads,
                       "rows": [{"measure": r.measure, "queuectl": r.ours, "baseline": r.base,
                                 "ratio": r.ratio, "target": r.target, "met": r.met, "note": r.note}
                                for r in rows], "failures": failures}, handle, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
