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
import threading
import time
from contextlib import contextmanager
from typing import Iterator, NamedTuple, Optional

from .. import config, jobspec
from ..home import QueueHome
from ..models import COMPLETED, DEAD, FAILED_RUNS, FINISHED, STATES
from ..store import DB_ERRORS
from ..timeutil import iso

__all__ = ["ApiError", "DB_ERRORS"]  # DB_ERRORS: for the server, which does not import sqlite3

DEFAULT_PAGE = 50
MAX_PAGE = 200
LOG_TAIL_BYTES = 64 * 1024  # what one log request returns at most
MAX_LIMIT = 1_000_000  # of a queue, as `queue limit` takes it


class ApiError(Exception):
    """A request the API refuses: its HTTP status and a short message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@contextmanager
def opened(home: QueueHome) -> Iterator:
    store = home.open_store()
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
    """A page of jobs, by state, queue and id prefix; `next` is the cursor of the following
    page; `total` is null when a prefix or a queue is given (counting those reads every job)."""
    state = _state(query.get("state", ""))
    prefix = _prefix(query.get("prefix", ""))
    queue = _queue(query.get("queue", ""))
    limit = _limit(query.get("limit"))
    with opened(home) as store:
        after = _decode_cursor(query.get("after"))
        try:
            page, key = store.jobs_page(state, prefix, after, limit, queue)
        except ValueError:
            raise ApiError(400, "invalid page cursor 'after'") from None
        counts = store.counts()
    total = None if prefix or queue else (counts[state] if state else sum(counts.values()))
    return {"jobs": [job.to_dict() for job in page], "next": key and _encode_cursor(key), "total": total}


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


def queues(home: QueueHome) -> dict:
    """What `queues --json` lists (every queue: its count per state, limit, paused), and the pauses.
    The names, limits and pauses are read fresh; the counts come from queue_counts."""
    with opened(home) as store:
        counts = queue_counts(home, store)
        paused, limits = store.paused_queues(), store.queue_limits()
        pauses = store.pauses()
    zero = dict.fromkeys(STATES, 0)
    return {"queues": [{"name": name, "counts": counts.get(name, zero), "limit": limits.get(name),
                        "paused": flag} for name, flag in paused.items()], "paused": pauses}


def stats(home: QueueHome, query: dict) -> dict:
    """What `stats --json` gives, for `?since=` (default 1h) and `?queue=`."""
    from ..figures import stats_data, window_start

    queue = _queue(query.get("queue", ""))
    with opened(home) as store:
        moment = store.clock()
        start = window_start(query.get("since") or "1h", moment, "since")
        jobs = None if queue is None else queue_counts(home, store).get(queue, dict.fromkeys(STATES, 0))
        return stats_data(store, _live_workers(home, store), start, moment, queue, jobs)


def runs_per_minute(home: QueueHome, query: dict) -> dict:
    """The chart's data: the runs that ended in each of the last 60 minutes (`?queue=`), as
    `succeeded` (completed) and `failed` (failed, timeout, lost), oldest minute first."""
    queue = _queue(query.get("queue", ""))
    with opened(home) as store:
        moment = store.clock()
        rows = store.runs_per_minute(moment, 60, queue)
    last = int(moment // 60)
    minutes = {minute: {"minute": iso(minute * 60), "succeeded": 0, "failed": 0} for minute in range(last - 59, last + 1)}
    for minute, outcome, runs in rows:
        if outcome == COMPLETED:
            minutes[minute]["succeeded"] += runs
        elif outcome in FAILED_RUNS:
            minutes[minute]["failed"] += runs
    return {"queue": queue, "until": iso(moment), "minutes": list(minutes.values())}


def metrics(home: QueueHome) -> str:
    """The text of `queuectl metrics`."""
    from ..figures import metrics_text

    with opened(home) as store:
        return metrics_text(store, _live_workers(home, store), store.clock(), queue_counts(home, store))


def log(home: QueueHome, token: str, query: dict) -> dict:
    """A bounded piece of a job's log: its tail, or what follows byte `from` (to follow a run)."""
    with opened(home) as store:
        found = store.get(store.resolve(jobspec.validate_id(token)))
    start = _whole(query.get("from"), "from", 0, 2**62) if "from" in query else None
    text, begin, end, size = read_log(home.log_path(found.id), start)
    return {"id": found.id, "from": begin, "to": end, "size": size, "text": text,
            "finished": found.state in FINISHED}


class _Counted(NamedTuple):
    stamp: tuple
    at: float
    cost: float
    counts: dict


_counted: dict = {}  # database (path or URL) -> _Counted
_counting = threading.Lock()
COST_SHARE = 50  # per-queue counts are recounted at most once per 50 times what counting costs


def queue_counts(home: QueueHome, store) -> dict:
    """{queue: {state: jobs}}. Counting by queue reads every job (0.3 s at a million), so the
    counts are kept while the database's files are unchanged (an idle queue costs nothing);
    after a change they are recounted, but at most once per COST_SHARE times what the last
    count cost: a watching browser spends at most 2 % of a core on them, and with fewer jobs
    they are fresh at every refresh (a thousand jobs: a count every 50 ms at most)."""
    stamp = store.change_stamp()  # before counting: a commit during the count is seen next time
    with _counting:  # one count at a time; the others wait for it and share it
        kept = _counted.get(home.database)
        if kept is not None and (kept.stamp == stamp or time.monotonic() < kept.at + COST_SHARE * kept.cost):
            return kept.counts
        started = time.monotonic()
        counts = {info.name: info.counts for info in store.queues()}
        _counted[home.database] = _Counted(stamp, started, time.monotonic() - started, counts)
        return counts


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
        store.requeue_dead([job_id], store.clock())
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


def requeue(home: QueueHome, token: str) -> dict:
    """`requeue ID`: a completed or dead job back to pending, attempts 0, to run now."""
    with opened(home) as store:
        job_id = store.resolve(jobspec.validate_id(token))
        store.requeue([job_id], store.clock())
        return store.get(job_id).to_dict()


def cancel(home: QueueHome, token: str) -> dict:
    """`cancel ID`, without waiting: a waiting job is dead at once; a running one's worker is
    asked to stop it (`stopping`), which it does within a second or so."""
    with opened(home) as store:
        job_id = store.resolve(jobspec.validate_id(token))
        running = store.cancel([job_id], store.clock())
        return {**store.get(job_id).to_dict(), "stopping": bool(running)}


def pause(home: QueueHome, name: Optional[str]) -> dict:
    """`pause [QUEUE]`: one queue, or every queue when `name` is None."""
    with opened(home) as store:
        store.pause(None if name is None else [jobspec.validate_queue(name)])
        return {"paused": store.pauses()}


def resume(home: QueueHome, name: Optional[str]) -> dict:
    """`resume [QUEUE]`: one queue, or lift every pause when `name` is None."""
    with opened(home) as store:
        store.resume(None if name is None else [jobspec.validate_queue(name)])
        return {"paused": store.pauses()}


def limit(home: QueueHome, name: str, query: dict) -> dict:
    """`queue limit NAME N` (`?value=N`; 0 removes the limit)."""
    value = _whole(query.get("value"), "value", 0, MAX_LIMIT)
    with opened(home) as store:
        store.set_limit(jobspec.validate_queue(name), value)
    return {"queue": name, "limit": value or None}


# -- input ---------------------------------------------------------------------------------------

def _live_workers(home: QueueHome, store) -> list:
    from ..pidfile import live_workers

    lease = config.load(home.settings(lambda: store))["lease_seconds"]
    return [w.to_dict() for w in live_workers(store, lease, home.root)]


def _state(value: str) -> Optional[str]:
    if value in ("", "all"):
        return None
    if value not in STATES:
        raise ApiError(400, f"invalid state {value[:40]!r}: use one of {', '.join(STATES)}")
    return value


def _queue(value: str) -> Optional[str]:
    return jobspec.validate_queue(value) if value else None


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
    if (not isinstance(key, list) or not key or len(key) > 4
            or not all(isinstance(part, (int, float, str)) and not isinstance(part, bool) for part in key)):
        raise ApiError(400, "invalid page cursor 'after'")
    return tuple(key)
