#!/usr/bin/env python3
"""The dashboard's benchmark: every /api/ response and the page at 1,000,000 jobs, beside
`status` measured in the same run, and the dashboard's own CPU while a headless browser watches
an idle queue.

    python bench/dashboard.py [--quick] [--keep]

Run it with the venv's Python (`.venv/bin/python bench/dashboard.py`). It shares bench/run.py's
helpers (scratch homes, building a big database through Store.insert, percentiles). Requests go
over one keep-alive connection, as a browser sends them; rounds take turns with `status`.
"""
from __future__ import annotations

import argparse
import http.client
import os
import random
import select
import subprocess
import sys
import time
from typing import NamedTuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (bench/run.py)

TARGET_MS = 50.0
TARGET_CPU = 2.0


class Config(NamedTuple):
    rows: int
    rounds: int
    watch_seconds: float


FULL = Config(rows=1_000_000, rounds=40, watch_seconds=60.0)
QUICK = Config(rows=200_000, rounds=15, watch_seconds=20.0)


def finish_some(home: str, count: int) -> tuple:
    """Run `count` claims through the Store: half completed, half dead; returns (a dead id, a log)."""
    from queuectl.home import QueueHome
    from queuectl.store.sqlite import SqliteStore as Store

    queue_home = QueueHome(home)
    store = Store.open(queue_home.db_path)
    dead = None
    try:
        for n in range(count):
            job = store.claim_next("bench", time.time())
            if n % 2:
                store.mark_completed(job, "bench", time.time())
            else:
                store.mark_dead(job, "bench", 1, "exit code 1", time.time())
                dead = job.id
        middle = store.jobs_page("pending", "", None, 1)[1]  # the page key after the first pending job
    finally:
        store.close()
    log = queue_home.log_path(dead)
    with open(log, "wb") as handle:  # a big log: the tail endpoint must stay bounded
        handle.write((b"x" * 99 + b"\n") * 20_000)
    return dead, middle


def start_dashboard(home: str) -> tuple:
    process = subprocess.Popen(bench.qctl(home, "dashboard", "--port", "0"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=bench.ENV, cwd=os.path.dirname(home))
    ready, _, _ = select.select([process.stdout], [], [], 60)
    if not ready:
        process.kill()
        raise bench.BenchError("the dashboard printed no URL within 60 s")
    url = process.stdout.readline().split(" at ", 1)[1].split()[0].rstrip("/")
    return process, url


def endpoints(dead: str, cursor: str) -> list:
    return [
        ("page /", "/"), ("page.js", "/page.js"), ("/api/session", "/api/session"),
        ("/api/overview", "/api/overview"), ("/api/workers", "/api/workers"),
        ("/api/jobs (all, newest)", "/api/jobs"), ("/api/jobs?state=pending", "/api/jobs?state=pending"),
        ("/api/jobs pending, deep page", f"/api/jobs?state=pending&after={cursor}"),
        ("/api/jobs?state=completed", "/api/jobs?state=completed"),
        ("/api/jobs?prefix=ab", "/api/jobs?prefix=ab"), ("/api/jobs?prefix=ab&state=dead", "/api/jobs?prefix=ab&state=dead"),
        ("/api/dlq", "/api/dlq"), ("/api/jobs/ID", f"/api/jobs/{dead}"), ("/api/jobs/ID/log (tail)", f"/api/jobs/{dead}/log"),
        ("/api/jobs pending of a queue", "/api/jobs?state=pending&queue=default"),
        ("/api/jobs completed of a queue", "/api/jobs?state=completed&queue=default"),
        ("/api/queues", "/api/queues"), ("/api/stats", "/api/stats"),
        ("/api/stats?since=24h&queue=default", "/api/stats?since=24h&queue=default"),
        ("/api/runs-per-minute", "/api/runs-per-minute"), ("/metrics", "/metrics"),
    ]


def measure_requests(url: str, home: str, paths: list, rounds: int) -> tuple:
    host, port = url.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    times: dict = {label: [] for label, _ in paths}
    status: list = []
    status_argv = bench.qctl(home, "status")
    cwd = os.path.dirname(home)

    def one(path: str) -> float:
        started = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise bench.BenchError(f"GET {path}: {response.status}")
        return time.perf_counter() - started

    cold = one("/api/queues")  # counts by queue, read from every job; then kept while nothing changes
    print(f"{'/api/queues, first (counts every job)':<36} {cold * 1000:>7.1f}ms  (then kept while the database is unchanged)")
    for label, path in paths:  # warm: the first request of each opens the page cache
        one(path)
    bench.run(status_argv, cwd)
    for _ in range(rounds):
        steps = [(label, path) for label, path in paths] + [("status", None)]
        random.shuffle(steps)
        for label, path in steps:
            if path is None:
                status.append(bench.timed(status_argv, cwd))
            else:
                times[label].append(one(path))
    conn.close()
    return times, status


def watched_cpu(url: str, pid: int, seconds: float) -> float:
    """% of a core the dashboard uses while headless Chromium shows the overview."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url + "/")
        time.sleep(5)  # the page is loaded and refreshing
        before, started = bench.cpu_ticks(pid), time.monotonic()
        time.sleep(seconds)
        used = (bench.cpu_ticks(pid) - before) / bench.CLK_TCK
        return 100 * used / (time.monotonic() - started)
    finally:
        driver.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200k jobs, fewer rounds, 20 s of watching")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    scratch = bench.Scratch(args.keep)
    process = None
    try:
        home = bench.fresh_home(scratch, "dashboard")
        built = bench.build_db(home, cfg.rows)
        dead, middle = finish_some(home, 1000)
        print(f"built {cfg.rows:,} jobs in {built:.1f} s; 1,000 of them finished (500 dead)", flush=True)
        from queuectl.web.api import _encode_cursor

        cursor = _encode_cursor(middle)
        process, url = start_dashboard(home)
        paths = endpoints(dead, cursor)
        times, status = measure_requests(url, home, paths, cfg.rounds)
        print(f"\n{'request (' + format(cfg.rows, ',') + ' jobs)':<36} {'p50':>9} {'p95':>9}  p95 ≤ {TARGET_MS:.0f} ms")
        met = True
        for label, samples in times.items():
            p95 = bench.percentile(samples, 95) * 1000
            met &= p95 <= TARGET_MS
            print(f"{label:<36} {bench.percentile(samples, 50) * 1000:>7.1f}ms {p95:>7.1f}ms  "
                  f"{'yes' if p95 <= TARGET_MS else 'NO'}")
        print(f"{'`queuectl status` (whole process)':<36} {bench.percentile(status, 50) * 1000:>7.1f}ms "
              f"{bench.percentile(status, 95) * 1000:>7.1f}ms  (same run, for comparison)")
        try:
            cpu = watched_cpu(url, process.pid, cfg.watch_seconds)
        except ImportError:
            print("\nwatched CPU: skipped (selenium is not installed)")
        else:
            met &= cpu <= TARGET_CPU
            print(f"\ndashboard CPU while a browser watches the overview for {cfg.watch_seconds:.0f} s: "
                  f"{cpu:.2f} % of a core (target ≤ {TARGET_CPU:.0f} %: {'yes' if cpu <= TARGET_CPU else 'NO'})")
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        return 0 if met else 1
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=20)
        scratch.close()


if __name__ == "__main__":
    sys.exit(main())
