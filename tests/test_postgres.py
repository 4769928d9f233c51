"""One PostgreSQL database shared by several queue homes, as hosts share it (SPEC: "One host or
many: the database"): each job runs once whichever host takes it, a dead host's job is taken
back by another, `logs` of a run elsewhere names the host, a password in the URL shows nowhere,
a bad URL is one error line, and a server restart under a running pool loses no job.

Each "host" is a queue home of its own; where `unshare --uts` works, its pool runs in a UTS
namespace of its own with its own host name, so the runs name two hosts.
"""
from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest

from conftest import (DB_URLS, Pools, cli_env, gated_enqueues, job_state, private_pg_server, query, run_cli,
                      schema_url, show_pool_log, wait_until)
import pg

pytestmark = [pytest.mark.postgres_only, pytest.mark.timeout(240)]

HOST_A, HOST_B = "qctl-host-a", "qctl-host-b"


@functools.lru_cache(maxsize=None)
def uts_unavailable() -> str:
    """Why pools cannot get host names of their own here ('' when they can)."""
    try:
        result = subprocess.run(["unshare", "--uts", "sh", "-c", "hostname qctl-probe && hostname"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unshare --uts is not available: {exc}"
    if result.returncode != 0 or result.stdout.strip() != "qctl-probe":
        return f"unshare --uts does not work here: {result.stderr.strip() or result.stdout.strip()}"
    return ""


def as_host(host: str | None, argv: list) -> list:
    """`argv` run with host name `host` (its own UTS namespace); as is when `host` is None."""
    if host is None:
        return argv
    return ["unshare", "--uts", "sh", "-c", f'hostname {host} && exec "$@"', "sh", *argv]


def queuectl(home: str, *args: str) -> list:
    return [sys.executable, "-m", "queuectl", "--home", home, *args]


def run_as(host: str | None, home: str, *args: str, timeout: float = 60, env: dict | None = None):
    return subprocess.run(as_host(host, queuectl(home, *args)), capture_output=True, text=True, timeout=timeout,
                          env=cli_env(home, env), stdin=subprocess.DEVNULL)


class HostPools(Pools):
    """Detached pools of one queue home run under a host name of their own; always stopped."""

    def __init__(self, home: str, host: str | None) -> None:
        super().__init__(home)
        self.host = host

    def start(self, count: int = 1, *extra: str) -> list:
        result = run_as(self.host, self.home, "worker", "start", "--count", str(count), "--detach", *extra)
        assert result.returncode == 0, result.stderr
        found = [(line.split()[0], int(line.split()[1])) for line in result.stdout.splitlines()]
        self.pids.extend(pid for _, pid in found)
        return found

    def stop(self, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return run_as(self.host, self.home, "worker", "stop", *extra, timeout=timeout)

    def cleanup(self) -> None:
        show_pool_log(self.home)
        try:
            self.stop("--force", "--timeout", "20", timeout=40)
        except subprocess.SubprocessError:
            pass
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def hosts(home, tmp_path, request):
    """Two queue homes on the test's database: (home A, home B) and their pools (A, B), each
    pool under its own host name where unshare works."""
    home_b = str(tmp_path / "qhome-b")
    DB_URLS[os.path.abspath(home_b)] = DB_URLS[os.path.abspath(home)]
    named = not uts_unavailable()
    pools_a = HostPools(home, HOST_A if named else None)
    pools_b = HostPools(home_b, HOST_B if named else None)
    yield home, home_b, pools_a, pools_b
    pools_a.cleanup()
    pools_b.cleanup()
    DB_URLS.pop(os.path.abspath(home_b), None)


def ok(home: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    result = run_cli(home, *args, **kwargs)
    assert result.returncode == 0, (args, result.stderr)
    return result


def live_workers(home: str) -> list:
    result = run_cli(home, "worker", "status", "--json")
    return json.loads(result.stdout) if result.returncode == 0 else []


def settled(home: str, total: int):
    result = run_cli(home, "status", "--json")
    if result.returncode != 0:
        return None
    counts = json.loads(result.stdout)
    if counts["total"] == total and counts["completed"] + counts["dead"] == total:
        return counts
    return None


def ledger_lines(path: str) -> list:
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return handle.read().split()


def enqueue_batch(home: str, jobs: list, cwd: str) -> None:
    ok(home, "enqueue", "--file", "-", input="\n".join(json.dumps(job) for job in jobs), cwd=cwd)


# -- (a) two hosts, one database: every job exactly once -------------------------------------------

def test_two_hosts_sharing_a_database_run_every_job_exactly_once(hosts, workdir):
    home_a, home_b, pools_a, pools_b = hosts
    ledger = os.path.join(workdir, "ledger")
    pools_a.start(3)
    pools_b.start(3)
    wait_until(lambda: len(live_workers(home_a)) == 6, timeout=30, interval=0.2, what="six workers of two hosts")
    record = f"echo $QUEUECTL_JOB_ID >> {ledger}"  # one short O_APPEND write a job
    batches = {home: [{"id": f"{tag}-{n:03d}", "command": record} for n in range(300)]
               for home, tag in ((home_a, "a"), (home_b, "b"))}
    # Both homes enqueue at once, while both pools drain.
    enqueuers = [subprocess.Popen(queuectl(home, "enqueue", "--file", "-"), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir,
                                  env=cli_env(home)) for home in batches]
    for proc, jobs in zip(enqueuers, batches.values()):
        out, err = proc.communicate("\n".join(json.dumps(job) for job in jobs), timeout=60)
        assert proc.returncode == 0, err
    expected = sorted(job["id"] for jobs in batches.values() for job in jobs)
    counts = wait_until(lambda: settled(home_b, 600), timeout=120, interval=0.5, what="600 jobs to finish")
    assert counts["completed"] == 600, counts

    ran = ledger_lines(ledger)
    assert len(ran) == len(set(ran)) == 600, f"{len(ran)} runs of {len(set(ran))} jobs"
    assert sorted(ran) == expected
    assert query(home_a, "SELECT count(*) FROM runs")[0][0] == 600
    assert query(home_a, "SELECT count(*) FROM runs WHERE outcome <> 'completed'")[0][0] == 0
    both = {row[0] for row in query(home_a, "SELECT DISTINCT host FROM runs")}
    why = uts_unavailable()
    if why:
        pytest.skip(f"every job ran exactly once; the two host names were not checked: {why}")
    assert both == {HOST_A, HOST_B}, both
    # And as `show --json` tells it, from either home.
    for job_id in ("a-000", "b-299"):
        runs = job_state(home_a, job_id)["runs"]
        assert [r["host"] in (HOST_A, HOST_B) for r in runs] == [True]
        assert job_state(home_b, job_id)["runs"] == runs


# -- (b) a dead host's job is taken back by the other host ------------------------------------------

def test_a_job_of_a_host_killed_mid_run_is_taken_back_by_the_other_host(hosts, workdir):
    home_a, home_b, pools_a, pools_b = hosts
    ok(home_a, "config", "set", "lease_seconds", "2")  # in the database: both hosts go by it
    ok(home_b, "config", "set", "backoff_base", "1")
    assert run_cli(home_b, "config", "get", "lease_seconds").stdout == "2\n"
    marker, pgid_file = os.path.join(workdir, "first"), os.path.join(workdir, "pgid")
    command = f"if [ -e {marker} ]; then echo second run; else echo $$ > {pgid_file}; touch {marker}; sleep 30; fi"
    started_a = pools_a.start(1)
    ok(home_a, "enqueue", "--id", "victim", command, cwd=workdir)
    wait_until(lambda: os.path.exists(marker), timeout=30, what="host A to start the job")
    assert job_state(home_a, "victim")["state"] == "processing"
    pools_b.start(2)  # host B comes up while A holds the job
    pgid = int(ledger_lines(pgid_file)[0])
    try:
        # Host A dies as a machine does: every process of its pool at once, nothing recorded.
        for _, pid in started_a:
            os.kill(pid, signal.SIGKILL)
        job = wait_until(lambda: (j := job_state(home_b, "victim"))["state"] == "completed" and j, timeout=60,
                         interval=0.3, what="host B to take the job back and run it again")
    finally:
        try:
            os.killpg(pgid, signal.SIGKILL)  # the dead host's run, left behind
        except ProcessLookupError:
            pass
    assert job["attempts"] == 2
    runs = job["runs"]
    assert [(r["attempt"], r["outcome"], r["error"]) for r in runs] == \
        [(1, "lost", "worker lost"), (2, "completed", None)], runs
    if not uts_unavailable():
        assert (runs[0]["host"], runs[1]["host"]) == (HOST_A, HOST_B), runs
    assert runs[1]["output_tail"] == "second run\n"


# -- (c) logs of a run on another host ----------------------------------------------------------------

def test_logs_of_a_job_that_ran_on_the_other_host_show_its_stored_tail_and_name_the_host(hosts, workdir):
    why = uts_unavailable()
    if why:
        pytest.skip(f"the runs of two homes on one machine name one host: {why}")
    home_a, home_b, _, _ = hosts
    ok(home_a, "enqueue", "--id", "far", "echo first line; echo far away output", cwd=workdir)
    result = run_as(HOST_A, home_a, "worker", "start", "--burst", timeout=90)
    assert result.returncode == 0, result.stderr
    assert job_state(home_b, "far")["runs"][0]["host"] == HOST_A
    assert not os.path.exists(os.path.join(home_b, "logs", "far.log"))  # its log is in home A only

    shown = run_cli(home_b, "logs", "far")
    assert shown.returncode == 0, shown.stderr
    assert "Traceback" not in shown.stderr
    assert HOST_A in shown.stdout and "far away output" in shown.stdout, shown.stdout
    assert "first line" in shown.stdout
    followed = run_cli(home_b, "logs", "far", "--follow", timeout=30)
    assert followed.returncode == 0 and HOST_A in followed.stdout and "far away output" in followed.stdout
    # At home, the log file itself.
    local = run_as(HOST_A, home_a, "logs", "far")
    assert local.returncode == 0 and "far away output" in local.stdout and "run 1 of job far" in local.stdout


# -- (d) the password -------------------------------------------------------------------------------

SECRET = "sekrit123"


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{parts.username or 'postgres'}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@pytest.fixture
def secret_home(home, pg_url):
    """`home` on the test's database through a URL holding a password (the server's own when the
    test server's URL has one; else SECRET, which trust authentication ignores)."""
    parts = urlsplit(pg_url)
    secret = parts.password or SECRET
    url = pg_url if parts.password else with_password(pg_url, SECRET)
    reason = pg.answers(url, timeout=5)
    if reason is not None:
        pytest.skip(f"the test server does not take a URL with a password: {reason}")
    DB_URLS[os.path.abspath(home)] = url
    return home, secret


def test_a_password_in_the_url_appears_in_no_output_and_no_file(secret_home, workdir, pools):
    home, secret = secret_home
    outputs = []

    def run(*args, **kwargs):
        result = run_cli(home, *args, **kwargs)
        outputs.append((args, result.stdout + result.stderr))
        assert result.returncode == 0, (args, result.stderr)
        return result

    run("enqueue", "--id", "env", "--cmd", f"env; {sys.executable} -m queuectl status || true", cwd=workdir)
    run("enqueue", "--id", "bad", "--max-retries", "0", "exit 3", cwd=workdir)
    run("config", "set", "poll_interval", "0.2")
    supervisor, *workers = pools.start(2)
    wait_until(lambda: settled(home, 2), timeout=60, interval=0.3, what="both jobs to finish")
    for pid in [supervisor, *workers]:  # not in argv, where `ps` shows it
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            assert secret.encode() not in handle.read()
    for args in (("status",), ("list", "--json"), ("show", "env", "--json"), ("show", "bad"), ("logs", "env"),
                 ("worker", "status"), ("worker", "status", "--json"), ("config", "get"),
                 ("config", "get", "max_retries"), ("check",)):
        result = run_cli(home, *args)
        outputs.append((args, result.stdout + result.stderr))
    assert pools.stop().returncode == 0
    leaked = [args for args, text in outputs if secret in text]
    assert leaked == [], f"the password shows in the output of {leaked}"
    files = []
    for root, _, names in os.walk(home):
        for name in names:
            path = os.path.join(root, name)
            files.append(path)
            with open(path, "rb") as handle:
                assert secret.encode() not in handle.read(), f"the password is in {path}"
    assert os.path.join(home, "logs", "env.log") in files, files  # the job's environment, and its own queuectl


@pytest.mark.parametrize("url", [
    "postgresql://nobody@127.0.0.1:1/x",  # nothing listens
    f"postgresql://nobody:{SECRET}@127.0.0.1:1/x",  # ... with a password, which must not show
    "postgresql://postgres@127.0.0.1:1/x?connect_timeout=2",
])
@pytest.mark.parametrize("args", [("status",), ("enqueue", "true"), ("list", "--json"), ("worker", "start", "--burst")])
def test_a_database_that_cannot_be_reached_is_one_error_line(home, url, args):
    result = run_cli(home, "--db", url, *args, timeout=60)
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr and SECRET not in result.stderr + result.stdout
    assert result.stdout == "" or args[0] == "worker"


def test_an_unknown_database_on_a_real_server_is_one_error_line(home, pg_url):
    parts = urlsplit(pg_url)
    url = urlunsplit((parts.scheme, parts.netloc, "/queuectl_no_such_database", "", ""))
    result = run_cli(home, "--db", url, "status")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("url", ["mysql://x", "sqlite:///tmp/x.db", "postgresql:/nohost", "x"])
def test_a_url_that_is_not_postgresql_is_refused_with_exit_2(home, url):
    for result in (run_cli(home, "--db", url, "status"), run_cli(home, "status", env={"QUEUECTL_DB": url})):
        assert result.returncode == 2, (result.returncode, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.stderr


# -- (e) a server restart under a running pool ----------------------------------------------------------

@pytest.fixture
def private_home(tmp_path, backend):
    """A queue home on a schema of this session's private server (which the test may restart)."""
    server = private_pg_server()
    url, schema = schema_url(server.url)
    path = str(tmp_path / "qhome-private")
    DB_URLS[os.path.abspath(path)] = url
    yield path, server
    DB_URLS.pop(os.path.abspath(path), None)
    pg.drop_schema(server.url, schema)


@pytest.mark.timeout(300)
def test_a_server_restart_under_a_running_pool_loses_no_job_and_runs_none_twice(private_home, workdir):
    home, server = private_home
    ledger = os.path.join(workdir, "ledger")
    jobs = [{"id": f"r{n:02d}", "command": f"sleep 2; echo $QUEUECTL_JOB_ID >> {ledger}"} for n in range(12)]
    enqueue_batch(home, jobs, workdir)
    pools = Pools(home)
    try:
        pools.start(3)
        wait_until(lambda: len(ledger_lines(ledger)) >= 2, timeout=60, what="the first runs to end")
        server.restart()  # fast: every connection is cut, runs in progress go on
        counts = wait_until(lambda: settled(home, len(jobs)), timeout=120, interval=0.5,
                            what="every job to finish after the restart")
        assert counts["completed"] == len(jobs), counts
        assert pools.stop().returncode == 0
    finally:
        pools.cleanup()
    ran = ledger_lines(ledger)
    assert sorted(ran) == sorted(job["id"] for job in jobs), ran  # each exactly once, none lost
    runs = query(home, "SELECT count(*), count(*) FILTER (WHERE outcome = 'completed') FROM runs")[0]
    assert tuple(runs) == (len(jobs), len(jobs))


# -- first use of a fresh database by many processes at once --------------------------------------------

def test_24_concurrent_first_enqueues_create_the_schema_once(home, workdir):
    """The tables do not exist yet: 24 processes race to create them; all enqueue."""
    failures = gated_enqueues(home, 24, workdir, timeout=120)
    assert failures == [], failures[:5]
    counts = json.loads(ok(home, "status", "--json").stdout)
    assert (counts["pending"], counts["total"]) == (24, 24)
