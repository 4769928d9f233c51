"""The only module that imports subprocess: run one command in its own process group.

Output goes straight from the child to the job's log file (never through this process), so a
worker's memory stays flat whatever a job prints. `run` returns an Outcome and never raises.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from typing import Callable, Optional

from .models import Job, Outcome
from .timeutil import human_seconds

GRACE_SECONDS = 3.0  # between SIGTERM and SIGKILL of a run's process group
TICK_SECONDS = 0.2  # how often a long run checks for stop requests and heartbeats
MAX_ERROR = 1000
TAIL_BYTES = 4096  # of a run's output, kept with its run record
ENV_WORKER = "QUEUECTL_WORKER_ID"  # also lets a later worker find runs a dead worker left behind


def run(job: Job, log_path: str, worker_id: str, interrupted: Callable[[], bool],
        tick: Callable[[], None]) -> Outcome:
    """Run `job.command` with /bin/sh -c in `job.cwd`, appending its output to `log_path`.

    `interrupted()` is polled while the run goes on; when it turns true the run's whole process
    group is killed and the Outcome says so. `tick()` is called about every TICK_SECONDS.
    """
    started = time.monotonic()
    try:
        fd = os.open(log_path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        return Outcome(None, _short(f"cannot open log {log_path}: {exc.strerror}"))
    try:
        _line(fd, f"=== run {job.attempts} of job {job.id} at {_stamp()} by {worker_id}: {job.command}")
        output_start = os.lseek(fd, 0, os.SEEK_END)
        outcome = _run(job, fd, output_start, worker_id, interrupted, tick)
        outcome = outcome._replace(tail=_tail(fd, output_start))
        _end_line(fd, output_start)
        _line(fd, f"=== run {job.attempts} of job {job.id} ended after "
                  f"{time.monotonic() - started:.2f}s: {outcome.error or 'exit code 0'}")
        return outcome
    except OSError as exc:  # the log's disk filled up, say: the run still has an outcome
        return Outcome(None, _short(f"cannot write log {log_path}: {exc.strerror}"))
    finally:
        os.close(fd)


def _run(job: Job, fd: int, output_start: int, worker_id: str, interrupted: Callable[[], bool],
         tick: Callable[[], None]) -> Outcome:
    # This process exists to run jobs, so the run's variables go into its own environment:
    # much cheaper than building and encoding a fresh env mapping for every run.
    os.environ.update(QUEUECTL_JOB_ID=job.id, QUEUECTL_ATTEMPT=str(job.attempts))
    if os.environ.get(ENV_WORKER) != worker_id:
        os.environ[ENV_WORKER] = worker_id
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", job.command], cwd=job.cwd, stdin=_devnull(),
            stdout=fd, stderr=fd, start_new_session=True, close_fds=True,
        )
    except OSError as exc:
        where = f" in {job.cwd}" if exc.filename == job.cwd else ""
        return Outcome(None, _short(f"cannot start{where}: {exc.strerror}"))
    ended = _wait(proc, job.timeout, interrupted, tick)
    if ended == "interrupted":
        return Outcome(None, "interrupted by a forced stop", interrupted=True)
    if ended == "timeout":
        return Outcome(None, f"timed out after {human_seconds(float(job.timeout))}", kind="timeout")
    code = proc.returncode
    if code == 0:
        return Outcome(0, None)
    if code < 0:
        name = _signal_name(-code)
        return Outcome(128 - code, f"killed by signal {-code} ({name})")
    last = _last_line(fd, output_start)
    return Outcome(code, _short(f"exit code {code}" + (f": {last}" if last else "")))


_DEVNULL: list = []


def _devnull() -> int:
    """One /dev/null descriptor for every run's stdin, opened once."""
    if not _DEVNULL:
        _DEVNULL.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    return _DEVNULL[0]


def _wait(proc: subprocess.Popen, timeout: Optional[float], interrupted: Callable[[], bool],
          tick: Callable[[], None]) -> str:
    """'exited', 'timeout' or 'interrupted' (the group killed in the last two cases)."""
    deadline = time.monotonic() + float(timeout) if timeout else None
    pidfd = _pidfd(proc.pid)
    try:
        while True:
            slice_ = TICK_SECONDS if deadline is None else min(TICK_SECONDS, deadline - time.monotonic())
            if _exited(proc, pidfd, max(slice_, 0.0)):
                return "exited"
            if interrupted():
                kill_group(proc)
                return "interrupted"
            if deadline is not None and time.monotonic() >= deadline:
                kill_group(proc)
                return "timeout"
            tick()
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _pidfd(pid: int) -> Optional[int]:
    """A pidfd lets us sleep until the child exits, with a timeout, without polling."""
    try:
        return os.pidfd_open(pid)  # Linux 5.3+, Python 3.9+
    except (AttributeError, OSError):
        return None


def _exited(proc: subprocess.Popen, pidfd: Optional[int], seconds: float) -> bool:
    if pidfd is None:
        try:
            proc.wait(seconds)
        except subprocess.TimeoutExpired:
            return False
        return True
    select.select([pidfd], [], [], seconds)
    return proc.poll() is not None


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the run's whole process group, then SIGKILL what is left after a grace period."""
    pgid = proc.pid  # start_new_session made the shell the leader of its own group
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline:
        proc.poll()
        if not _group_alive(pgid):
            return
        time.sleep(0.02)
    _signal_group(pgid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + GRACE_SECONDS
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs. Zombies don't count: an init that is slow
    to reap the orphans would otherwise hold us here for the whole grace period."""
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def kill_strays(worker_id: str) -> int:
    """Kill the process groups of runs started by a worker that died (found by their environment).

    A worker killed with SIGKILL cannot take its run down with it, since the run has a session
    of its own; without this the retry could overlap the first run. Linux only; returns groups killed.
    """
    marker = f"{ENV_WORKER}={worker_id}".encode()
    groups = set()
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                if marker in handle.read().split(b"\0"):
                    groups.add(os.getpgid(pid))
        except (OSError, ProcessLookupError):
            continue
    for pgid in groups:
        if pgid != os.getpgid(0):
            _signal_group(pgid, signal.SIGKILL)
    return len(groups)


def _stamp() -> str:
    """Now as ISO 8601 UTC, the cheap way (this runs for every job)."""
    moment = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1000):03d}Z"


def _line(fd: int, text: str) -> None:
    os.write(fd, (text.replace("\n", " ") + "\n").encode("utf-8", "replace"))


def _end_line(fd: int, output_start: int) -> None:
    """Make sure the closing header starts on its own line."""
    size = os.fstat(fd).st_size
    if size > output_start and os.pread(fd, 1, size - 1) != b"\n":
        os.write(fd, b"\n")


def _last_line(fd: int, output_start: int) -> str:
    """The run's last line of output, which is usually the error message ('sh: 1: foo: not found')."""
    size = os.fstat(fd).st_size
    begin = max(output_start, size - 4096)
    tail = os.pread(fd, size - begin, begin).decode("utf-8", "replace")
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _tail(fd: int, output_start: int) -> str:
    """The last TAIL_BYTES of what the run wrote, as text."""
    size = os.fstat(fd).st_size
    begin = max(output_start, size - TAIL_BYTES)
    return _text(os.pread(fd, size - begin, begin)) if size > begin else ""


def log_tail(log_path: str, job: Job) -> str:
    """The tail of the output of the job's current run, read back from its log: for a run whose
    worker died, so could not say. Empty if the log does not show that run's header."""
    marker = f"=== run {job.attempts} of job {job.id} at ".encode()
    try:
        with open(log_path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            begin = max(0, size - TAIL_BYTES - 4096)  # room for the header line too
            handle.seek(begin)
            data = handle.read()
    except OSError:
        return ""
    at = data.rfind(marker)
    if at >= 0:
        data = data[data.find(b"\n", at) + 1:] if b"\n" in data[at:] else b""
    elif begin == 0:
        return ""  # the whole log is here and the run never started writing to it
    return _text(data[-TAIL_BYTES:])


def _text(data: bytes) -> str:
    """UTF-8 with replacement; a character cut in two by the start of the tail is dropped."""
    cut = 0
    while cut < min(3, len(data)) and 0x80 <= data[cut] < 0xC0:
        cut += 1
    return data[cut:].decode("utf-8", "replace")


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 3] + "..."


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "unknown"
