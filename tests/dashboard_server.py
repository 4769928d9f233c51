"""A real `queuectl dashboard` process on a free port, for the API and browser tests."""
from __future__ import annotations

import http.client
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Optional


class Response:
    def __init__(self, status: int, headers: dict, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        return json.loads(self.body)


class Dashboard:
    """Starts `queuectl --home HOME dashboard --port 0 ...` and reads the URL it prints."""

    def __init__(self, home: str, *extra: str, env: Optional[dict] = None) -> None:
        self.home = home
        self.process = subprocess.Popen(
            [sys.executable, "-m", "queuectl", "--home", home, "dashboard", "--port", "0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})})
        line = self._first_line(timeout=30)
        self.url = line.split(" at ", 1)[1].split()[0].rstrip("/")
        self.port = int(self.url.rsplit(":", 1)[1])
        self.csrf: Optional[str] = None

    def _first_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if ready:
                line = self.process.stdout.readline()
                if line:
                    return line
            if self.process.poll() is not None:
                raise AssertionError(f"dashboard exited {self.process.returncode}: {self.process.stderr.read()}")
        self.stop()
        raise AssertionError("the dashboard printed no URL within 30 s")

    def request(self, method: str, path: str, headers: Optional[dict] = None, body: bytes = b"",
                host: Optional[str] = None) -> Response:
        """One request on a fresh connection; `host` replaces the Host header ("" leaves it out)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            chosen = f"127.0.0.1:{self.port}" if host is None else host
            if chosen:
                conn.putheader("Host", chosen)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            if body or method == "POST":
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            response = conn.getresponse()
            return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def get(self, path: str, **kwargs) -> Response:
        return self.request("GET", path, **kwargs)

    def get_json(self, path: str):
        response = self.get(path)
        assert response.status == 200, (response.status, response.body)
        return response.json()

    def post(self, path: str, headers: Optional[dict] = None, **kwargs) -> Response:
        """A POST as the page sends it: with its CSRF token, unless `headers` say otherwise."""
        if self.csrf is None:
            self.csrf = self.get_json("/api/session")["csrf"]
        return self.request("POST", path, headers={"X-CSRF-Token": self.csrf, **(headers or {})}, **kwargs)

    def stop(self) -> str:
        """Stop it (SIGTERM, as a service manager does); returns what it wrote to stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        return self.process.stderr.read()
