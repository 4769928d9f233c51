"""Shared fixtures: a temporary queue home, the real CLI (in-process and as a subprocess),
polling with a deadline, and worker pools that are always stopped."""
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

from queuectl.cli import cli as cli_group


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
def home(tmp_path):
    return str(tmp_path / "qhome")


@pytest.fixture
def db_path(home):
    from queuectl.home import QueueHome

    return QueueHome(home).ensure().db_path


@pytest.fixture
def store(db_path):
    """A store opened on a fresh queue home's database, closed after the test."""
    from queuectl.store.sqlite import SqliteStore as Store

    opened = Store.open(db_path)
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
        return self.runner.invoke(cli_group, ["--home", self.home, *args], input=input)

    def json(self, *args: str):
        result = self(*args, "--json")
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def cli(home):
    return Cli(home)


def run_cli(home: str, *args: str, input: str | None = None, timeout: float = 60, cwd: str | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "queuectl", "--home", home, *args],
        input=input, capture_output=True, text=True, timeout=timeout, cwd=cwd,
        env={**os.environ, **(env or {})},
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
        run_cli(self.home, "worker", "stop", "--force", "--timeout", "20", timeout=40)
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def pools(home):
    manager = Pools(home)
    yield manager
    manager.cleanup()


def query(home: str, sql: str, params: tuple = ()) -> list:
    """A read straight from the database (fast enough to poll every few milliseconds)."""
    conn = sqlite3.connect(os.path.join(home, "queue.db"), timeout=60, isolation_level=None)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def job_state(home: str, job_id: str) -> dict:
    result = run_cli(home, "show", job_id, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
