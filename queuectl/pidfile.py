"""Pool pidfiles, and telling whether a PID is really one of our processes (PIDs get reused)."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Optional

from .home import QueueHome

HOST = os.uname().nodename  # what socket.gethostname() returns, without importing socket


def _stat(pid: int) -> Optional[list]:
    """The fields of /proc/PID/stat after the command name, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == b"Z" else fields  # a zombie has exited already


def start_time(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot (Linux), or None if it is gone."""
    fields = _stat(pid)
    return None if fields is None else int(fields[19])


def pid_alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    if os.path.isdir("/proc/self"):
        return start_time(pid) is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_workers(store, lease_seconds: float, root: str) -> list:
    """Workers heard from within the lease, less local ones whose process is gone or that
    serve another queue home (the original of a copied home)."""
    home = os.path.realpath(root)
    return [w for w in store.workers(store.clock(), lease_seconds)
            if w.host != HOST or (w.home in ("", home) and pid_alive(w.pid))]


def is_ours(pid: int, started: Optional[int], root: str) -> bool:
    """True only if `pid` is the queuectl process that was recorded, of the home at `root`."""
    if not os.path.isdir("/proc/self"):
        return pid_alive(pid)  # no /proc: the best we can do
    # Without a recorded start time (a bare PID, a hand-edited file) nothing proves the PID is
    # still the process that was written down, so it is never trusted: a stale pidfile must not
    # make `worker stop` signal whatever holds that PID now.
    if started is None or start_time(pid) != started:
        return False
    if b"queuectl" not in _cmdline(pid):
        return False
    # A pidfile copied with its home (`cp -r` while a pool runs) names the original's pool.
    return holds_home(pid, root)


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def is_pool_worker(home: QueueHome, pool_id: str, pid: int) -> bool:
    """True if `pid` is a live worker of this home's pool `pool_id`, as the pool's pidfile records
    it (start time, command line, the home held open): proof of life that needs no heartbeat."""
    if not pool_id.isalnum():  # it names a file in the home: nothing else
        return False
    path = home.pidfile_path(pool_id)
    try:
        with open(path) as handle:
            record = _parse(path, handle.read())
    except OSError:
        return False
    return pid in record.workers and is_ours(pid, record.workers[pid], record.root)


def hold_home(root: str) -> int:
    """Keep the home open for the pool's life: its workers inherit the descriptor across fork,
    and it is how `holds_home` tells this home's pool from another's."""
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY)


def holds_home(pid: int, root: str) -> bool:
    """True if the process has the home directory, or a file directly in it, open.

    The directory is what `hold_home` keeps; a file in it (`queue.db`) also counts, so the
    workers of a pool started before pools held their home are still recognised."""
    home = os.path.realpath(root)
    fds = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fds)
    except OSError:  # gone, or another user's
        return False
    for name in names:
        try:
            target = os.readlink(f"{fds}/{name}")
        except OSError:
            continue
        if target == home or os.path.dirname(target) == home:
            return True
    return False


@dataclass
class PoolRecord:
    """What a pool's pidfile says: the supervisor and its workers, each with its start time."""

    path: str
    pool_id: str
    supervisor: int
    supervisor_started: Optional[int]
    workers: dict = field(default_factory=dict)  # pid -> start time
    created: float = 0.0
    stopped: Optional[str] = None  # why the pool stopped by itself (a damaged database), kept for `worker stop`

    @property
    def root(self) -> str:
        return os.path.dirname(self.path)

    def live_supervisor(self) -> bool:
        return is_ours(self.supervisor, self.supervisor_started, self.root)

    def live_workers(self) -> list:
        return [pid for pid, started in self.workers.items() if is_ours(pid, started, self.root)]

    def live_pids(self) -> list:
        return ([self.supervisor] if self.live_supervisor() else []) + self.live_workers()

    def to_json(self) -> str:
        return json.dumps({
            "pool": self.pool_id, "pid": self.supervisor, "started": self.supervisor_started,
            "workers": [{"pid": pid, "started": started} for pid, started in self.workers.items()],
            "created": self.created, **({"stopped": self.stopped} if self.stopped else {}),
        })

    # -- owned by the supervisor -------------------------------------------------------------

    @classmethod
    def create(cls, home: QueueHome, pool_id: str) -> "PoolRecord":
        """Create this pool's pidfile exclusively (O_EXCL), mode 0600."""
        pid = os.getpid()
        record = cls(home.pidfile_path(pool_id), pool_id, pid, start_time(pid), {}, time.time())
        fd = os.open(record.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(record.to_json())
        return record

    def save(self) -> None:
        temp = f"{self.path}.tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(self.to_json())
            os.replace(temp, self.path)
        except OSError:  # a full disk, say: the old record stays, and no temporary file is left
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def read_pools(home: QueueHome) -> list:
    """Every pool pidfile in the home. One that cannot be parsed names no process of ours."""
    pools = []
    for path in home.pidfiles():
        try:
            with open(path) as handle:
                text = handle.read()
        except OSError:
            continue
        pools.append(_parse(path, text))
    return pools


def _parse(path: str, text: str) -> PoolRecord:
    pool_id = os.path.basename(path)[len("pool-"):-len(".pid")]
    try:
        data = json.loads(text)
        workers = {int(w["pid"]): w.get("started") for w in data.get("workers", [])}
        stopped = data.get("stopped")
        return PoolRecord(path, pool_id, int(data["pid"]), data.get("started"), workers,
                          float(data.get("created", 0)), stopped if isinstance(stopped, str) else None)
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    return PoolRecord(path, pool_id, 0, None)  # not one we wrote: names nothing, so it is stale


# -- pools the workers table knows ---------------------------------------------------------------

START_SLACK = 5.0  # seconds: /proc/stat's boot time is rounded, and follows clock adjustments


def live_pools(home: QueueHome, workers: list) -> tuple:
    """(live, stale): the pools of this home's pidfiles that still have a process of ours, then
    those the workers table knows without a pidfile (deleted by hand, say), proven ours too;
    and the pidfiles that name no live process of ours."""
    live, stale = [], []
    for pool in read_pools(home):
        (live if pool.live_pids() else stale).append(pool)
    return live + _pools_without_pidfile(home, workers, {pool.pool_id for pool in live}), stale


def _pools_without_pidfile(home: QueueHome, workers: list, known: set) -> list:
    """Rebuild a record for each pool of this host and home that the table names and no pidfile
    does. Only processes proven to be this home's pool are kept: they may be signalled."""
    root = os.path.realpath(home.root)
    pools: dict = {}
    for w in workers:
        if w.host != HOST or w.home not in ("", root) or w.pool_id in known:
            continue
        if not _is_pool_process(w.pid, root, w.started_at):
            continue
        pool = pools.setdefault(w.pool_id, PoolRecord(home.pidfile_path(w.pool_id), w.pool_id, 0, None,
                                                      {}, w.started_at))
        pool.workers[w.pid] = start_time(w.pid)
        parent = _parent(w.pid)
        if not pool.supervisor and parent and _is_pool_process(parent, root, w.started_at):
            pool.supervisor, pool.supervisor_started = parent, start_time(parent)
    return list(pools.values())


def _is_pool_process(pid: int, root: str, registered: float) -> bool:
    """A `queuectl worker start` process holding this home open that started before the row
    naming it was written: a PID reused since (by `queuectl logs -f`, say) started later."""
    started = start_time(pid)
    if started is None or _epoch(started) > registered + START_SLACK:
        return False
    return b"\0worker\0start\0" in _cmdline(pid) and holds_home(pid, root)


def _epoch(ticks: int) -> float:
    with open("/proc/stat", "rb") as handle:
        boot = next(int(line.split()[1]) for line in handle if line.startswith(b"btime "))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _parent(pid: int) -> Optional[int]:
    fields = _stat(pid)
    return None if fields is None else int(fields[1])


# -- the run a local worker has going ------------------------------------------------------------

def run_pids(workers: list) -> dict:
    """worker_id -> the PID of the run each busy worker of this host has going; it is also the
    run's process group. Read from /proc, so no worker writes it anywhere."""
    found = {}
    for w in workers:
        if w.host == HOST and w.job_id:
            pid = _run_pid(w.pid, w.job_id)
            if pid:
                found[w.worker_id] = pid
    return found


def _run_pid(worker_pid: int, job_id: str) -> Optional[int]:
    """The worker's child that leads its own process group (runs start in a new session), unless
    its environment names another job (the next run, started meanwhile)."""
    try:
        with open(f"/proc/{worker_pid}/task/{worker_pid}/children") as handle:
            children = [int(pid) for pid in handle.read().split()]
    except (OSError, ValueError):  # gone, or a kernel without CONFIG_PROC_CHILDREN
        return None
    for pid in children:
        fields = _stat(pid)
        if fields is not None and int(fields[2]) == pid and _job_of(pid) in (None, job_id):
            return pid
    return None


def _job_of(pid: int) -> Optional[str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            entries = handle.read().split(b"\0")
    except OSError:
        return None
    prefix = b"QUEUECTL_JOB_ID="
    return next((e[len(prefix):].decode(errors="replace") for e in entries if e.startswith(prefix)), None)
