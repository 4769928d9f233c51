"""Shared fixtures: a temporary queue home, the real CLI (in-process and as a subprocess),
polling with a deadline, and worker pools that are always stopped.

The backend: a test module that sets `pytestmark = pytest.mark.both_backends` runs each of its
tests that use a queue home (`home`, `db_path`, `store`, `cli`, `pools`...) twice, on SQLite
(id `sqlite`) and on PostgreSQL (id `pg`, a fresh schema per test, see pg.py); a test marked
`sqlite_only` runs once, on SQLite; `postgres_only` tests run on PostgreSQL only. A home's
database URL is kept in `DB_URLS`, so `run_cli(home, ...)`, `Cli`, `Pools`, `query` and
`open_home_store` reach the right database from the home's path alone."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

import pg
from queuectl.cli import cli as cli_group

# The tests choose each home's database themselves: never one from the caller's environment.
os.environ.pop("QUEUECTL_DB", None)

BACKENDS = ["sqlite", "postgres"]
BACKEND_IDS = {"sqlite": "sqlite", "postgres": "pg"}
DB_URLS: dict = {}  # queue home path -> the PostgreSQL URL of its database (absent: its SQLite file)
_SERVER = pg.ServerChoice()


def pytest_configure(config):
    config.addinivalue_line("markers", "both_backends: run the module's home-using tests on SQLite and PostgreSQL")
    config.addinivalue_line("markers", "sqlite_only: SQLite-specific (files, PRAGMA, migrations): SQLite only")
    config.addinivalue_line("markers", "postgres_only: run on PostgreSQL only")


def pytest_generate_tests(metafunc):
    if "backend" not in metafunc.fixturenames:
        return
    node = metafunc.definition
    if node.get_closest_marker("sqlite_only"):
        return
    if node.get_closest_marker("postgres_only"):
        chosen = ["postgres"]
    elif node.get_closest_marker("both_backends"):
        chosen = BACKENDS
    else:
        return
    metafunc.parametrize("backend", chosen, indirect=True, ids=[BACKEND_IDS[b] for b in chosen])


def pytest_collection_modifyitems(config, items):
    """A parameter set marked `sqlite_only` (pytest.param(..., marks=...)) runs on SQLite only."""
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_pg = callspec is not None and callspec.params.get("backend") == "postgres"
        (dropped if on_pg and item.get_closest_marker("sqlite_only") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_sessionfinish(session, exitstatus):
    _close_query_connections()
    _SERVER.close()


def _unavailable(reason: str):
    if pg.IN_CI:
        pytest.fail(f"PostgreSQL tests must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def postgres_store_missing() -> str:
    """Why the product cannot open a PostgreSQL store here, or ''."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]')"
    try:
        from queuectl.store.postgres import PostgresStore  # noqa: F401
    except Exception as exc:  # missing module or broken import
        return f"PostgreSQL store not available: {type(exc).__name__}: {exc}"
    return ""


def pg_base_url() -> str:
    """The test server's URL (no schema), or skip (fail in CI) saying why there is none."""
    try:
        return _SERVER.url()
    except pg.Unavailable as exc:
        _unavailable(str(exc))


def private_pg_server() -> "pg.PrivateServer":
    """This session's own server (started on first use), for tests that restart it."""
    try:
        return _SERVER.private_server()
    except pg.Unavailable as exc:
        _unavailable(f"no private PostgreSQL server: {exc}")


@pytest.fixture
def backend(request):
    """"sqlite" or "postgres" (see the module docstring)."""
    chosen = getattr(request, "param", "sqlite")
    if chosen == "postgres":
        missing = postgres_store_missing()
        if missing:
            _unavailable(missing)
        pg_base_url()
    return chosen


@pytest.fixture
def pg_url(backend):
    """For a PostgreSQL test: a URL whose connections use a fresh schema, dropped after the test;
    None on SQLite."""
    if backend != "postgres":
        yield None
        return
    base = pg_base_url()
    schema = pg.create_schema(base)
    url = pg.with_schema(base, schema)
    try:
        yield url
    finally:
        _close_query_connections(url)
        pg.drop_schema(base, schema)


def schema_url(base: str) -> tuple:
    """(url, schema) on `base` with a fresh schema; the caller drops it with pg.drop_schema."""
    schema = pg.create_schema(base)
    return pg.with_schema(base, schema), schema


def db_url(home: str):
    """The PostgreSQL URL of `home`'s database, None for its SQLite file."""
    return DB_URLS.get(os.path.abspath(home))


def cli_env(home: str, env: dict | None = None) -> dict:
    """The environment of a `queuectl` subprocess for `home` ($QUEUECTL_DB: never in argv)."""
    full = {**os.environ}
    full.pop("QUEUECTL_DB", None)
    url = db_url(home)
    if url is not None:
        full["QUEUECTL_DB"] = url
    full.update(env or {})
    return full


def store_sql(store, sql: str, params: tuple = ()) -> list:
    """Rows of `sql` run on the store's own connection (to look under the interface); `?`
    placeholders work on both backends."""
    conn = store._conn
    if isinstance(conn, sqlite3.Connection):
        return conn.execute(sql, params).fetchall()
    cursor = conn.execute(sql.replace("%", "%%").replace("?", "%s"), params)
    return cursor.fetchall() if cursor.description is not None else []


def open_home_store(home: str, durable: bool = True):
    """The store of `home`'s queue (created if needed), on whichever backend the home uses."""
    from queuectl.home import QueueHome

    return QueueHome(home, db_url(home)).ensure().open_store(durable)


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def home(tmp_path, pg_url):
    path = str(tmp_path / "qhome")
    if pg_url is not None:
        DB_URLS[os.path.abspath(path)] = pg_url
    yield path
    DB_URLS.pop(os.path.abspath(path), None)


@pytest.fixture
def db_path(home):
    from queuectl.home import QueueHome

    return QueueHome(home).ensure().db_path


@pytest.fixture
def store(db_path, pg_url):
    """A store opened on a fresh queue home's database, closed after the test."""
    from queuectl.store import open_store

    opened = open_store(db_path, pg_url)
    yield opened
    opened.close()


@pytest.fixture
def workdir(tmp_path):
    path = tmp_path / "work"
    path.mkdir()
    return str(path)


class Cli:
    """The CLI in-process (CliRunner), for fast tests of commands that start no workers."""

    def __init__(self, home: str) -> None:
        self.home = home
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None):
        url = db_url(self.home)
        chosen = ["--db", url] if url is not None else []
        return self.runner.invoke(cli_group, ["--home", self.home, *chosen, *args], input=input)

    def json(self, *args: str):
        result = self(*args, "--json")
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def cli(home):
    return Cli(home)


def run_cli(home: str, *args: str, input: str | None = None, timeout: float = 60, cwd: str | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a separate process (its database, if not the home's file, in
    $QUEUECTL_DB)."""
    return subprocess.run(
        [sys.executable, "-m", "queuectl", "--home", home, *args],
        input=input, capture_output=True, text=True, timeout=timeout, cwd=cwd,
        env=cli_env(home, env),
    )


class Pools:
    """Starts detached pools and guarantees they are gone when the test ends."""

    def __init__(self, home: str) -> None:
        self.home = home
        self.pids: list = []

    def start(self, count: int = 1, *extra: str) -> list:
        result = run_cli(self.home, "worker", "start", "--count", str(count), "--detach", *extra)
        assert result.returncode == 0, result.stderr
        pids = [int(line.split()[1]) for line in result.stdout.splitlines()]
        self.pids.extend(pids)
        return pids

    def stop(self, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return run_cli(self.home, "worker", "stop", *extra, timeout=timeout)

    def cleanup(self) -> None:
        show_pool_log(self.home)  # captured: pytest shows it when the test failed
        run_cli(self.home, "worker", "stop", "--force", "--timeout", "20", timeout=40)
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def show_pool_log(home: str, lines: int = 40) -> None:
    path = os.path.join(home, "pools.log")
    if os.path.exists(path):
        with open(path, errors="replace") as handle:
            tail = handle.read().splitlines()[-lines:]
        print(f"--- the last {len(tail)} lines of {path}:", *tail, sep="\n")


@pytest.fixture
def pools(home):
    manager = Pools(home)
    yield manager
    manager.cleanup()


_QUERY_CONNECTIONS: dict = {}  # PostgreSQL URL -> an open autocommit connection, for polling


def _close_query_connections(url: str | None = None) -> None:
    for key in [url] if url is not None else list(_QUERY_CONNECTIONS):
        conn = _QUERY_CONNECTIONS.pop(key, None)
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass


def query(home: str, sql: str, params: tuple = ()) -> list:
    """A read straight from the database (fast enough to poll every few milliseconds). On
    PostgreSQL the SQL's `?` placeholders become `%s`: portable SQL works on both."""
    url = db_url(home)
    if url is not None:
        conn = _QUERY_CONNECTIONS.get(url)
        if conn is None or conn.closed or conn.broken:
            conn = _QUERY_CONNECTIONS[url] = pg.connect(url, timeout=10)
        try:
            return conn.execute(sql.replace("%", "%%").replace("?", "%s"), params).fetchall()
        except Exception:
            _close_query_connections(url)
            raise
    conn = sqlite3.connect(os.path.join(home, "queue.db"), timeout=60, isolation_level=None)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def job_state(home: str, job_id: str) -> dict:
    result = run_cli(home, "show", job_id, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# What a gated enqueue runs: import everything, say it is ready, wait for the gate, then be
# `queuectl ARGS...` (the race is what follows the imports, not the imports themselves).
GATED_CLI = r"""
import os, runpy, sys
import queuectl.cli, queuectl.jobspec, queuectl.store.{backend}
ready, go = int(sys.argv[1]), int(sys.argv[2])
os.write(ready, b".")
os.close(ready)
os.read(go, 1)  # released all at once
os.close(go)
sys.argv = ["queuectl"] + sys.argv[3:]
runpy.run_module("queuectl", run_name="__main__", alter_sys=True)
"""


def gated_enqueues(home: str, count: int, cwd: str, timeout: float, at_the_gate=lambda: None) -> list:
    """`count` processes each enqueue a job `race-N`, released at the same instant once every
    one has started (`at_the_gate()` runs while they wait); returns the failures:
    (id, exit code, stderr) of each that did not print its id alone and exit 0."""
    backend = "sqlite" if db_url(home) is None else "postgres"
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    procs = []
    try:
        for n in range(count):
            procs.append(subprocess.Popen(
                [sys.executable, "-c", GATED_CLI.format(backend=backend), str(ready_w), str(go_r), "--home", home,
                 "enqueue", "--id", f"race-{n}", "-q", f"echo {n}"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                pass_fds=(ready_w, go_r), env=cli_env(home)))
        os.close(ready_w)
        ready_w = None
        got = b""
        while len(got) < len(procs):  # every process has started, imported, and waits at the gate
            chunk = os.read(ready_r, 4096)
            assert chunk, "a gated enqueue died before the gate"
            got += chunk
        at_the_gate()
        os.write(go_w, b"x" * len(procs))
        results = [(p.args[-3], *p.communicate(timeout=timeout), p.returncode) for p in procs]
    finally:
        for fd in (ready_r, ready_w, go_r, go_w):
            if fd is not None:
                os.close(fd)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(job_id, code, err) for job_id, out, err, code in results
            if code != 0 or err or out.strip() != job_id]
