"""Steering end to end: real pools, real runs, and ledgers written by the jobs themselves."""
from __future__ import annotations

import json
import os
import time

import pytest

from conftest import job_state, run_cli, wait_until

pytestmark = pytest.mark.both_backends  # see conftest: each test on SQLite and on PostgreSQL


def ok(home, *args, input=None, cwd=None) -> str:
    result = run_cli(home, *args, input=input, cwd=cwd)
    assert result.returncode == 0, (args, result.stderr)
    return result.stdout


def states(home, *ids) -> list:
    return [job_state(home, job_id)["state"] for job_id in ids]


def stamp(ledger: str, what: str) -> str:
    return f'echo "{what} $(date +%s%N)" >> {ledger}'


def most_at_once(ledger: str) -> int:
    """The most runs in progress at one time, from `start`/`end` lines stamped in nanoseconds."""
    with open(ledger) as handle:
        events = [(int(t), 1 if kind.startswith("start") else -1)
                  for kind, t in (line.split() for line in handle if line.strip())]
    running = most = 0
    for _, change in sorted(events):  # an end sorts before a start at the same nanosecond
        running += change
        most = max(most, running)
    return most


@pytest.mark.timeout(240)
def test_a_limit_of_2_is_never_exceeded_by_3_pools_of_3_workers(home, workdir, pools):
    ledger = os.path.join(workdir, "ledger")
    ok(home, "queue", "limit", "dl", "2")
    command = f"{stamp(ledger, 'start')}; sleep 0.4; {stamp(ledger, 'end')}"
    jobs = [{"id": f"dl{i}", "command": command, "queue": "dl"} for i in range(12)]
    jobs += [{"id": f"quick{i}", "command": "true"} for i in range(6)]
    ok(home, "enqueue", "--file", "-", input="".join(json.dumps(j) + "\n" for j in jobs), cwd=workdir)
    for _ in range(3):
        pools.start(3)
    wait_until(lambda: states(home, "quick5") == ["completed"], timeout=60, what="the unlimited queue to run")
    wait_until(lambda: json.loads(ok(home, "queues", "--json"))[1]["counts"]["completed"] == 12,
               timeout=180, interval=0.5, what="every limited job to complete")
    assert most_at_once(ledger) == 2  # never more, and the limit is a limit, not a queue of one


@pytest.mark.timeout(180)
def test_nothing_starts_in_a_paused_queue_and_a_resume_reaches_running_workers_at_once(home, workdir, pools):
    marker = os.path.join(workdir, "held-ran")
    ok(home, "pause", "held")
    ok(home, "enqueue", "--id", "held1", "--queue", "held", f"touch {marker}", cwd=workdir)
    pools.start(2)
    for probe in ("probe1", "probe2"):  # the workers are up and claiming, round after round
        ok(home, "enqueue", "--id", probe, "true", cwd=workdir)
        wait_until(lambda: states(home, probe) == ["completed"], timeout=60, what=f"{probe} to run")
    assert states(home, "held1") == ["pending"] and not os.path.exists(marker)
    ok(home, "resume", "held")
    resumed = time.monotonic()
    wait_until(lambda: os.path.exists(marker), timeout=30, interval=0.02, what="the held job to start")
    assert time.monotonic() - resumed < 10  # typically well under a second; the machine is shared
    wait_until(lambda: states(home, "held1") == ["completed"], timeout=30)


@pytest.mark.timeout(180)
def test_a_three_level_chain_runs_in_order_dies_as_a_whole_and_revives_as_a_whole(home, workdir, pools):
    ledger = os.path.join(workdir, "order")
    flag = os.path.join(workdir, "fixed")
    # Enqueued last-first, with the better priorities: only the dependencies give the order.
    ok(home, "enqueue", "--id", "first", "--priority", "9", "--max-retries", "0",
       f"test -f {flag} && echo first >> {ledger}", cwd=workdir)
    ok(home, "enqueue", "--id", "second", "--priority", "-5", "--after", "first", f"echo second >> {ledger}")
    ok(home, "enqueue", "--id", "third", "--priority", "-9", "--after", "second", f"echo third >> {ledger}")
    pools.start(3)
    wait_until(lambda: states(home, "first", "second", "third") == ["dead"] * 3, timeout=60, what="the chain to die")
    errors = [job_state(home, j)["last_error"] for j in ("second", "third")]
    assert errors == ["dependency first is dead", "dependency second is dead"]
    assert [job_state(home, j)["attempts"] for j in ("first", "second", "third")] == [1, 0, 0]
    assert not os.path.exists(ledger)

    open(flag, "w").close()
    assert ok(home, "dlq", "retry", "first") == "Moved 1 job back to pending, and 2 that wait for them\n"
    wait_until(lambda: states(home, "first", "second", "third") == ["completed"] * 3, timeout=60,
               what="the chain to run")
    with open(ledger) as handle:
        assert handle.read().split() == ["first", "second", "third"]


@pytest.mark.timeout(120)
@pytest.mark.sqlite_only
def test_burst_quits_leaving_paused_and_unserved_queues_alone(home, workdir):
    ok(home, "pause", "held")
    ok(home, "enqueue", "--id", "held1", "--queue", "held", "true", cwd=workdir)
    ok(home, "enqueue", "--id", "other1", "--queue", "other", "true", cwd=workdir)
    ok(home, "enqueue", "--id", "mine1", "--queue", "mine", "true", cwd=workdir)
    ok(home, "worker", "start", "--burst", "--queue", "mine", "--queue", "held")
    assert states(home, "held1", "other1", "mine1") == ["pending", "pending", "completed"]
    ok(home, "worker", "start", "--burst")
    assert states(home, "held1", "other1") == ["pending", "completed"]


@pytest.mark.timeout(120)
@pytest.mark.sqlite_only
def test_a_detached_pool_serves_only_its_queues(home, workdir, pools):
    pools.start(1, "--queue", "fast")
    ok(home, "enqueue", "--id", "slow1", "--queue", "slow", "true", cwd=workdir)
    for probe in ("fast1", "fast2"):
        ok(home, "enqueue", "--id", probe, "--queue", "fast", "true", cwd=workdir)
        wait_until(lambda: states(home, probe) == ["completed"], timeout=60, what=f"{probe} to run")
    assert states(home, "slow1") == ["pending"]
