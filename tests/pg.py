"""The PostgreSQL server the tests use, and a private schema per test on it.

Where the server comes from, first that works:
1. $QUEUECTL_TEST_PG, a postgresql:// URL;
2. postgresql://postgres@127.0.0.1:5432/test (or its database `postgres`) when it answers within 2 s;
3. a private throwaway server, started once per test session (per xdist worker) with initdb and
   pg_ctl in a fresh temporary directory, on a free port, its socket in that directory; run as
   the `postgres` user when we are root; stopped and removed at the session's end.

When none works, the PostgreSQL tests skip with the reason, except in CI ($CI set and not
0/false/no), where they fail with it.
"""
from __future__ import annotations

import glob
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
from typing import Optional
from urllib.parse import quote, urlsplit

IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
ENV_VAR = "QUEUECTL_TEST_PG"
DEFAULT_URLS = ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/postgres")


class Unavailable(Exception):
    """No PostgreSQL for the tests; the message says why."""


def connect(url: str, timeout: float = 2.0):
    import psycopg

    return psycopg.connect(url, connect_timeout=max(1, int(timeout)), autocommit=True)


def answers(url: str, timeout: float = 2.0) -> Optional[str]:
    """None when a connection to `url` answers `SELECT 1` in time, else why not."""
    try:
        with connect(url, timeout) as conn:
            conn.execute("SELECT 1").fetchone()
        return None
    except Exception as exc:  # any failure: not usable
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def with_schema(url: str, schema: str) -> str:
    """`url` whose connections put `schema` first on their search_path (libpq's `options`)."""
    option = "options=" + quote(f"-csearch_path={schema}", safe="-")
    return url + ("&" if urlsplit(url).query else "?") + option


def new_schema_name() -> str:
    return "t_" + secrets.token_hex(6)


# -- a private server ------------------------------------------------------------------------------

def _bindir() -> Optional[str]:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return os.path.dirname(os.path.realpath(found))
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: [int(x) for x in p.split("/")[-3].split(".") if x.isdigit()])
    return os.path.dirname(candidates[-1]) if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateServer:
    """A throwaway PostgreSQL server of our own (trust auth, fsync off)."""

    def __init__(self) -> None:
        self.root = self.data = self.log = None
        self.port = 0
        self.as_postgres = False
        self.bindir = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        command = list(args)
        if self.as_postgres:
            if shutil.which("runuser"):
                command = ["runuser", "-u", "postgres", "--", *command]
            else:
                command = ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(command)]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root,
                              stdin=subprocess.DEVNULL)

    def _check(self, result: subprocess.CompletedProcess, what: str) -> None:
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            log = ""
            if self.log and os.path.exists(self.log):
                with open(self.log, errors="replace") as handle:
                    log = " | ".join(handle.read().strip().splitlines()[-3:])
            raise Unavailable(f"{what} failed (exit {result.returncode}): {' | '.join(tail)} {log}".strip())

    def start(self) -> "PrivateServer":
        self.bindir = _bindir()
        if self.bindir is None:
            raise Unavailable("no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin")
        self.as_postgres = os.geteuid() == 0
        self.root = tempfile.mkdtemp(prefix="queuectl-pg-")
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "server.log")
        if self.as_postgres:
            import pwd

            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root and there is no `postgres` user to run the server") from None
            os.chown(self.root, user.pw_uid, user.pw_gid)
        os.chmod(self.root, 0o700)
        self._check(self._run(os.path.join(self.bindir, "initdb"), "-D", self.data, "-A", "trust", "-U", "postgres",
                              "-E", "UTF8", "--no-sync", "--no-instructions", timeout=120), "initdb")
        last = None
        for _ in range(3):  # another process may take the free port between the look and the start
            self.port = _free_port()
            result = self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l", self.log, "-w", "-t", "60",
                               "-o", f"-p {self.port} -k {self.root} -h 127.0.0.1 -c fsync=off "
                                     f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                               "start", timeout=90)
            if result.returncode == 0:
                return self
            last = result
        self._check(last, "pg_ctl start")
        return self

    def restart(self) -> None:
        self._check(self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l", self.log, "-w", "-t", "60",
                              "-m", "fast", "restart", timeout=90), "pg_ctl restart")

    def stop(self) -> None:
        if self.data and os.path.isdir(self.data):
            self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-w", "-t", "30", "-m", "immediate", "stop",
                      timeout=60)
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)


# -- the choice ----------------------------------------------------------------------------------

class ServerChoice:
    """Finds the server once, lazily; remembers why when there is none."""

    def __init__(self) -> None:
        self._url: Optional[str] = None
        self._why: Optional[str] = None
        self.private: Optional[PrivateServer] = None
        self._private_why: Optional[str] = None

    def url(self) -> str:
        """The base URL of the server, or raise Unavailable."""
        if self._url is None and self._why is None:
            self._url, self._why = self._find()
        if self._url is None:
            raise Unavailable(self._why)
        return self._url

    def _find(self):
        reasons = []
        given = os.environ.get(ENV_VAR)
        if given:
            why = answers(given, timeout=10)
            if why is None:
                return given, None
            return None, f"${ENV_VAR} does not answer: {why}"
        for url in DEFAULT_URLS:
            why = answers(url)
            if why is None:
                return url, None
            reasons.append(f"{url}: {why}")
        try:
            server = self.private_server()
        except Unavailable as exc:
            reasons.append(f"a private server: {exc}")
            return None, "no PostgreSQL server for the tests: " + "; ".join(reasons)
        return server.url, None

    def private_server(self) -> PrivateServer:
        """This session's private server, started on first use."""
        if self.private is None and self._private_why is None:
            server = PrivateServer()
            try:
                self.private = server.start()
                why = answers(server.url, timeout=10)
                if why is not None:
                    raise Unavailable(f"the private server does not answer: {why}")
            except (Unavailable, OSError, subprocess.SubprocessError) as exc:
                server.stop()
                self.private = None
                self._private_why = str(exc) or type(exc).__name__
        if self.private is None:
            raise Unavailable(self._private_why)
        return self.private

    def close(self) -> None:
        if self.private is not None:
            self.private.stop()
            self.private = None


def create_schema(base_url: str) -> str:
    name = new_schema_name()
    with connect(base_url, timeout=10) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return name


def drop_schema(base_url: str, name: str) -> None:
    """Drop the schema and all in it; a connection left behind (a killed worker's) is ended first."""
    try:
        with connect(base_url, timeout=10) as conn:
            conn.execute("SET lock_timeout = '5s'")
            for _ in range(3):
                try:
                    conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
                    return
                except Exception:
                    # Backends of this test still holding locks in it: their options name the schema.
                    conn.execute("SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                                 "JOIN pg_namespace n ON n.oid = c.relnamespace "
                                 "WHERE n.nspname = %s AND l.pid <> pg_backend_pid()", (name,))
    except Exception:
        pass  # a schema left behind costs some space, not a test
