"""Queue homes, pools and the text shown to people (issue 10): the pools' log out of every job's
reach, control characters from jobs never raw on a terminal, `worker status` and `worker stop`
agreeing (a copied home, a deleted pidfile), home errors that name the real problem, and the
pool conveniences (`--pool`, the note about other pools, the run's PID). Real pools, real
processes, real signals."""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import Pools, job_state, run_cli, wait_until
from queuectl import supervisor
from queuectl.pidfile import HOST
from queuectl.render import printable
from queuectl.store.sqlite import SqliteStore as Store

pytestmark = pytest.mark.timeout(180)


# -- helpers -------------------------------------------------------------------------------------

def ok(home: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    result = run_cli(home, *args, **kwargs)
    assert result.returncode == 0, result.stderr
    return result


def one_error(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def worker_rows(home: str) -> list:
    return json.loads(ok(home, "worker", "status", "--json").stdout)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def group_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        return int(handle.read().rsplit(b")", 1)[1].split()[2])


def start(pools: Pools, count: int = 1) -> tuple:
    """Start a detached pool: (pool id, supervisor PID, worker PIDs, what it said on stderr)."""
    result = ok(pools.home, "worker", "start", "--count", str(count), "--detach")
    found = [int(line.split()[1]) for line in result.stdout.splitlines()]
    pools.pids.extend(found)
    pool_id = result.stderr.split("Started worker pool ", 1)[1].split()[0]
    return pool_id, found[0], found[1:], result.stderr


def no_raw_controls(text: str) -> bool:
    """Nothing a terminal would act on: no C0 control but the line ends, no DEL, no C1."""
    return not [ch for ch in text if ch != "\n" and (ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0)]


# -- bug 3: the pools' log is out of every job's reach ------------------------------------------

def test_a_job_named_workers_neither_writes_nor_deletes_the_pools_log(home, workdir, pools):
    pool_id, *_ = start(pools)
    pool_log = os.path.join(home, "pools.log")
    wait_until(lambda: os.path.exists(pool_log) and pool_id in open(pool_log).read(), what="the pool's first line")
    ok(home, "enqueue", "--id", "workers", "echo said-by-the-job", cwd=workdir)
    wait_until(lambda: job_state(home, "workers")["state"] == "completed", timeout=60, what="the job")
    with open(pool_log) as handle:
        said = handle.read()
    assert "said-by-the-job" not in said and f"pool {pool_id} started" in said
    assert "said-by-the-job" in ok(home, "logs", "workers").stdout
    ok(home, "delete", "workers")
    assert os.path.exists(pool_log) and f"pool {pool_id} started" in open(pool_log).read()
    assert not os.path.exists(os.path.join(home, "logs", "workers.log"))


# -- bug 4: control characters are shown escaped --------------------------------------------------

# What a hostile or careless job prints last: an OSC title change, a CSI in its 8-bit (C1) form,
# DEL, a bell. `printf` octal escapes, so the command line itself stays plain text.
HOSTILE_OUTPUT = r"printf 'a\033]0;PWNED\007b \302\233c \177d'; exit 3"
LAST_ERROR = "exit code 3: a\x1b]0;PWNED\x07b \x9bc \x7fd"
SHOWN = r"a\x1b]0;PWNED\x07b \x9bc \x7fd"


@pytest.fixture
def hostile(home, workdir):
    """A dead job whose last_error holds control characters, and what the worker said of it."""
    ok(home, "enqueue", "--id", "evil", "--max-retries", "0", HOSTILE_OUTPUT, cwd=workdir)
    ok(home, "enqueue", "--id", "two-lines", "--max-retries", "0", "echo one\nexit 1", cwd=workdir)
    burst = ok(home, "worker", "start", "--burst")
    assert job_state(home, "evil")["last_error"] == LAST_ERROR
    return burst.stderr


@pytest.mark.parametrize("args", [("list",), ("show", "evil"), ("dlq", "list")])
def test_control_characters_are_shown_escaped(home, hostile, args):
    shown = ok(home, *args).stdout
    assert no_raw_controls(shown), repr(shown)
    assert (SHOWN if args[0] == "show" else SHOWN[:17]) in shown  # tables clip long text


def test_the_worker_log_lines_escape_them_too(hostile):
    assert no_raw_controls(hostile), repr(hostile)
    assert f"job evil dead after 1 run: exit code 3: {SHOWN}" in hostile


def test_a_newline_in_a_one_line_field_is_visible(home, hostile):
    detail = ok(home, "show", "two-lines").stdout
    assert "command:     echo one\\nexit 1\n" in detail
    assert "echo one\\nexit 1" in ok(home, "list").stdout


@pytest.mark.parametrize("args", [("show", "evil", "--json"), ("list", "--json"), ("dlq", "list", "--json")])
def test_json_keeps_the_exact_text_escaped_as_json_does(home, hostile, args):
    out = ok(home, *args).stdout
    assert no_raw_controls(out), repr(out)
    data = json.loads(out)
    jobs = data if isinstance(data, list) else [data]
    assert next(job for job in jobs if job["id"] == "evil")["last_error"] == LAST_ERROR


def test_logs_prints_the_jobs_own_output_raw_on_purpose(home, hostile):
    assert "a\x1b]0;PWNED\x07b \x9bc \x7fd" in ok(home, "logs", "evil").stdout


@pytest.mark.parametrize("text, shown", [
    ("plain text, ünïcode ✓ and a tab-free line", "plain text, ünïcode ✓ and a tab-free line"),
    ("\x1b[2J\x1b]0;title\x07", r"\x1b[2J\x1b]0;title\x07"),  # clear screen, set the title
    ("a\nb\rc\td", r"a\nb\rc\td"),                            # line ends and tabs: one line stays one
    ("\x00\x7f\x9b\x85", r"\x00\x7f\x9b\x85"),                # NUL, DEL, C1 CSI and NEL
    ("abc\u202etxt.exe", r"abc\u202etxt.exe"),                # a bidi override reverses what follows
    ("x\u2028y", r"x\u2028y"),                                # a line separator
    (r"printf '%s\n' \033", r"printf '%s\n' \033"),           # backslashes typed stay as typed
])
def test_printable(text, shown):
    assert printable(text) == shown


def test_error_lines_escape_what_they_quote(home, tmp_path):
    line = one_error(run_cli(home, "enqueue", "--file", str(tmp_path / "no\x1b]0;PWNED\x07")), 2)
    assert no_raw_controls(line) and r"no\x1b]0;PWNED\x07" in line, repr(line)


def test_the_pools_own_lines_are_escaped(capfd):
    supervisor.say("job x of worker 1: dead after 1 run(s): exit code 1: \x1b]0;PWNED\x07")
    err = capfd.readouterr().err
    assert err.endswith(r"exit code 1: \x1b]0;PWNED\x07" + "\n") and no_raw_controls(err)


# -- bug 7: worker status and worker stop agree -----------------------------------------------------

def test_a_copy_of_a_live_home_lists_none_of_the_originals_workers(home, tmp_path, pools):
    _, sup, workers, _ = start(pools, 2)
    wait_until(lambda: len(worker_rows(home)) == 2, what="both workers to register")
    copy = str(tmp_path / "copy")
    shutil.copytree(home, copy)  # `cp -r` while the pool runs: its rows and its pidfile come along
    assert json.loads(ok(copy, "status", "--json").stdout)["workers"] == []
    assert worker_rows(copy) == []
    assert "No live workers." in ok(copy, "status").stdout
    # The copy's `worker stop` agrees: nothing of its own runs, and the original's pool is left alone.
    assert "No worker pools are running" in ok(copy, "worker", "stop", "--timeout", "30").stderr
    assert alive(sup) and all(alive(pid) for pid in workers)
    assert sorted(w["pid"] for w in worker_rows(home)) == sorted(workers)


def test_worker_stop_finds_a_pool_whose_pidfile_is_gone(home, workdir, pools):
    pool_id, sup, workers, _ = start(pools, 2)
    wait_until(lambda: len(worker_rows(home)) == 2, what="both workers to register")
    os.unlink(os.path.join(home, f"pool-{pool_id}.pid"))
    result = ok(home, "worker", "stop", "--timeout", "60")
    assert "Stopped 1 pool" in result.stderr
    wait_until(lambda: not alive(sup) and not any(alive(pid) for pid in workers), what="the pool to exit")
    assert worker_rows(home) == []


def test_worker_stop_without_a_pidfile_lets_a_running_job_finish(home, workdir, pools):
    pool_id, sup, workers, _ = start(pools, 1)
    marker = os.path.join(workdir, "started")
    ok(home, "enqueue", "--id", "slow", f"touch {marker}; sleep 2; echo done", cwd=workdir)
    wait_until(lambda: os.path.exists(marker), timeout=60, what="the job to start")
    os.unlink(os.path.join(home, f"pool-{pool_id}.pid"))
    ok(home, "worker", "stop", "--timeout", "60")
    assert job_state(home, "slow")["state"] == "completed"
    assert not alive(sup) and not alive(workers[0])


def test_worker_stop_still_stops_pools_when_the_table_cannot_be_read(home, pools):
    _, sup, workers, _ = start(pools)
    with open(os.path.join(home, "config.json"), "w") as handle:
        handle.write("{not json")
    result = ok(home, "worker", "stop", "--timeout", "60")
    assert "pidfiles only" in result.stderr and "Stopped 1 pool" in result.stderr
    assert not alive(sup) and not any(alive(pid) for pid in workers)


def _pretender(home: str, hold: bool) -> subprocess.Popen:
    """A process whose command line reads `queuectl --home HOME worker start`, holding the home open
    or not: what a reused PID could look like at its worst."""
    code = ("import os, sys, time\n"
            f"fd = os.open({home!r}, os.O_RDONLY) if {hold} else None\n"
            "print('ready', flush=True)\ntime.sleep(300)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, "queuectl", "--home", home, "worker", "start"],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


# (who holds the PID the row names, when the row says that worker registered)
STRANGERS = {
    "not-queuectl": (lambda home: subprocess.Popen(["sleep", "300"], start_new_session=True), 60),
    "started-after-the-row": (lambda home: _pretender(home, hold=True), -60),
    "not-holding-this-home": (lambda home: _pretender(home, hold=False), 60),
}


@pytest.mark.parametrize("who", STRANGERS)
def test_worker_stop_signals_no_stranger_a_worker_row_names(home, pools, who):
    """A row of this host and home whose PID now belongs to someone else: never signalled."""
    ok(home, "status")
    make, registered_in = STRANGERS[who]
    stranger = make(home)
    try:
        store = Store.open(os.path.join(home, "queue.db"))
        try:
            store.register_worker("ab12cd-1", stranger.pid, "ab12cd", HOST, os.path.realpath(home),
                                  time.time() + registered_in)
            store.heartbeat("ab12cd-1", time.time())
        finally:
            store.close()
        assert [w["pid"] for w in worker_rows(home)] == [stranger.pid]  # the table does name it
        assert "No worker pools are running" in ok(home, "worker", "stop", "--timeout", "10").stderr
        assert one_error(run_cli(home, "worker", "stop", "--pool", "ab12cd"), 1)
        assert stranger.poll() is None and alive(stranger.pid), "worker stop signalled a stranger"
    finally:
        stranger.kill()
        stranger.wait()


# -- pools: --pool, the note at start, the run's PID ------------------------------------------------

def test_worker_stop_pool_stops_only_that_pool(home, pools):
    first, sup1, workers1, said = start(pools)
    assert "other pool" not in said
    second, sup2, workers2, said = start(pools)
    assert f"1 other pool already run in this queue home: {first} " in said
    third, _, _, said = start(pools)
    assert "2 other pools already run in this queue home: " in said
    assert first in said and second in said
    result = ok(home, "worker", "stop", "--pool", second, "--timeout", "60")
    assert "Stopped 1 pool" in result.stderr
    assert not alive(sup2) and not any(alive(pid) for pid in workers2)
    assert alive(sup1) and all(alive(pid) for pid in workers1)
    assert not os.path.exists(os.path.join(home, f"pool-{second}.pid"))
    assert {w["pool"] for w in worker_rows(home)} == {first, third}


@pytest.mark.parametrize("pool, code, words", [
    ("abcdef", 1, "no pool abcdef runs in this queue home (running: "),
    ("xyz", 2, "invalid pool id 'xyz'"),
    ("\x1b]0;x", 2, "invalid pool id '\\x1b]0;x'"),
])
def test_worker_stop_pool_refuses_what_names_no_pool_and_stops_nothing(home, pools, pool, code, words):
    _, sup, workers, _ = start(pools)
    assert words in one_error(run_cli(home, "worker", "stop", "--pool", pool), code)
    assert alive(sup) and all(alive(pid) for pid in workers)


def test_show_and_worker_status_give_the_runs_pid(home, workdir, pools):
    start(pools, 2)
    ok(home, "enqueue", "--id", "long", "sleep 120", cwd=workdir)
    wait_until(lambda: job_state(home, "long")["state"] == "processing", timeout=60, what="the run")
    rows = wait_until(lambda: [w for w in worker_rows(home) if w["run_pid"]], what="the run's PID")
    busy = [w for w in worker_rows(home) if w["job"] == "long"]
    assert len(rows) == 1 and busy == rows
    run_pid = rows[0]["run_pid"]
    assert group_of(run_pid) == run_pid  # it leads the run's process group
    with open(f"/proc/{run_pid}/cmdline", "rb") as handle:
        assert handle.read().split(b"\0")[:3] == [b"/bin/sh", b"-c", b"sleep 120"]
    assert [w["run_pid"] for w in worker_rows(home) if w["job"] is None] == [None]
    assert f"pid:         {run_pid}\n" in ok(home, "show", "long").stdout
    table = ok(home, "worker", "status").stdout
    assert "RUN PID" in table and str(run_pid) in table
    ok(home, "worker", "stop", "--force", "--timeout", "60")
    assert job_state(home, "long")["state"] == "pending"
    assert "pid:" not in ok(home, "show", "long").stdout


# -- bug 8: home errors ---------------------------------------------------------------------------

def test_a_home_that_is_a_file_is_bad_input_saying_so(tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0::/root:/bin/sh\n")
    for home in (passwd, passwd / "qhome"):
        line = one_error(run_cli(str(home), "status"), 2)
        assert f"{home}" in line and f"{passwd} is not a directory" in line, line
    assert passwd.read_text() == "root:x:0:0::/root:/bin/sh\n"


def _without_root_overrides() -> None:
    """In the child before exec: drop the capabilities that let root write anywhere, so an
    unwritable directory is unwritable to it as to anyone (PR_CAPBSET_DROP: 24)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            os._exit(99)


def test_an_unwritable_home_is_named_itself(tmp_path):
    home = tmp_path / "readonly"
    home.mkdir(mode=0o500)
    home.chmod(0o500)
    result = subprocess.run([sys.executable, "-m", "queuectl", "--home", str(home), "status"],
                            capture_output=True, text=True, timeout=60,
                            preexec_fn=_without_root_overrides if os.geteuid() == 0 else None)
    if result.returncode == 99:
        pytest.skip("cannot drop root's capabilities here")
    line = one_error(result, 1)
    assert line == f"Error: queue home {home} is not writable", line
    assert os.listdir(home) == []
