"""JSON views over the Store for the dashboard: one small function per endpoint.

Every view opens its own Store and closes it before returning: the server answers each request
on its own thread, and a sqlite3 connection must never be shared across threads. Views take
the queue home and plain request values, and return what is sent as JSON; bad input raises
ApiError (or a QueuectlError, which the server maps to a 4xx).
"""
from __future__ import annotations

import base64
import json
import os
from contextlib import contextmanager
from typing import Iterator, Optional

from .. import config, jobspec
from ..home import QueueHome
from ..models import DEAD, FINISHED, STATES
from ..repository import DB_ERRORS, Store
from ..timeutil import now

__all__ = ["ApiError", "DB_ERRORS"]  # DB_ERRORS: for the server, which does not import sqlite3

DEFAULT_PAGE = 50
MAX_PAGE = 200
LOG_TAIL_BYTES = 64 * 1024  # what one log request returns at most


class ApiError(Exception):
    """A request the API refuses: its HTTP status and a short message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@contextmanager
def opened(home: QueueHome) -> Iterator:
    store = Store.open(home.db_path)
    try:
        yield store
    finally:
        store.close()


# -- reading -------------------------------------------------------------------------------------

def overview(home: QueueHome) -> dict:
    """What `status --json` shows: the count per state, their total, the live workers, the pauses."""
    with opened(home) as store:
        counts = store.counts()
        return {**counts, "total": sum(counts.values()), "workers": _live_workers(home, store),
                "paused": store.pauses()}


def workers(home: QueueHome) -> list:
    with opened(home) as store:
        return _live_workers(home, store)


def jobs(home: QueueHome, query: dict) -> dict:
    """A page of jobs, by state and id prefix; `next` is the cursor of the following page."""
    state = _state(query.get("state", ""))
    prefix = _prefix(query.get("prefix", ""))
    limit = _limit(query.get("limit"))
    with opened(home) as store:
        after = _decode_cursor(query.get("after"))
        try:
            found = store.jobs_page(state, prefix, after, limit + 1)
        except ValueError:
            raise ApiError(400, "invalid page cursor 'after'") from None
        page = found[:limit]
        more = len(found) > limit
        cursor = _encode_cursor(store.page_key(page[-1], state, prefix)) if more else None
        counts = store.counts()
    total = None if prefix else (counts[state] if state else sum(counts.values()))
    return {"jobs": [job.to_dict() for job in page], "next": cursor, "total": total}


def dlq(home: QueueHome, query: dict) -> dict:
    """The dead letter queue: a page of dead jobs, newest first."""
    return jobs(home, {**query, "state": DEAD})


def job(home: QueueHome, token: str) -> dict:
    """One job as `show --json` gives it (its fields, its runs, its log's path); a unique id
    prefix is accepted, as on the command line."""
    with opened(home) as store:
        found = store.get(store.resolve(jobspec.validate_id(token)))
        runs = [run.to_dict() for run in store.runs_of(found)]
    return {**found.to_dict(), "runs": runs, "log": home.log_path(found.id)}


def log(home: QueueHome, token: str, query: dict) -> dict:
    """A bounded piece of a job's log: its tail, or what follows byte `from` (to follow a run)."""
    with opened(home) as store:
        found = store.get(store.resolve(jobspec.validate_id(token)))
    start = _whole(query.get("from"), "from", 0, 2**62) if "from" in query else None
    text, begin, end, size = read_log(home.log_path(found.id), start)
    return {"id": found.id, "from": begin, "to": end, "size": size, "text": text,
            "finished": found.state in FINISHED}


def read_log(path: str, start: Optional[int]) -> tuple:
    """(text, from, to, size): at most LOG_TAIL_BYTES from `start`, or the tail when None."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return "", 0, 0, 0
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if start is None or start > size:  # no position yet, or the log was replaced
            start = max(0, size - LOG_TAIL_BYTES)
        handle.seek(start)
        data = handle.read(min(LOG_TAIL_BYTES, size - start))
    data = data[:_whole_characters(data)]
    return data.decode("utf-8", "replace"), start, start + len(data), size


def _whole_characters(data: bytes) -> int:
    """Length of `data` without a UTF-8 character cut at its end (it comes with the next piece)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # a lead byte: is its sequence complete?
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= needed else len(data) - back
    return len(data)


# -- actions -------------------------------------------------------------------------------------

def retry(home: QueueHome, token: str) -> dict:
    """`dlq retry ID`: a dead job back to pending, attempts 0, to run now."""
    with opened(home) as store:
        job_id = store.resolve(jobspec.validate_id(token))
        store.requeue_dead([job_id], now())
        return store.get(job_id).to_dict()


def delete(home: QueueHome, token: str) -> dict:
    """`delete ID`: remove a job that is not processing, and its log."""
    with opened(home) as store:
        job_id = store.resolve(jobspec.validate_id(token))
        store.delete([job_id])
    try:
        os.unlink(home.log_path(job_id))
    except FileNotFoundError:
        pass
    return {"deleted": job_id}


# -- input ---------------------------------------------------------------------------------------

def _live_workers(home: QueueHome, store) -> list:
    from ..pidfile import live_workers

    lease = config.load(home.config_path)["lease_seconds"]
    return [w.to_dict() for w in live_workers(store, lease, home.root)]


def _state(value: str) -> Optional[str]:
    if value in ("", "all"):
        return None
    if value not in STATES:
        raise ApiError(400, f"invalid state {value[:40]!r}: use one of {', '.join(STATES)}")
    return value


def _prefix(value: str) -> str:
    return jobspec.validate_id(value) if value else ""


def _limit(value: Optional[str]) -> int:
    return DEFAULT_PAGE if value is None else _whole(value, "limit", 1, MAX_PAGE)


def _whole(value: Optional[str], name: str, low: int, high: int) -> int:
    text = value or ""
    if not (text.isascii() and text.isdigit()) or len(text) > 20 or not low <= int(text) <= high:
        raise ApiError(400, f"invalid {name} {text[:40]!r}: a whole number from {low} to {high}")
    return int(text)


def _encode_cursor(key: tuple) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(value: Optional[str]) -> Optional[tuple]:
    if not value:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (ValueError, TypeError, RecursionError):
        raise ApiError(400, "invalid page cursor 'after'") from None
    if (not isinstance(key, list) or not key or len(key) > 3
            or not all(isinstance(part, (int, float, str)) and not isinstance(part, bool) for part in key)):
        raise ApiError(400, "invalid page cursor 'after'")
    return tuple(key)
