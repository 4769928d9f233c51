"""The dashboard's HTTP server: routing and every security check, on the standard library.

Each request is checked in this order: size, Host header (no DNS rebinding), token (when one
is set), then for actions: POST only, not read-only, and from the dashboard's own page (no
foreign Origin or Sec-Fetch-Site, and the page's CSRF token or Sec-Fetch-Site: same-origin).
Only the three files of the page are served; everything else is JSON from `api`.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import re
import secrets
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, NamedTuple, Optional
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import BadInput, Conflict, NotFound, QueuectlError, StoreError
from ..home import QueueHome
from ..metrics import CONTENT_TYPE as METRICS_TYPE
from . import api

TOKEN_ENV = "QUEUECTL_DASHBOARD_TOKEN"
MAX_URL = 8 * 1024
MAX_BODY = 64 * 1024
MAX_CONNECTIONS = 64
IDLE_SECONDS = 30  # a connection that sends nothing for this long is closed
STATIC = {"/": ("page.html", "text/html; charset=utf-8"),
          "/page.js": ("page.js", "text/javascript; charset=utf-8"),
          "/page.css": ("page.css", "text/css; charset=utf-8")}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
WILDCARDS = ("0.0.0.0", "::", "")


class Options(NamedTuple):
    """What `queuectl dashboard` was asked for, and the secrets of this run."""

    home: QueueHome
    host: str
    port: int
    read_only: bool
    token: Optional[str]
    csrf: str


# -- binding -------------------------------------------------------------------------------------

def is_loopback(host: str) -> bool:
    """True if every address `host` names is a loopback one (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_bind(host: str, token: Optional[str]) -> None:
    """Refuse a non-loopback address without a token, and a token that cannot be sent."""
    if token is not None and not re.fullmatch(r"[A-Za-z0-9._~-]{1,512}", token):
        # What a URL and a cookie carry as they are (secrets.token_urlsafe() makes such tokens).
        raise BadInput("the token must be 1-512 of A-Z a-z 0-9 . _ ~ -")
    if not token and not is_loopback(host):
        raise BadInput(f"--host {host} is reachable from other machines: give a token with --token "
                       f"or ${TOKEN_ENV} (or bind 127.0.0.1)")


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, options: Options, files: dict) -> None:
        if ":" in options.host:
            self.address_family = socket.AF_INET6
        self.options = options
        self.files = files
        self.hosts = allowed_hosts(options.host)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.stopping = False
        super().__init__((options.host, options.port), Handler)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):  # bounded: refuse rather than start a thread per socket
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def request_stop(self, signum, frame) -> None:
        self.stopping = True  # a signal handler only sets a flag; service_actions acts on it

    def service_actions(self) -> None:
        if self.stopping:
            raise _Stop()

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            print(f"dashboard: {type(error).__name__}: {error}", file=sys.stderr)


def allowed_hosts(host: str) -> frozenset:
    """Host names (without port) that name this dashboard; a wildcard bind also accepts any
    IP literal (rebinding needs a DNS name) and this machine's names."""
    names = {host.lower().strip("[]")}
    if host in WILDCARDS or is_loopback(host):
        names |= {"localhost", "127.0.0.1", "::1"}
    if host in WILDCARDS:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(names)


def load_files() -> dict:
    from importlib.resources import files

    package = files(__package__)
    return {path: (package.joinpath(name).read_bytes(), kind) for path, (name, kind) in STATIC.items()}


def serve(options: Options, say: Callable[[str], None]) -> None:
    """Serve until interrupted (Ctrl+C or SIGTERM). Binding errors are QueuectlErrors (exit 1)."""
    try:
        server = DashboardServer(options, load_files())
    except OSError as exc:
        raise QueuectlError(f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}") from None
    host, port = server.server_address[:2]
    server.options = options._replace(port=port)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, server.request_stop)  # also when started in the background, SIGINT ignored
    shown = f"[{host}]" if ":" in host else host
    say(f"Serving the dashboard of {options.home.root} at http://{shown}:{port}/"
        + (" (read-only)" if options.read_only else ""))
    try:
        server.serve_forever(poll_interval=0.5)
    except _Stop:
        pass
    finally:
        server.server_close()


class _Stop(Exception):
    """Leaves serve_forever once a stop was asked for."""


# -- requests ------------------------------------------------------------------------------------

class Text(NamedTuple):
    """A view's answer that is not JSON."""

    body: str
    kind: str


class Refused(Exception):
    def __init__(self, status: int, message: str, headers: Optional[dict] = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


_JOB = r"(?P<id>[^/]{1,128})"
_QUEUE = r"(?P<name>[^/]{1,128})"
GET_ROUTES = [
    (re.compile(r"/api/session"), lambda h, q, m: h.session()),
    (re.compile(r"/api/overview"), lambda h, q, m: api.overview(h.home)),
    (re.compile(r"/api/workers"), lambda h, q, m: api.workers(h.home)),
    (re.compile(r"/api/queues"), lambda h, q, m: api.queues(h.home)),
    (re.compile(r"/api/stats"), lambda h, q, m: api.stats(h.home, q)),
    (re.compile(r"/api/runs-per-minute"), lambda h, q, m: api.runs_per_minute(h.home, q)),
    (re.compile(r"/api/jobs"), lambda h, q, m: api.jobs(h.home, q)),
    (re.compile(r"/api/dlq"), lambda h, q, m: api.dlq(h.home, q)),
    (re.compile(rf"/api/jobs/{_JOB}"), lambda h, q, m: api.job(h.home, m["id"])),
    (re.compile(rf"/api/jobs/{_JOB}/log"), lambda h, q, m: api.log(h.home, m["id"], q)),
    (re.compile(r"/metrics"), lambda h, q, m: Text(api.metrics(h.home), METRICS_TYPE)),
]
POST_ROUTES = [
    (re.compile(rf"/api/jobs/{_JOB}/retry"), lambda h, q, m: api.retry(h.home, m["id"])),
    (re.compile(rf"/api/jobs/{_JOB}/requeue"), lambda h, q, m: api.requeue(h.home, m["id"])),
    (re.compile(rf"/api/jobs/{_JOB}/cancel"), lambda h, q, m: api.cancel(h.home, m["id"])),
    (re.compile(rf"/api/jobs/{_JOB}/delete"), lambda h, q, m: api.delete(h.home, m["id"])),
    (re.compile(r"/api/pause"), lambda h, q, m: api.pause(h.home, None)),
    (re.compile(r"/api/resume"), lambda h, q, m: api.resume(h.home, None)),
    (re.compile(rf"/api/queues/{_QUEUE}/pause"), lambda h, q, m: api.pause(h.home, m["name"])),
    (re.compile(rf"/api/queues/{_QUEUE}/resume"), lambda h, q, m: api.resume(h.home, m["name"])),
    (re.compile(rf"/api/queues/{_QUEUE}/limit"), lambda h, q, m: api.limit(h.home, m["name"], q)),
]
STATUS_OF = ((BadInput, 400), (NotFound, 404), (StoreError, 503), (Conflict, 409), (QueuectlError, 409))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a watching browser reuses one connection
    server_version = "queuectl-dashboard"
    timeout = IDLE_SECONDS

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as two writes; without this, Nagle's algorithm holds the body
        # back until the client's delayed ACK: 40 ms added to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def options(self) -> Options:
        return self.server.options

    @property
    def home(self) -> QueueHome:
        return self.options.home

    def do_GET(self) -> None:
        self._respond("GET")

    def do_POST(self) -> None:
        self._respond("POST")

    def do_PUT(self) -> None:
        self._respond("PUT")

    do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_PUT

    def _respond(self, method: str) -> None:
        try:
            self._route(method)
        except Refused as refusal:
            self._error(refusal.status, str(refusal), refusal.headers)
        except api.ApiError as exc:
            self._error(exc.status, str(exc))
        except QueuectlError as exc:
            self._error(next(code for kind, code in STATUS_OF if isinstance(exc, kind)), str(exc))
        except api.DB_ERRORS as exc:
            self._error(503, f"database error: {exc}")
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # a bug of ours: a short error, never a traceback
            print(f"dashboard: {self.command} {self.path[:200]}: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._error(500, "internal error")

    def _route(self, method: str) -> None:
        if len(self.path) > MAX_URL:
            raise Refused(414, "URL too long")
        self._read_body(method)
        self._check_host()
        url = urlsplit(self.path)
        query = self._query(url.query)
        self._check_token(query, url.path)
        if method == "GET" and url.path in self.server.files:
            body, kind = self.server.files[url.path]
            self._send(200, body, kind)
            return
        routes = GET_ROUTES if method == "GET" else POST_ROUTES if method == "POST" else []
        for pattern, view in routes:
            match = pattern.fullmatch(url.path)
            if match:
                if method == "POST":
                    self._check_action()
                answer = view(self, query, _path_values(match))
                if isinstance(answer, Text):
                    self._send(200, answer.body.encode("utf-8"), answer.kind)
                else:
                    self._json(200, answer)
                return
        allowed = [verb for verb, table in (("GET", GET_ROUTES), ("POST", POST_ROUTES))
                   if any(pattern.fullmatch(url.path) for pattern, _ in table)]
        if allowed:
            raise Refused(405, f"{method} is not allowed here", {"Allow": ", ".join(allowed)})
        raise Refused(404, "not found")

    def session(self) -> dict:
        """What the page needs before it acts: the CSRF token and whether actions are allowed."""
        return {"csrf": self.options.csrf, "read_only": self.options.read_only}

    # -- checks ----------------------------------------------------------------------------------

    def _check_host(self) -> None:
        header = (self.headers.get("Host") or "").strip().lower()
        match = re.fullmatch(r"(\[[0-9a-f:.]+\]|[^:\[\]]+)(?::(\d{1,5}))?", header)
        if not match or int(match.group(2) or 80) != self.options.port:
            raise Refused(403, "the Host header does not name this dashboard")
        name = match.group(1).strip("[]")
        if name in self.server.hosts:
            return
        if self.options.host in WILDCARDS and _is_ip(name):
            return
        raise Refused(403, "the Host header does not name this dashboard")

    def _check_token(self, query: dict, path: str) -> None:
        token = self.options.token
        if not token:
            return
        given = query.pop("token", None)
        if given is not None and _same(given, token):
            if self.command == "GET" and not path.startswith("/api/"):
                # The token once in the URL: keep it in a cookie, and out of the address bar.
                # Always to the page itself: a Location built from the path could lead off-site.
                raise Refused(303, "see other", {"Location": "/", "Set-Cookie": self._cookie(token)})
            return
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer ") and _same(auth[len("Bearer "):].strip(), token):
            return
        if _same(self._cookies().get(self._cookie_name(), ""), token):
            return
        raise Refused(401, "a token is needed: open the URL with ?token=T once, or send "
                           "'Authorization: Bearer T'", {"WWW-Authenticate": "Bearer"})

    def _check_action(self) -> None:
        if self.options.read_only:
            raise Refused(403, "the dashboard is read-only")
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() not in self._own_origins():
            raise Refused(403, "refused: the request comes from another site")
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site != "same-origin":
            raise Refused(403, "refused: the request comes from another site")
        csrf = self.headers.get("X-CSRF-Token")
        if site != "same-origin" and not (csrf and _same(csrf, self.options.csrf)):
            raise Refused(403, "refused: actions need the dashboard page's CSRF token")

    def _own_origins(self) -> set:
        host = (self.headers.get("Host") or "").lower()  # checked against the allowed names already
        return {f"http://{host}"}

    def _read_body(self, method: str) -> None:
        """Read (and drop: no action takes a body) what the request sends, within MAX_BODY."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise Refused(411, "send a Content-Length, not a chunked body")
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit():
            self.close_connection = True
            raise Refused(400, "invalid Content-Length")
        if int(length) > MAX_BODY:
            self.close_connection = True  # the body stays unread: this connection cannot go on
            raise Refused(413, f"request body too large (at most {MAX_BODY} bytes)")
        if int(length):
            self.rfile.read(int(length))

    def _query(self, text: str) -> dict:
        try:
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=20)
        except ValueError:
            raise Refused(400, "too many query parameters") from None
        return dict(pairs)

    def _cookie_name(self) -> str:
        return f"queuectl_token_{self.options.port}"  # cookies do not tell ports apart

    def _cookie(self, token: str) -> str:
        return f"{self._cookie_name()}={token}; Path=/; HttpOnly; SameSite=Strict"

    def _cookies(self) -> dict:
        found = {}
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            found[name] = value
        return found

    # -- sending ---------------------------------------------------------------------------------

    def _error(self, status: int, text: str, headers: Optional[dict] = None) -> None:
        self._json(status, {"error": text.splitlines()[0][:200] if text else "error"}, headers)

    def _json(self, status: int, value: object, headers: Optional[dict] = None) -> None:
        body = json.dumps(value, ensure_ascii=False).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8", headers)

    def _send(self, status: int, body: bytes, kind: str, headers: Optional[dict] = None) -> None:
        self.send_response(status)
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """http.server's own refusals (a malformed or oversized request line or header): JSON too."""
        self.close_connection = True
        self._error(code, message or self.responses.get(code, ("error",))[0])

    def version_string(self) -> str:
        return self.server_version  # not the Python version

    def log_message(self, format: str, *args) -> None:
        pass  # no access log: a watching browser would fill the terminal


def _path_values(match: re.Match) -> dict:
    """The ids and queue names in a path, %-decoded (the page encodes the : and @ they may hold)."""
    try:
        return {name: unquote(value, errors="strict") for name, value in match.groupdict().items()}
    except UnicodeDecodeError:
        raise Refused(400, "the path is not valid UTF-8") from None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)
