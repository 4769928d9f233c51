"""A damaged queue.db and a full disk (issue 10, bugs 2 and 5), through the real CLI and real pools.

Damage is real: pages of a real database overwritten on disk, or a file that is not SQLite.
A full disk is real too: a small tmpfs mounted as the queue home (or its logs folder), filled
to the last byte; those tests need root and are skipped, saying why, without it.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import time

import pytest

from conftest import Pools, job_state, run_cli, wait_until


def error_lines(result: subprocess.CompletedProcess) -> list:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


def one_error(result: subprocess.CompletedProcess, code: int = 1) -> str:
    """The command failed with `code` and said so in exactly one line, which it returns."""
    assert result.returncode == code, (result.returncode, result.stderr)
    errors = error_lines(result)
    assert len(errors) == 1, result.stderr
    return errors[0]


def enqueue_many(home: str, count: int, command: str = "true") -> None:
    lines = "".join(json.dumps({"id": f"job{n:03d}", "command": command}) + "\n" for n in range(count))
    result = run_cli(home, "enqueue", "--file", "-", input=lines)
    assert result.returncode == 0, result.stderr


def overwrite_root_page(home: str, name: str) -> None:
    """Overwrite the root page of table or index `name` in the file itself, so every query that
    reads it gets SQLITE_CORRUPT. Checkpointed first, so no newer copy of the page is in the WAL."""
    path = os.path.join(home, "queue.db")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    finally:
        conn.close()
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, b"\xde\xad" * (page_size // 2), (root - 1) * page_size)
    finally:
        os.close(fd)


def digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@pytest.fixture
def damaged(home):
    """A queue of 300 due jobs whose claim index is damaged: status and list still work."""
    enqueue_many(home, 300)
    overwrite_root_page(home, "jobs_pending")
    return os.path.join(home, "queue.db")


# -- telling damage from trouble that passes -------------------------------------------------------

def _sqlite_error(sql: str, setup: str = "") -> sqlite3.Error:
    conn = sqlite3.connect(":memory:")
    conn.executescript(setup)
    try:
        conn.execute(sql)
    except sqlite3.Error as exc:
        return exc
    raise AssertionError(f"{sql} did not fail")


@pytest.mark.parametrize("exc, damage", [
    # Python 3.11+: by SQLite's result code
    (_sqlite_error("SELECT * FROM nowhere"), False),  # SQLITE_ERROR: a bug of ours, not the file
    (_sqlite_error("INSERT INTO t VALUES (1)", "CREATE TABLE t (x UNIQUE); INSERT INTO t VALUES (1);"), False),
    # Python 3.9/3.10 have no sqlite_errorcode: by SQLite's message
    (sqlite3.DatabaseError("database disk image is malformed"), True),  # SQLITE_CORRUPT
    (sqlite3.DatabaseError("file is not a database"), True),  # SQLITE_NOTADB
    (sqlite3.DatabaseError("malformed database schema (jobs)"), True),  # SQLITE_CORRUPT
    (sqlite3.OperationalError("database is locked"), False),  # SQLITE_BUSY: wait and retry
    (sqlite3.OperationalError("database or disk is full"), False),  # SQLITE_FULL: retry once there is room
    (sqlite3.OperationalError("disk I/O error"), False),  # SQLITE_IOERR: may pass
    (sqlite3.OperationalError("malformed JSON"), False),  # SQLITE_ERROR from json(): a bad value
    (ValueError("database disk image is malformed"), False),  # not SQLite's at all
])
def test_damage_is_told_from_trouble_that_passes(exc, damage):
    from queuectl.store.sqlite import is_damage

    assert is_damage(exc) is damage


def test_real_corruption_and_a_non_database_are_damage_by_their_codes(home, damaged):
    from queuectl.store.sqlite import is_damage

    conn = sqlite3.connect(damaged)
    with pytest.raises(sqlite3.DatabaseError) as corrupt:
        conn.execute("SELECT count(*) FROM jobs INDEXED BY jobs_pending WHERE state = 'pending' AND blocked = 0").fetchall()
    conn.close()
    text = os.path.join(os.path.dirname(damaged), "text.db")
    with open(text, "w") as handle:
        handle.write("not sqlite\n" * 1000)
    conn = sqlite3.connect(text)
    with pytest.raises(sqlite3.DatabaseError) as notadb:
        conn.execute("PRAGMA user_version").fetchall()
    conn.close()
    for error in (corrupt.value, notadb.value):
        assert is_damage(error), error


def test_a_failed_commit_does_not_leave_the_store_stuck_in_its_transaction(tmp_path):
    """A COMMIT that fails may leave the transaction open (SQLite documents it for a busy or
    full database; a deferred constraint shows it on demand): it is rolled back, so the next
    transaction can begin."""
    from queuectl.store.sqlite import SqliteStore as Store

    store = Store.open(str(tmp_path / "queue.db"))
    store._conn.executescript(
        "PRAGMA foreign_keys = ON; CREATE TEMP TABLE parent (id PRIMARY KEY);"
        " CREATE TEMP TABLE child (parent REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);")
    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction() as conn:
            conn.execute("INSERT INTO child VALUES (1)")
    with store.transaction() as conn:
        conn.execute("INSERT INTO parent VALUES (1)")
    assert store._conn.execute("SELECT count(*) FROM child").fetchone() == (0,)
    store.close()


# -- a damaged database stops the pool ------------------------------------------------------------

@pytest.mark.timeout(60)
def test_a_burst_pool_on_a_damaged_database_stops_at_once_naming_the_file(home, damaged):
    started = time.monotonic()
    try:
        result = run_cli(home, "worker", "start", "--burst", "--count", "2", timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("worker start --burst kept retrying a damaged database")
    assert time.monotonic() - started < 30
    line = one_error(result)
    assert damaged in line and "is damaged: database disk image is malformed" in line, line
    assert "queuectl check" in line
    assert "retrying" not in result.stderr, result.stderr
    assert json.loads(run_cli(home, "status", "--json").stdout)["pending"] == 300  # nothing was run


@pytest.mark.timeout(90)
def test_a_detached_pool_stops_itself_and_worker_stop_says_why_once(home, damaged, pools):
    from queuectl.pidfile import pid_alive

    pids = pools.start(2)
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=30, what="the pool to stop by itself")
    with open(os.path.join(home, "pools.log")) as handle:
        log = handle.read()
    errors = [line for line in log.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and damaged in errors[0] and "stopped" in errors[0], log
    assert "retrying" not in log, log

    line = one_error(pools.stop())
    assert "had stopped by itself" in line and damaged in line, line
    again = pools.stop()
    assert again.returncode == 0 and "No worker pools are running" in again.stderr, again.stderr


@pytest.mark.parametrize("args", [("enqueue", "true"), ("list", "--state", "pending"), ("worker", "start", "--burst")])
def test_commands_that_meet_the_damage_say_so_in_one_line(home, damaged, args):
    before = digest(damaged)
    line = one_error(run_cli(home, *args, timeout=30))
    assert f"database {damaged} is damaged: database disk image is malformed; run `queuectl check`" in line, line
    if args[0] != "worker":  # a pool's workers register (and unregister) themselves
        assert digest(damaged) == before


def test_status_says_the_database_is_damaged_when_sqlite_reports_it(home):
    enqueue_many(home, 50)
    overwrite_root_page(home, "job_counts")
    path = os.path.join(home, "queue.db")
    for args in (("status",), ("status", "--json")):
        result = run_cli(home, *args)
        assert one_error(result) == (f"Error: database {path} is damaged: database disk image is malformed;"
                                     " run `queuectl check`")
        assert result.stdout == ""


# -- check -----------------------------------------------------------------------------------------

def test_check_reports_a_damaged_database_and_changes_nothing(home, damaged):
    before, files = digest(damaged), sorted(os.listdir(home))
    text = run_cli(home, "check")
    assert text.returncode == 1 and text.stderr == "", text.stderr
    assert f"database {damaged}: damaged" in text.stdout and "problem found" in text.stdout, text.stdout
    result = run_cli(home, "check", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["healthy"] is False
    assert report["database"]["path"] == damaged and report["database"]["ok"] is False
    assert 1 <= len(report["database"]["problems"]) <= 20
    assert digest(damaged) == before
    assert sorted(name for name in os.listdir(home) if not name.startswith("queue.db-")) == \
        [name for name in files if not name.startswith("queue.db-")]


def test_a_file_that_is_not_a_database(home):
    os.makedirs(home)
    path = os.path.join(home, "queue.db")
    with open(path, "w") as handle:
        handle.write("my shopping list, not a database\n" * 100)
    before = digest(path)
    for args in (("status",), ("worker", "start", "--burst")):
        line = one_error(run_cli(home, *args, timeout=30))
        assert line == f"Error: database {path} is damaged: file is not a database; run `queuectl check`"
    report = run_cli(home, "check", "--json")
    assert report.returncode == 1
    assert json.loads(report.stdout)["database"] == {"path": path, "ok": False, "problems": ["file is not a database"]}
    assert "file is not a database" in run_cli(home, "check").stdout
    assert digest(path) == before


def test_check_of_a_healthy_queue_exits_0(home):
    enqueue_many(home, 3)
    result = run_cli(home, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "all is well"
    report = json.loads(run_cli(home, "check", "--json").stdout)
    assert report == {"healthy": True, "database": {"path": os.path.join(home, "queue.db"), "ok": True, "problems": []},
                      "orphaned_jobs": [], "stale_pidfiles": []}


def test_check_of_a_missing_queue_is_an_error_and_creates_nothing(tmp_path):
    home = str(tmp_path / "nowhere")
    line = one_error(run_cli(home, "check"))
    assert line == f"Error: no database at {home}/queue.db: nothing to check"
    assert not os.path.exists(home)


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_check_finds_orphaned_jobs_and_stale_pidfiles_and_leaves_them(home):
    from queuectl.pidfile import HOST
    from queuectl.store.sqlite import SqliteStore as Store

    enqueue_many(home, 4)
    dead, now = _dead_pid(), time.time()
    store = Store.open(os.path.join(home, "queue.db"))
    holders = {  # worker id: (pid, host, heartbeat_at)
        "gone-1": (dead, HOST, now),  # a local worker whose process is gone
        "alive-1": (os.getpid(), HOST, now - 3600),  # a live local worker, however late its heartbeat
        "far-1": (1, "elsewhere", now - 3600),  # a remote worker not heard from within the lease
        "far-2": (1, "elsewhere", now),  # a remote worker heartbeating
    }
    try:
        for worker_id, (pid, host, heartbeat_at) in holders.items():
            store.claim_next(worker_id, now)
            store.register_worker(worker_id, pid, "pool", host, home, heartbeat_at)
    finally:
        store.close()
    with open(os.path.join(home, "pool-0dead0.pid"), "w") as handle:
        json.dump({"pool": "0dead0", "pid": dead, "started": 1, "workers": [{"pid": dead, "started": 1}]}, handle)

    result = run_cli(home, "check", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["database"]["ok"] is True
    orphans = {job["worker"]: job for job in report["orphaned_jobs"]}
    assert sorted(orphans) == ["far-1", "gone-1"], orphans
    assert orphans["gone-1"]["reason"] == f"its worker process {dead} is gone"
    assert "has not been heard from since" in orphans["far-1"]["reason"]
    assert [p["pool"] for p in report["stale_pidfiles"]] == ["0dead0"]
    text = run_cli(home, "check").stdout
    assert "processing jobs without a live worker: 2" in text and "stale pidfiles: 1" in text, text
    states = json.loads(run_cli(home, "status", "--json").stdout)
    assert states["processing"] == 4  # nothing was taken back
    assert os.path.exists(os.path.join(home, "pool-0dead0.pid"))  # nothing was removed


# -- a full disk (a real tmpfs; root only) ---------------------------------------------------------

@pytest.fixture
def mount_tmpfs():
    """mount(point, size): a fresh tmpfs at `point`; unmounted (lazily if still busy) at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill up needs root")
    mounted = []

    def mount(point: str, size: str) -> None:
        os.makedirs(point, mode=0o700, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", point],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(point)

    yield mount
    for point in reversed(mounted):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)


def fill(folder: str) -> str:
    """Fill the file system holding `folder` to the last byte; returns the filler's path."""
    path = os.path.join(folder, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    assert os.statvfs(folder).f_bfree == 0
    return path


def ledger_lines(path: str) -> list:
    try:
        with open(path) as handle:
            return handle.read().split()
    except FileNotFoundError:
        return []


@pytest.mark.timeout(120)
def test_a_full_disk_delays_the_record_and_the_log_marks_the_cut(tmp_path, home, mount_tmpfs):
    """The disk fills while the job runs: its heartbeats fail (6 s: past one upkeep), its log
    cannot be finished and its outcome cannot be recorded. The run goes on to its end, and the
    worker keeps trying to record it, through a stop request, for longer than the five tries it
    used to give up after; once there is room the job is recorded, once."""
    mount_tmpfs(home, "16m")
    pools = Pools(home)
    ledger, gate = str(tmp_path / "ledger"), str(tmp_path / "gate")
    try:
        command = (f"echo before the cut; echo start >> {ledger}; while [ ! -e {gate} ]; do sleep 0.05; done; "
                   f"head -c 50000000 /dev/zero | tr '\\0' x; sleep 6; echo end >> {ledger}; true")
        assert run_cli(home, "enqueue", "--id", "cutter", "--max-retries", "0", command).returncode == 0
        pools.start(2)
        wait_until(lambda: ledger_lines(ledger) == ["start"], timeout=30, what="the job to start")
        # Empty the WAL, so that every later commit has to grow it: on a full disk, none can.
        conn = sqlite3.connect(os.path.join(home, "queue.db"), timeout=30, isolation_level=None)
        try:
            wait_until(lambda: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone() == (0, 0, 0),
                       what="a checkpoint")
        finally:
            conn.close()
        filler = fill(home)
        open(gate, "w").close()
        wait_until(lambda: ledger_lines(ledger) == ["start", "end"], timeout=30, what="the run to end")
        assert pools.stop("--no-wait").returncode == 0
        # Hold the disk full past the ~7.5 s of tries after which the worker used to give up.
        give_up_time = time.monotonic() + 9
        while time.monotonic() < give_up_time:
            assert job_state(home, "cutter")["state"] == "processing"
            time.sleep(0.5)
        os.unlink(filler)
        stopped = pools.stop("--timeout", "60", timeout=90)
        assert stopped.returncode == 0, stopped.stderr
    finally:
        for leftover in (os.path.join(home, "filler"),):
            if os.path.exists(leftover):
                os.unlink(leftover)
        pools.cleanup()
    job = job_state(home, "cutter")
    assert (job["state"], job["attempts"], job["exit_code"]) == ("completed", 1, 0), job
    assert ledger_lines(ledger) == ["start", "end"]  # it ran once
    assert json.loads(run_cli(home, "status", "--json").stdout)["processing"] == 0
    with open(os.path.join(home, "logs", "cutter.log"), encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    assert lines[0].startswith("=== run 1 of job cutter at ") and lines[1] == "before the cut", lines[:2]
    assert lines[-1].startswith("=== output cut: the disk was full (No space left on device); "
                                "run 1 of job cutter ended after "), lines[-1]
    assert lines[-1].endswith(": exit code 0")


@pytest.mark.timeout(120)
def test_a_full_log_disk_takes_no_job_until_there_is_room(tmp_path, home, mount_tmpfs):
    """The logs fill up while the database has room: a worker that cannot write a job's log
    gives the job back, unrun and uncounted, and takes no other until there is room."""
    os.makedirs(home, mode=0o700)
    logs = os.path.join(home, "logs")
    mount_tmpfs(logs, "4m")
    pools = Pools(home)
    ledger = str(tmp_path / "ledger")
    try:
        filler = fill(logs)
        jobs = [json.dumps({"id": f"small{n}", "command": f"echo $QUEUECTL_JOB_ID >> {ledger}; echo hello; true",
                            "max_retries": 0}) for n in range(6)]
        assert run_cli(home, "enqueue", "--file", "-", input="\n".join(jobs)).returncode == 0
        pools.start(2)
        tried = wait_until(lambda: [job for job in _jobs(home) if job["updated_at"] != job["created_at"]],
                           timeout=30, what="a worker to try a job")
        deadline = time.monotonic() + 3  # the workers have every chance to take more jobs
        while time.monotonic() < deadline:
            jobs_now = _jobs(home)
            assert all(job["state"] == "pending" and job["attempts"] == 0 for job in jobs_now), jobs_now
            time.sleep(0.2)
        assert ledger_lines(ledger) == []
        assert len([job for job in _jobs(home) if job["updated_at"] != job["created_at"]]) <= 2  # one per worker
        os.unlink(filler)
        wait_until(lambda: all(job["state"] == "completed" for job in _jobs(home)), timeout=60,
                   what="every job to complete once there is room")
    finally:
        if os.path.exists(os.path.join(logs, "filler")):
            os.unlink(os.path.join(logs, "filler"))
        pools.cleanup()
    assert sorted(ledger_lines(ledger)) == [f"small{n}" for n in range(6)]  # each ran exactly once
    assert all(job["attempts"] == 1 for job in _jobs(home))
    job_id = tried[0]["id"]
    with open(os.path.join(logs, f"{job_id}.log")) as handle:
        lines = handle.read().splitlines()
    run = next(n for n, line in enumerate(lines) if line.startswith(f"=== run 1 of job {job_id} at "))
    assert run >= 1 and lines[run + 1] == "hello", lines  # each worker may have tried it once
    for line in lines[:run]:
        assert line.startswith(f"=== run 1 of job {job_id} not started at ") and \
            line.endswith(": the disk was full (No space left on device); back to pending"), lines


def _jobs(home: str) -> list:
    result = run_cli(home, "list", "--json", "--limit", "0")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
