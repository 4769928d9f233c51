#!/usr/bin/env python3
"""Take docs/dashboard.png: the overview of a real queue (a pool running, jobs done, dead and
waiting, queues paused and limited, an hour of run history), shown by `queuectl dashboard` in
headless Chromium.

    .venv/bin/python scripts/dashboard_screenshot.py [OUTPUT.png]

Needs selenium (the test extra) and Debian's chromium and chromium-driver.
"""
from __future__ import annotations

import math
import os
import random
import select
import subprocess
import sys
import tempfile
import time

QUEUECTL = os.path.join(os.path.dirname(sys.executable), "queuectl")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def qctl(home: str, *args: str) -> str:
    return subprocess.run([QUEUECTL, "--home", home, *args], check=True, capture_output=True, text=True,
                          cwd=os.path.dirname(home)).stdout


def history(home: str, runs: int = 900) -> None:
    """The last hour of runs, for the chart: real jobs claimed and finished through the Store,
    each run recorded as the worker records it, but with start and end times spread over the
    past hour (a screenshot cannot wait an hour). Busier lately; one failing spell."""
    sys.path.insert(0, ROOT)
    from queuectl.home import QueueHome
    from queuectl.models import Run
    from queuectl.store.sqlite import SqliteStore as Store

    queues = ("images", "reports", "default")
    lines = "\n".join(f'{{"id": "done-{n:04d}", "queue": "{queues[n % 3]}", "command": "./step.sh {n}",'
                      f' "max_retries": 0}}' for n in range(runs))
    subprocess.run([QUEUECTL, "--home", home, "enqueue", "--file", "-"], input=lines, check=True,
                   capture_output=True, text=True, cwd=os.path.dirname(home))
    store = Store.open(QueueHome(home).db_path)
    rng, moment = random.Random(7), time.time()
    try:
        for n in range(runs):
            ago = 3600 * (1 - math.sqrt(rng.random()))  # more runs in the recent minutes
            ended = moment - ago
            started = ended - rng.uniform(0.2, 6.0)
            failed = 1500 < ago < 1900 and rng.random() < 0.6 or rng.random() < 0.03
            job = store.claim_next("screenshot", moment)
            with store.transaction():
                if failed:
                    store.mark_dead(job, "screenshot", 1, "exit code 1", moment)
                else:
                    store.mark_completed(job, "screenshot", moment)
                store.record_run(job, Run(1, "screenshot", "laptop", started, ended, "failed" if failed else "completed",
                                          1 if failed else 0, "exit code 1" if failed else None, ""), job.queue)
    finally:
        store.close()
    qctl(home, "dlq", "purge", "--yes")  # the chart keeps them; the DLQ shows the jobs below


def fill(home: str) -> None:
    """Jobs in every state, the way a day of use leaves them."""
    history(home)
    for n in range(1, 9):
        qctl(home, "enqueue", "--id", f"thumbnail-{n:03d}", "--queue", "images", f"echo resized image {n}")
    qctl(home, "enqueue", "--id", "nightly-backup", "--max-retries", "0", "echo 'rsync: connection refused' >&2; exit 12")
    qctl(home, "enqueue", "--id", "send-report", "--max-retries", "0", "curl-not-installed https://example.invalid")
    qctl(home, "worker", "start", "--count", "2", "--burst")
    qctl(home, "enqueue", "--id", "flaky-upload", "--max-retries", "3", "exit 1")
    qctl(home, "enqueue", "--id", "transcode-video", "sleep 600")
    qctl(home, "enqueue", "--id", "reindex-search", "sleep 600")
    for n in range(1, 5):
        qctl(home, "enqueue", "--delay", "2h", "--id", f"reminder-{n}", f"./remind.sh {n}")
    qctl(home, "enqueue", "--id", "monthly-invoices", "--queue", "reports", "./invoices.sh")
    qctl(home, "pause", "reports")
    qctl(home, "queue", "limit", "images", "2")
    qctl(home, "worker", "start", "--count", "3", "--detach")


def main() -> int:
    output = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else os.path.join(ROOT, "docs", "dashboard.png")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    scratch = tempfile.mkdtemp(prefix="queuectl-shot-")
    home = os.path.join(scratch, "home")
    server = None
    try:
        fill(home)
        server = subprocess.Popen([QUEUECTL, "--home", home, "dashboard", "--port", "0"],
                                  stdout=subprocess.PIPE, text=True, cwd=scratch)
        select.select([server.stdout], [], [], 30)
        url = server.stdout.readline().split(" at ", 1)[1].split()[0]
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                         "--window-size=1100,1250", "--hide-scrollbars"):
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(url)
            time.sleep(4)  # two refreshes: the flaky job has failed once, the workers are busy
            os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
            driver.save_screenshot(output)
        finally:
            driver.quit()
        print(f"wrote {output}")
        return 0
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        subprocess.run([QUEUECTL, "--home", home, "worker", "stop", "--force", "--timeout", "20"],
                       capture_output=True, cwd=scratch)
        subprocess.run(["rm", "-rf", scratch])


if __name__ == "__main__":
    sys.exit(main())
