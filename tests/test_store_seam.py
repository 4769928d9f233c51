"""The seam between the code and its database: choosing the backend from --db/$QUEUECTL_DB,
never showing a URL's password, and psycopg imported only when a PostgreSQL URL is used."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from queuectl.errors import BadInput
from queuectl.store import redact, resolve_url


@pytest.mark.parametrize("url, shown", [
    # no password: as it is
    ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
    # a password in the authority
    ("postgresql://u:s3cret@h:5432/db", "postgresql://u:***@h:5432/db"),
    # one in the query, beside other parameters that stay
    ("postgresql://u@h/db?password=s3cret&sslmode=require", "postgresql://u@h/db?sslmode=require"),
    # an IPv6 host keeps its brackets
    ("postgresql://u:s3cret@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
    # unparsable (a port that is not a number): only the scheme is left
    ("postgresql://u:s3cret@h:port/db", "postgresql://…"),
])
def test_redact_hides_every_password(url, shown):
    assert redact(url) == shown
    assert "s3cret" not in redact(url)


def test_the_option_wins_over_the_environment_and_an_empty_variable_is_unset():
    env = {"QUEUECTL_DB": "postgresql://env@h/db"}
    assert resolve_url("postgresql://opt@h/db", env) == "postgresql://opt@h/db"
    assert resolve_url(None, env) == "postgresql://env@h/db"
    assert resolve_url(None, {"QUEUECTL_DB": ""}) is None
    assert resolve_url(None, {}) is None


@pytest.mark.parametrize("option, env", [
    ("", {}),                                   # --db ""
    ("mysql://u@h/db", {}),                     # another database
    (None, {"QUEUECTL_DB": "/tmp/queue.db"}),   # a path, not a URL
    ("postgresql:/h/db", {}),                   # no //
])
def test_anything_but_a_postgresql_url_is_bad_input(option, env):
    with pytest.raises(BadInput):
        resolve_url(option, env)


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


def test_sqlite_commands_never_import_psycopg(tmp_path):
    code = ("import sys; from queuectl.cli import cli\n"
            "try:\n    cli(['--home', sys.argv[1], 'status'])\nexcept SystemExit:\n    pass\n"
            "print('psycopg' in sys.modules)")
    result = _python(code, str(tmp_path / "home"))
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr


def test_a_postgresql_url_without_psycopg_is_one_clear_error(tmp_path):
    code = ("import sys; sys.modules['psycopg'] = None\n"  # as if not installed: importing it fails
            "from queuectl.cli import main; sys.argv = ['queuectl', '--home', sys.argv[1],"
            " '--db', 'postgresql://u:s3cret@127.0.0.1:1/db', 'status']; main()")
    result = _python(code, str(tmp_path / "home"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: a PostgreSQL database needs psycopg: pip install 'queuectl[postgres]'"]


def test_only_the_store_speaks_to_databases_and_only_the_executor_spawns():
    """STYLE's layering, held by a test: sqlite3 and psycopg are imported only under
    queuectl/store/ (psycopg only by postgres.py), subprocess only by the executor, and no
    module above the store names a backend's module."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent / "queuectl"
    importing = {}
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(root).as_posix()
        for module in ("sqlite3", "psycopg", "subprocess"):
            if re.search(rf"^\s*(import {module}\b|from {module}\b)", text, re.M):
                importing.setdefault(module, set()).add(name)
        if not name.startswith("store/"):
            assert not re.search(r"store\.(sqlite|postgres)\b|store import (sqlite|postgres)", text), name
    assert importing["sqlite3"] == {"store/__init__.py", "store/sqlite.py"}
    assert importing["psycopg"] == {"store/postgres.py"}
    assert importing["subprocess"] == {"executor.py"}


@pytest.mark.postgres_only
def test_a_host_whose_clock_is_an_hour_off_goes_by_the_servers_clock(pg_url, tmp_path):
    """Times come from the database server: a host an hour ahead still enqueues a job due now,
    and its store's clock agrees with the server's to within a few milliseconds."""
    code = (
        "import json, sys, time\n"
        "real = time.time\n"
        "time.time = lambda: real() + 3600  # this host's clock, an hour fast\n"
        "from queuectl.store import open_store\n"
        "store = open_store('', sys.argv[1])\n"
        "server = store._conn.execute('SELECT extract(epoch FROM clock_timestamp())::float8').fetchone()[0]\n"
        "print(json.dumps({'clock': store.clock(), 'server': server, 'local': time.time()}))\n"
    )
    found = json.loads(_python(code, pg_url).stdout)
    assert abs(found["clock"] - found["server"]) < 0.5
    assert found["local"] - found["server"] > 3500  # the host's own clock was off indeed


@pytest.mark.both_backends
def test_a_run_whose_output_holds_nul_bytes_is_recorded(store):
    """A job's output may hold NUL bytes; PostgreSQL's text cannot: the run is still recorded
    (a worker would otherwise retry recording it forever), NUL shown as U+FFFD there."""
    from queuectl.models import NewJob, Run

    store.insert([NewJob("nul", "printf 'a\\0b'", 0, 0, None, 0.0, "/tmp")], now=0.0)
    job = store.claim_next("w1", 1.0)
    with store.transaction():
        assert store.mark_dead(job, "w1", 3, "exit code 3: a\x00b", 2.0)
        store.record_run(job, Run(1, "w1", "h", 1.0, 2.0, "failed", 3, "exit code 3: a\x00b", "a\x00b\n"))
    recorded = store.runs_of(job)[0]
    assert store.get("nul").last_error in ("exit code 3: a\x00b", "exit code 3: a\ufffdb")
    assert recorded.output_tail in ("a\x00b\n", "a\ufffdb\n")


def _queuectl(home: str, url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "queuectl", "--home", home, "--db", url, *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.postgres_only
def test_the_configuration_is_shared_by_every_host_of_the_database(pg_url, tmp_path):
    first, second = str(tmp_path / "host-a"), str(tmp_path / "host-b")
    assert _queuectl(first, pg_url, "config", "set", "max_retries", "7").returncode == 0
    assert _queuectl(second, pg_url, "config", "get", "max_retries").stdout.strip() == "7"
    assert not (tmp_path / "host-a" / "config.json").exists()  # it lives in the database
    assert _queuectl(second, pg_url, "config", "reset").returncode == 0
    assert _queuectl(first, pg_url, "config", "get", "max_retries").stdout.strip() == "3"


@pytest.mark.postgres_only
def test_a_database_of_a_newer_schema_is_refused_with_its_url(store, pg_url, tmp_path):
    store._conn.execute("UPDATE queuectl_meta SET value = '99' WHERE key = 'schema_version'")
    result = _queuectl(str(tmp_path / "home"), pg_url, "status")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and "schema version 99, newer than this queuectl" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.postgres_only
@pytest.mark.timeout(120)
def test_a_command_waits_for_a_free_connection_slot(backend, tmp_path):
    """Every connection slot taken (a burst of commands): a command waits for one to free up
    rather than fail. On the private server, where filling every slot disturbs no other test."""
    import threading

    import psycopg
    import pg
    from conftest import private_pg_server, schema_url

    server = private_pg_server().url
    url, schema = schema_url(server)
    held = []
    try:
        while True:
            try:
                held.append(psycopg.connect(server, autocommit=True, connect_timeout=5))
            except psycopg.OperationalError as exc:
                assert "too many clients" in str(exc) or "reserved" in str(exc)
                break
        freed = threading.Timer(1.5, lambda: held.pop().close())
        freed.start()
        result = _queuectl(str(tmp_path / "home"), url, "enqueue", "-q", "true")
        freed.join()
        assert result.returncode == 0, result.stderr
    finally:
        for conn in held:
            conn.close()
        pg.drop_schema(server, schema)
