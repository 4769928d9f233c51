"""Fault injection against real worker pools: kill -9 at awkward moments, racing enqueues, a
locked database, an interrupted bulk enqueue, runaway process groups, stale pidfiles naming
live strangers, huge output, and a fresh queue home hit by 200 processes at once.

Every wait polls with a deadline. The moment a fault lands at is chosen by what the processes
report (a file written by the job, a row in the database, the WAL growing), not by sleeping; the
one sleep holds another process's write lock for its ~3 s. Where the moment cannot be pinned
exactly (just before a result is recorded), the test accepts either side of it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from conftest import Pools, cli_env, gated_enqueues, job_state, query, run_cli, wait_until


# -- helpers -------------------------------------------------------------------------------------

def cli_ok(home: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    result = run_cli(home, *args, **kwargs)
    assert result.returncode == 0, result.stderr
    return result


def status(home: str) -> dict:
    return json.loads(cli_ok(home, "status", "--json").stdout)


def all_jobs(home: str) -> dict:
    return {job["id"]: job for job in json.loads(cli_ok(home, "list", "--json", "--limit", "0").stdout)}


def start_pool(pools: Pools, count: int) -> tuple:
    """Start a detached pool; (supervisor PID, [worker PIDs]). The fixture stops it in the end."""
    result = run_cli(pools.home, "worker", "start", "--count", str(count), "--detach")
    assert result.returncode == 0, result.stderr
    found: dict = {"supervisor": [], "worker": []}
    for line in result.stdout.splitlines():
        label, pid = line.split()
        found[label].append(int(pid))
    pools.pids.extend(found["supervisor"] + found["worker"])
    assert len(found["supervisor"]) == 1 and len(found["worker"]) == count, result.stdout
    return found["supervisor"][0], found["worker"]


def proc_stat(pid: int) -> list:
    """Fields of /proc/PID/stat after the command name: [state, ppid, pgrp, ...]; [] if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return []


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie)."""
    fields = proc_stat(pid)
    return bool(fields) and fields[0] != b"Z"


def pids() -> list:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def group_members(pgid: int) -> list:
    """Non-zombie processes of a process group."""
    return [pid for pid in pids() if (f := proc_stat(pid)) and int(f[2]) == pgid and f[0] != b"Z"]


def processes_with_env(entry: str) -> list:
    """Non-zombie processes whose environment holds `entry` (NAME=value)."""
    wanted = entry.encode()
    found = []
    for pid in pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                if wanted in handle.read().split(b"\0") and alive(pid):
                    found.append(pid)
        except OSError:
            continue
    return found


def kill9(pid: int, pools: Pools) -> None:
    """SIGKILL a process of a pool, and forget it: the finalizer must not signal a reuse of its PID."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # it exited on its own a moment ago (or was killed already)
        pass
    if pid in pools.pids:
        pools.pids.remove(pid)


def lines(path: str) -> list:
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return handle.read().split()


def vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def settled(home: str, total: int):
    """The queue once every job is completed or dead (None while any is still on its way)."""
    counts = status(home)
    if counts["total"] == total and counts["pending"] == counts["processing"] == counts["failed"] == 0:
        return counts
    return None


# -- kill -9 in the middle of a job --------------------------------------------------------------

MOMENTS = ("after_claim", "during_run", "before_record")


@pytest.mark.timeout(150)
# On PostgreSQL, the worker kills only (what the supervisor does is the same on both).
@pytest.mark.parametrize("kill_supervisor", [False, pytest.param(True, marks=pytest.mark.sqlite_only)],
                         ids=["worker", "worker+supervisor"])
@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.both_backends
def test_sigkill_mid_job_loses_no_job(home, workdir, pools, moment, kill_supervisor):
    """Two workers each hold a victim job; SIGKILL them (and their supervisor) at `moment`.

    Every job ends completed or dead, none stays processing, none is lost; a lost run counts
    as a failed run "worker lost", and what is left of it is killed (the retry never overlaps it).
    """
    cli_ok(home, "config", "set", "lease_seconds", "2")
    cli_ok(home, "config", "set", "backoff_base", "1")  # retry a lost run after 1 s
    token = uuid.uuid4().hex[:8]
    once, again = f"once-{token}", f"again-{token}"  # max_retries 0 and 3
    ran = os.path.join(workdir, "ran")
    started = os.path.join(workdir, "started")
    os.mkdir(started)
    mark = f"echo $PPID > {started}/$QUEUECTL_JOB_ID.$QUEUECTL_ATTEMPT"  # $PPID is the worker
    record = f"echo $QUEUECTL_JOB_ID >> {ran}"
    if moment == "before_record":
        victim_command = f"{mark}; sleep 0.5; {record}"
    else:  # the first run hangs until killed; a retry finishes at once
        victim_command = f'{mark}; [ "$QUEUECTL_ATTEMPT" -gt 1 ] || sleep 30; {record}'
    fillers = [f"fill-{token}-{n}" for n in range(4)]
    jobs = [{"id": once, "command": victim_command, "max_retries": 0, "priority": -1},
            {"id": again, "command": victim_command, "max_retries": 3, "priority": -1}]
    jobs += [{"id": job_id, "command": record} for job_id in fillers]

    supervisor, workers = start_pool(pools, 2)
    cli_ok(home, "enqueue", "--file", "-", input="\n".join(json.dumps(j) for j in jobs), cwd=workdir)

    def holder(job_id: str):
        """The PID of the worker that holds the job, once `moment` has come for it."""
        if moment == "after_claim":
            rows = query(home, "SELECT worker_id FROM jobs WHERE id = ? AND state = 'processing'", (job_id,))
            return int(rows[0][0].rsplit("-", 1)[1]) if rows else None
        marker = os.path.join(started, f"{job_id}.1")
        if moment == "during_run":
            if not os.path.exists(marker) or time.time() - os.path.getmtime(marker) < 0.3:
                return None
        elif job_id not in lines(ran):  # before_record: the run's last act is done
            return None
        with open(marker) as handle:
            text = handle.read().strip()
        return int(text) if text else None

    killed: dict = {}
    deadline = time.monotonic() + 60
    while len(killed) < 2:
        assert time.monotonic() < deadline, f"victims never reached {moment}: {all_jobs(home)}"
        for job_id in (once, again):
            pid = None if job_id in killed else holder(job_id)
            if pid is None:
                continue
            assert pid in workers, f"{job_id} is held by {pid}, not by a worker of the pool {workers}"
            if kill_supervisor and supervisor is not None:
                kill9(supervisor, pools)
                supervisor = None
            kill9(pid, pools)
            killed[job_id] = pid
        time.sleep(0.002)

    if kill_supervisor:  # nobody of that pool is left: a new pool must take the jobs back
        start_pool(pools, 2)
    wait_until(lambda: settled(home, len(jobs)), timeout=60, interval=0.3, what="every job to finish")

    final = all_jobs(home)
    assert {j["state"] for j in final.values()} <= {"completed", "dead"}
    for job_id in fillers:
        assert final[job_id]["state"] == "completed", final[job_id]
        assert job_id in lines(ran)
    # Whatever was left of a killed run is gone: no process of the victims' runs survives.
    for job_id in (once, again):
        wait_until(lambda: not processes_with_env(f"QUEUECTL_JOB_ID={job_id}"), timeout=15,
                   what=f"the orphaned run of {job_id} to be killed")

    if moment == "before_record":
        # The kill may land just before or just after the result was recorded: both are fine.
        assert final[once]["state"] in ("completed", "dead")
        if final[once]["state"] == "dead":
            assert (final[once]["last_error"], final[once]["attempts"]) == ("worker lost", 1)
        assert final[again]["state"] == "completed" and final[again]["attempts"] in (1, 2)
    else:
        # The run was surely lost: counted as a failed run "worker lost".
        assert (final[once]["state"], final[once]["attempts"], final[once]["last_error"],
                final[once]["exit_code"]) == ("dead", 1, "worker lost", None), final[once]
        assert (final[again]["state"], final[again]["attempts"]) == ("completed", 2), final[again]
        # The lost first runs never got to their end; only the retry of `again` did.
        assert lines(ran).count(again) == 1 and once not in lines(ran)


# -- racing enqueues while workers drain ---------------------------------------------------------

ENQUEUE_DRIVER = r"""
import shlex, sys
from queuectl.cli import cli
home, prefix, ran, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
for n in range(count):
    job_id = f"{prefix}-{n}"
    # One CLI call per job (the console script's own entry point): its own connection and transaction.
    try:
        cli.main(["--home", home, "enqueue", "--id", job_id, "-q",
                  "echo $QUEUECTL_JOB_ID >> " + shlex.quote(ran)], prog_name="queuectl")
    except SystemExit as exc:
        if exc.code not in (0, None):
            sys.exit(f"enqueue {job_id} exited with {exc.code}")
"""


@pytest.mark.timeout(150)
@pytest.mark.both_backends
def test_concurrent_enqueues_while_workers_drain_run_every_job_exactly_once(home, workdir, pools):
    """8 processes enqueue 50 jobs each (one transaction per job) while 3 workers drain."""
    ran = os.path.join(workdir, "ran")
    start_pool(pools, 3)
    drivers = [
        subprocess.Popen([sys.executable, "-c", ENQUEUE_DRIVER, home, f"p{d}", ran, "50"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir, env=cli_env(home))
        for d in range(8)
    ]
    for driver in drivers:
        out, err = driver.communicate(timeout=120)
        assert driver.returncode == 0, err
        assert "Error" not in err and "Traceback" not in err, err
        assert len(out.split()) == 50
    expected = {f"p{d}-{n}" for d in range(8) for n in range(50)}
    wait_until(lambda: settled(home, len(expected)), timeout=90, interval=0.3, what="the queue to drain")

    done = lines(ran)
    assert len(done) == len(expected), f"{len(done)} runs for {len(expected)} jobs"
    assert set(done) == expected
    final = all_jobs(home)
    assert set(final) == expected
    assert {(j["state"], j["attempts"]) for j in final.values()} == {("completed", 1)}


# -- another process holds the write lock --------------------------------------------------------

LOCKER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()  # hold the write lock until told to let go
conn.execute("COMMIT")
print("released", flush=True)
"""


@pytest.mark.timeout(150)
def test_a_long_write_transaction_elsewhere_makes_everyone_wait_not_fail(home, workdir, pools):
    ran = os.path.join(workdir, "ran")
    record = f"echo $QUEUECTL_JOB_ID >> {ran}"
    cli_ok(home, "enqueue", "--id", "later", "--delay", "1h", "true", cwd=workdir)
    before = ["before-0", "before-1"]  # running when the lock is taken: they finish while it is held
    cli_ok(home, "enqueue", "--file", "-", cwd=workdir,
           input="\n".join(json.dumps({"id": i, "command": f"sleep 2; {record}"}) for i in before))
    start_pool(pools, 2)
    wait_until(lambda: query(home, "SELECT count(*) FROM jobs WHERE state = 'processing'")[0][0] == 2,
               what="both workers to be running a job")

    locker = subprocess.Popen([sys.executable, "-c", LOCKER, os.path.join(home, "queue.db")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        locked_at = time.monotonic()

        def launch(*args: str) -> subprocess.Popen:
            return subprocess.Popen([sys.executable, "-m", "queuectl", "--home", home, *args], cwd=workdir,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        during = [f"during-{n}" for n in range(3)]
        writers = [launch("enqueue", "--id", job_id, "-q", record) for job_id in during]
        writers.append(launch("delete", "later"))
        readers = [launch("status", "--json"), launch("list", "--json", "--limit", "0"),
                   launch("show", "before-0", "--json"), launch("worker", "status")]
        # WAL: readers are not blocked by the writer.
        wait_until(lambda: all(r.poll() is not None for r in readers), timeout=60, what="the readers")
        # Hold the lock ~3 s in all, then check every writer is still waiting rather than failing.
        time.sleep(max(0.0, 3.0 - (time.monotonic() - locked_at)))
        assert [w.args[5:] for w in writers if w.poll() is not None] == [], "a writer did not wait for the lock"
        locker.stdin.write("go\n")
        locker.stdin.flush()
        assert locker.stdout.readline().strip() == "released"
    finally:
        locker.kill()
        locker.wait()

    for proc in readers + writers:
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, (proc.args, err)
        assert "locked" not in err and "Error" not in err and "Traceback" not in err, (proc.args, err)
    wait_until(lambda: settled(home, len(before) + len(during)), timeout=60, interval=0.3,
               what="every job to finish")
    assert sorted(lines(ran)) == sorted(before + during)
    assert {j["state"] for j in all_jobs(home).values()} == {"completed"}
    with open(os.path.join(home, "pools.log")) as handle:
        pool_log = handle.read()
    assert "locked" not in pool_log and "database trouble" not in pool_log, pool_log


# -- an interrupted bulk enqueue: all or none ----------------------------------------------------

BULK_LINES = 200_000


@pytest.fixture(scope="module")
def bulk_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bulk") / "jobs.jsonl"
    path.write_text("".join(f'{{"id": "bulk-{n}", "command": "true"}}\n' for n in range(BULK_LINES)))
    return str(path)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


@pytest.mark.timeout(150)
@pytest.mark.parametrize("moment", ["inserting", "committing"])
def test_bulk_enqueue_killed_midway_leaves_all_or_none(home, workdir, bulk_file, moment):
    cli_ok(home, "enqueue", "--id", "before", "true", cwd=workdir)  # the database exists already
    db, wal = os.path.join(home, "queue.db"), os.path.join(home, "queue.db-wal")
    db_size = _size(db)
    proc = subprocess.Popen([sys.executable, "-m", "queuectl", "--home", home, "enqueue", "--file", bulk_file],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir)
    try:
        triggers = {
            "inserting": lambda: _size(wal) > 4_000_000,  # rows are being written, not yet committed
            "committing": lambda: _size(db) > db_size,  # committed; checkpoint copying into queue.db
        }
        deadline = time.monotonic() + 100
        while proc.poll() is None and not triggers[moment]():
            assert time.monotonic() < deadline, "the bulk enqueue neither finished nor reached the moment"
            time.sleep(0.001)
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if moment != "committing":  # the commit window is short: there the run may finish first
        assert proc.returncode == -signal.SIGKILL, "the bulk enqueue finished before it could be killed"

    counts = status(home)
    stored = query(home, "SELECT count(*) FROM jobs WHERE id LIKE 'bulk-%'")[0][0]
    assert stored in (0, BULK_LINES), f"a partial bulk enqueue: {stored} of {BULK_LINES} jobs"
    assert counts["pending"] == counts["total"] == stored + 1  # the counters agree with the rows
    if moment == "committing":
        assert stored == BULK_LINES
    # The queue stays usable: no lock or hot journal is left behind.
    cli_ok(home, "enqueue", "--id", "after", "true", cwd=workdir)
    assert status(home)["pending"] == stored + 2


# -- a timeout kills the whole process group -----------------------------------------------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize("prelude", ["", 'trap "" TERM; '], ids=["plain", "ignores-SIGTERM"])
def test_timeout_leaves_no_process_of_the_group_alive(home, workdir, prelude):
    pgid_file = os.path.join(workdir, "pgid")
    cli_ok(home, "enqueue", "--id", "hang", "--timeout", "1", "--max-retries", "0",
           f"{prelude}echo $$ > {pgid_file}; sleep 60 & sleep 60", cwd=workdir)
    burst = subprocess.Popen([sys.executable, "-m", "queuectl", "--home", home, "worker", "start", "--burst"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pgid = wait_until(lambda: lines(pgid_file) and int(lines(pgid_file)[0]), timeout=60, what="the run")
        # The shell leads the run's group; the background sleep is in it too.
        wait_until(lambda: len(group_members(pgid)) >= 2, timeout=30, what="the run's processes")
        burst.communicate(timeout=60)
    finally:
        if burst.poll() is None:
            burst.kill()
            burst.wait()
    assert burst.returncode == 0
    assert group_members(pgid) == [], "processes of the timed-out run's group are still alive"
    job = job_state(home, "hang")
    assert (job["state"], job["last_error"], job["exit_code"]) == ("dead", "timed out after 1s", None)


# -- a stale pidfile naming a live process that is not ours --------------------------------------

def _start_time(pid: int) -> int:
    return int(proc_stat(pid)[19])


def _stranger(argv0: str = "sleep") -> subprocess.Popen:
    """A live process unrelated to any queue, in a session of its own."""
    return subprocess.Popen([argv0, "300"], executable="/bin/sleep", start_new_session=True)


def _true_record(supervisor: int, workers: list) -> str:
    """A pidfile exactly as queuectl writes it for that pool: right PIDs, right start times."""
    return json.dumps({"pool": "old", "pid": supervisor, "started": _start_time(supervisor),
                       "workers": [{"pid": w, "started": _start_time(w)} for w in workers], "created": 0})


PIDFILE_FORMS = {
    # A pidfile queuectl wrote, whose PID now belongs to someone else (start time matches even).
    "json-same-start": lambda pid: _true_record(pid, [pid]),
    # The usual PID reuse: the recorded start time is that of the old process.
    "json-other-start": lambda pid: json.dumps({"pool": "old", "pid": pid, "started": _start_time(pid) - 1,
                                                "workers": [{"pid": pid, "started": _start_time(pid) - 1}],
                                                "created": 0}),
    "json-no-start": lambda pid: json.dumps({"pool": "old", "pid": pid, "started": None, "workers": [],
                                             "created": 0}),
    "bare-pid": lambda pid: f"{pid}\n",
}


def _stop_leaves_the_stranger_alive(home: str, pools: Pools, stranger: subprocess.Popen, text: str) -> None:
    _, workers = start_pool(pools, 1)  # a real pool too: stop must still stop that one
    stale = os.path.join(home, "pool-old.pid")
    with open(stale, "w") as handle:
        handle.write(text)
    result = run_cli(home, "worker", "stop", "--timeout", "30")
    assert result.returncode == 0, result.stderr
    assert stranger.poll() is None and alive(stranger.pid), "worker stop signalled a process that is not ours"
    assert not os.path.exists(stale), "the stale pidfile is left behind"
    assert not [w for w in workers if alive(w)], "the real pool was not stopped"
    assert not [name for name in os.listdir(home) if name.endswith(".pid")]
    # Nothing left to act on: a second stop is a no-op, and the stranger still lives.
    cli_ok(home, "worker", "stop", "--timeout", "30")
    assert alive(stranger.pid)


# A stranger whose command line mentions queuectl: `vim queuectl.conf`, say, that got a dead pool's PID.
STRANGERS = [("sleep", form) for form in PIDFILE_FORMS] + [
    ("queuectl-notes", form) for form in ("json-no-start", "bare-pid")]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("argv0, form", STRANGERS, ids=[f"{a}-{f}" for a, f in STRANGERS])
def test_worker_stop_never_signals_a_stranger_named_by_a_stale_pidfile(home, pools, argv0, form):
    stranger = _stranger(argv0)
    try:
        _stop_leaves_the_stranger_alive(home, pools, stranger, PIDFILE_FORMS[form](stranger.pid))
    finally:
        stranger.kill()
        stranger.wait()


# The JSON form is what `cp -r` of a home with a running pool leaves in the copy.
OTHER_HOME_FORMS = {"bare-pid": lambda sup, workers: f"{sup}\n", "json-true-record": _true_record}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("form", OTHER_HOME_FORMS)
def test_worker_stop_leaves_the_pool_of_another_queue_home_alone(home, tmp_path, form):
    other = Pools(str(tmp_path / "other-home"))
    try:
        supervisor, workers = start_pool(other, 1)
        cli_ok(home, "status")  # creates this home
        with open(os.path.join(home, "pool-old.pid"), "w") as handle:
            handle.write(OTHER_HOME_FORMS[form](supervisor, workers))
        result = run_cli(home, "worker", "stop", "--timeout", "30")
        assert result.returncode == 0, result.stderr
        assert alive(supervisor) and all(alive(w) for w in workers), "another home's pool was stopped"
        assert not os.path.exists(os.path.join(home, "pool-old.pid")), "the foreign pidfile is left behind"
        # Its own home still reaches it.
        cli_ok(other.home, "worker", "stop", "--timeout", "30")
        assert not alive(supervisor)
    finally:
        other.cleanup()


# -- 50 MB of output -----------------------------------------------------------------------------

OUTPUT_BYTES = 50_000_000


@pytest.mark.timeout(150)
def test_50_mb_of_output_is_streamed_to_the_log_not_held_in_memory(home, workdir, pools):
    _, (worker,) = start_pool(pools, 1)
    cli_ok(home, "enqueue", "--id", "warm", "echo warm", cwd=workdir)
    assert run_cli(home, "wait", "warm", "--timeout", "60").returncode == 0
    baseline = vm_hwm_kib(worker)

    cli_ok(home, "enqueue", "--id", "big", f"head -c {OUTPUT_BYTES} /dev/zero | tr '\\0' x", cwd=workdir)
    assert run_cli(home, "wait", "big", "--timeout", "100", timeout=120).returncode == 0
    peak = vm_hwm_kib(worker)
    assert alive(worker)
    assert peak - baseline < 10 * 1024, f"worker peak memory grew {baseline} -> {peak} KiB"

    with open(os.path.join(home, "logs", "big.log"), "rb") as handle:
        content = handle.read()
    header, output, trailer = content.split(b"\n")[:3]
    assert header.startswith(b"=== run 1 of job big") and trailer.startswith(b"=== run 1 of job big")
    assert len(output) == OUTPUT_BYTES and output.count(b"x") == OUTPUT_BYTES
    assert len(content) == len(header) + len(output) + len(trailer) + 3

    # `logs` streams it too: the whole file on stdout, in constant memory. (Its peak is read while
    # it runs, blocked on the pipe: a child's ru_maxrss would include the memory of this process.)
    del content
    proc = subprocess.Popen([sys.executable, "-m", "queuectl", "--home", home, "logs", "big"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    copied, logs_peak = 0, None
    try:
        while chunk := proc.stdout.read(1 << 20):
            copied += len(chunk)
            if logs_peak is None and copied >= OUTPUT_BYTES * 4 // 5:
                logs_peak = vm_hwm_kib(proc.pid)
    finally:
        proc.stdout.close()
        if proc.poll() is None and copied < OUTPUT_BYTES:
            proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert copied == os.path.getsize(os.path.join(home, "logs", "big.log"))
    assert logs_peak is not None and logs_peak < 60 * 1024, f"`logs` peaked at {logs_peak} KiB"


# -- 200 enqueues racing on a fresh queue home ---------------------------------------------------

@pytest.mark.timeout(240)
def test_200_concurrent_enqueues_on_a_fresh_queue_home(home, workdir):
    """First use races the creation of the home, the database and its schema: all 200 succeed."""
    assert not os.path.exists(home)

    def still_no_home() -> None:  # every process has started and imported: none has created it yet
        assert not os.path.exists(home)

    failures = gated_enqueues(home, 200, workdir, timeout=200, at_the_gate=still_no_home)
    assert failures == [], failures[:5]
    counts = status(home)
    assert (counts["pending"], counts["total"]) == (200, 200)
    assert set(all_jobs(home)) == {f"race-{n}" for n in range(200)}
    assert os.stat(home).st_mode & 0o777 == 0o700
    assert os.stat(os.path.join(home, "queue.db")).st_mode & 0o777 == 0o600
    assert query(home, "PRAGMA journal_mode")[0][0] == "wal"
