"""`queuectl check`: is the database sound, has every processing job a live worker, does every
pidfile name a running pool? It only looks: nothing is repaired, taken back or removed."""
from __future__ import annotations

from typing import NamedTuple, Optional

from . import config
from .errors import DatabaseDamaged
from .home import QueueHome
from .pidfile import HOST, pid_alive, read_pools
from .timeutil import iso

INTEGRITY_LINES = 20  # PRAGMA integrity_check stops after this many findings


class Report(NamedTuple):
    database: str
    integrity: list  # what SQLite found wrong with the file; [] when it is sound
    orphans: list  # processing jobs whose worker is not alive, as dicts
    stale_pidfiles: list  # pidfiles that name no live process of this home, as dicts

    @property
    def problems(self) -> int:
        return len(self.integrity) + len(self.orphans) + len(self.stale_pidfiles)

    def to_dict(self) -> dict:
        return {
            "healthy": self.problems == 0,
            "database": {"path": self.database, "ok": not self.integrity, "problems": self.integrity},
            "orphaned_jobs": self.orphans,
            "stale_pidfiles": self.stale_pidfiles,
        }


def check(home: QueueHome) -> Report:
    integrity, orphans = _database(home)
    return Report(home.database, integrity, orphans, _stale_pidfiles(home))


def _database(home: QueueHome) -> tuple:
    """(integrity problems, orphaned jobs), read through a read-only connection."""
    from .store import open_to_check

    try:
        store = open_to_check(home)
    except DatabaseDamaged as exc:
        return [exc.detail], []
    try:
        integrity = store.integrity_problems(INTEGRITY_LINES)
        try:
            holders = store.processing_holders()
        except DatabaseDamaged as exc:
            return integrity or [exc.detail], []
        now = store.clock()
        lease_seconds = config.load(home.settings(lambda: store))["lease_seconds"]
    finally:
        store.close()
    orphans = []
    for job, pid, host, heartbeat_at in holders:
        reason = _why_orphaned(pid, host, heartbeat_at, now, lease_seconds)
        if reason:
            orphans.append({"id": job.id, "worker": job.worker_id, "pid": pid, "host": host,
                            "heartbeat_at": iso(heartbeat_at), "reason": reason})
    return integrity, orphans


def _why_orphaned(pid: Optional[int], host: Optional[str], heartbeat_at: Optional[float], now: float,
                  lease_seconds: float) -> Optional[str]:
    """Why the job's worker is not alive, or None if it is. A local worker is alive while its
    process is, however late its heartbeat; a remote one while it heartbeats within the lease."""
    if heartbeat_at is None:
        return "its worker is not registered any more"
    if host == HOST:
        return None if pid_alive(pid) else f"its worker process {pid} is gone"
    if heartbeat_at < now - lease_seconds:
        return f"its worker on {host} has not been heard from since {iso(heartbeat_at)}"
    return None


def _stale_pidfiles(home: QueueHome) -> list:
    stale = []
    for pool in read_pools(home):
        if pool.live_pids():
            continue
        reason = (f"the pool stopped by itself: {pool.stopped}" if pool.stopped
                  else "it names no live process of this queue home")
        stale.append({"path": pool.path, "pool": pool.pool_id, "reason": reason})
    return stale
