"""The only module that imports subprocess: run one command in its own process group.

Output goes straight from the child to the job's log file (never through this process), so a
worker's memory stays flat whatever a job prints. `run` returns an Outcome and never raises.
"""
from __future__ import annotations

import errno
import os
import select
import signal
import subprocess
import time
from typing import Callable, Optional

from .models import CANCELLED, STOP_CANCEL, Job, Outcome
from .timeutil import human_seconds

GRACE_SECONDS = 3.0  # between SIGTERM and SIGKILL of what a run leaves
TICK_SECONDS = 0.2  # how often a long run checks for stop requests and heartbeats
KILL_POLL = 0.02  # how often a kill checks whether the run's processes are gone yet
MAX_ERROR = 1000
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# log path -> [(line, size)]: what a full disk kept out of the log, written once there is room;
# a line with a size only while the log still has that size (no later run has written to it)
_DEFERRED: dict = {}
ENV_RUN = "QUEUECTL_RUN"  # names the run: lets a later worker find what a lost run left behind
# The pool's queue home, set in each worker's environment: a job that runs queuectl uses the
# same home, and a lost run is only ever taken for one of this home's (a `cp -r` copy of a live
# home holds the original's worker ids, and must not kill the original's runs).
ENV_HOME = "QUEUECTL_HOME"
PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>
TAIL_BYTES = 4096  # of a run's output, kept with its run record


def run_id(worker_id: str, job_id: str, attempt: int) -> str:
    """What ENV_RUN holds: one run of one job by one worker (no job id holds a '/')."""
    return f"{worker_id}/{job_id}/{attempt}"


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux 3.4+), so what a run
    starts and disowns (`setsid cmd &`, a double-forked daemon) is reparented to us, where the
    end of the run finds and kills it. False where the system has no such thing."""
    import ctypes  # only here: a worker calls this once at start

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def run(job: Job, log_path: str, worker_id: str, interrupted: Callable[[], Optional[str]],
        tick: Callable[[], None]) -> Outcome:
    """Run `job.command` with /bin/sh -c in `job.cwd`, appending its output to `log_path`.

    `interrupted()` is polled while the run goes on; when it returns a reason (STOP_FORCE or
    STOP_CANCEL) the run is stopped and the Outcome says why. `tick()` (which must not raise) is
    called about every TICK_SECONDS, in every wait, killing included. However the run ends,
    whatever it started is killed before this returns (see `_end_run`).
    """
    started = time.monotonic()
    try:
        fd = os.open(log_path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        return Outcome(None, _short(f"cannot open log {log_path}: {exc.strerror}"))
    try:
        refused = _open_run(fd, log_path, job, worker_id)
        if refused is not None:
            return refused
        output_start = os.lseek(fd, 0, os.SEEK_END)
        outcome = _run(job, fd, output_start, worker_id, interrupted, tick)
        outcome = outcome._replace(tail=_tail(fd, output_start))
        _close_run(fd, log_path, output_start, f"run {job.attempts} of job {job.id} ended after "
                   f"{time.monotonic() - started:.2f}s: {outcome.error or 'exit code 0'}")
        return outcome
    except OSError as exc:  # the log cannot be written (an I/O error, say): the run still has an outcome
        return Outcome(None, _short(f"cannot write log {log_path}: {exc.strerror}"))
    finally:
        os.close(fd)


def _open_run(fd: int, log_path: str, job: Job, worker_id: str) -> Optional[Outcome]:
    """Write the run's header line; on a full disk, the Outcome of a run that never started."""
    try:
        _append(fd, _header(f"=== run {job.attempts} of job {job.id} at {_stamp()} by {worker_id}: {job.command}"))
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        # Nothing has run: the job goes back to pending, and its log says why once there is room.
        _defer(log_path, f"=== run {job.attempts} of job {job.id} not started at {_stamp()} by "
                         f"{worker_id}: the disk was full ({exc.strerror}); back to pending",
               os.fstat(fd).st_size)
        return Outcome(None, f"not started: the disk is full ({exc.strerror})", interrupted=True)
    return None


def _close_run(fd: int, log_path: str, output_start: int, ended: str) -> None:
    try:
        _append(fd, _line_start(fd, output_start) + _header(f"=== {ended}"))
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        # The run's own writes failed too, so its output stops short: mark where, once we can.
        _defer(log_path, f"=== output cut: the disk was full ({exc.strerror}); {ended}")


def has_deferred_marks() -> bool:
    """Whether a full disk kept a line out of a log: a sign to take no job until there is room."""
    return bool(_DEFERRED)


def write_deferred_marks() -> bool:
    """Append to each log the lines a full disk kept out of it; True when none is left."""
    for path in list(_DEFERRED):
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:  # the job and its log were deleted meanwhile
            del _DEFERRED[path]
            continue
        except OSError:
            return False
        try:
            size = os.fstat(fd).st_size
            lines = [line for line, then in _DEFERRED[path] if then in (None, size)]
            if lines:
                _append(fd, _line_start(fd, 0) + "".join(_header(line) for line in lines))
        except OSError:
            return False
        finally:
            os.close(fd)
        del _DEFERRED[path]
    return True


def _defer(log_path: str, line: str, size: Optional[int] = None) -> None:
    _DEFERRED.setdefault(log_path, []).append((line, size))


def _run(job: Job, fd: int, output_start: int, worker_id: str, interrupted: Callable[[], Optional[str]],
         tick: Callable[[], None]) -> Outcome:
    # This process exists to run jobs, so the run's variables go into its own environment:
    # much cheaper than building and encoding a fresh env mapping for every run.
    os.environ.update(QUEUECTL_JOB_ID=job.id, QUEUECTL_ATTEMPT=str(job.attempts),
                      QUEUECTL_RUN=run_id(worker_id, job.id, job.attempts))
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", job.command], cwd=job.cwd, stdin=_devnull(),
            stdout=fd, stderr=fd, start_new_session=True, close_fds=True,
        )
    except OSError as exc:
        where = f" in {job.cwd}" if exc.filename == job.cwd else ""
        return Outcome(None, _short(f"cannot start{where}: {exc.strerror}"))
    try:
        ended = _wait(proc, job.timeout, interrupted, tick)
    finally:
        _end_run(proc, tick)
    if ended == STOP_CANCEL:
        return Outcome(None, CANCELLED, cancelled=True)
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


def _wait(proc: subprocess.Popen, timeout: Optional[float], interrupted: Callable[[], Optional[str]],
          tick: Callable[[], None]) -> str:
    """'exited', 'timeout', 'interrupted' or STOP_CANCEL; in all but the first the run is still going."""
    deadline = time.monotonic() + float(timeout) if timeout else None
    pidfd = _pidfd(proc.pid)
    try:
        while True:
            slice_ = TICK_SECONDS if deadline is None else min(TICK_SECONDS, deadline - time.monotonic())
            if _exited(proc, pidfd, max(slice_, 0.0)):
                return "exited"
            reason = interrupted()
            if reason:
                return STOP_CANCEL if reason == STOP_CANCEL else "interrupted"
            if deadline is not None and time.monotonic() >= deadline:
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


def _end_run(proc: subprocess.Popen, tick: Callable[[], None]) -> None:
    """Kill whatever the run left: its process group (the shell too, if it still runs) and every
    orphan of it this worker inherited as their subreaper, in whatever session or group those
    moved to. SIGTERM, GRACE_SECONDS, then SIGKILL; `tick()` goes on all the while.

    A run that leaves nothing (the usual case) costs one read of our children and one killpg."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if _leftovers_gone(proc, signum, tick):
            return
    # Unkillable (stuck in the kernel, or no longer ours to signal): don't make every later
    # run wait for it too.
    _ABANDONED.update(_orphans(proc)[0])


_ABANDONED: set = set()  # orphans that outlived SIGKILL; still reaped when they do go


def _leftovers_gone(proc: subprocess.Popen, signum: int, tick: Callable[[], None]) -> bool:
    """Signal what is left of the run, then wait up to GRACE_SECONDS for it to go."""
    deadline = time.monotonic() + GRACE_SECONDS
    signalled: set = set()
    while _signal_leftovers(proc, signum, signalled):
        if time.monotonic() >= deadline:
            return False
        tick()
        time.sleep(KILL_POLL)
    return True


def _signal_leftovers(proc: subprocess.Popen, signum: int, signalled: set) -> bool:
    """Send `signum` once to each group the run still has a process in; True while anything of
    the run may live. Looked at afresh each time: a process that dies hands its children to us."""
    running = proc.poll() is None  # Popen reaps the run's own shell: never a waitpid of ours
    orphans, reaped = _orphans(proc)
    groups = dict.fromkeys([proc.pid] + [group for group in map(_group_of, orphans) if group is not None])
    for group in groups:
        if group not in signalled and _signal_group(group, signum):
            signalled.add(group)
            if signum == signal.SIGTERM:
                _signal_group(group, signal.SIGCONT)  # a stopped process would sit on the SIGTERM
    # Until the shell is reaped, or an orphan we just reaped, their children may still be on
    # their way to us; a group is checked too, for a system where we are not the subreaper.
    return running or reaped or bool(orphans) or any(_group_alive(group) for group in signalled)


def _orphans(proc: subprocess.Popen) -> tuple:
    """(live children other than the run's shell, whether any dead one was reaped just now)."""
    children = _children()
    live, reaped = [], False
    for pid in children:
        if pid == proc.pid:
            continue
        try:
            done = os.waitpid(pid, os.WNOHANG)[0] != 0
        except ChildProcessError:  # reaped already
            done = True
        if done:
            _ABANDONED.discard(pid)
            reaped = True
        elif pid not in _ABANDONED:
            live.append(pid)
    if children is _NO_CHILDREN_FILE and proc.returncode is not None:
        _reap_any()
    return live, reaped


_NO_CHILDREN_FILE: list = []
_CHILDREN_FDS: dict = {}  # pid -> our open children file: a forked process opens its own


def _children() -> list:
    """Our children, from /proc/self/task/<tid>/children: orphans go to the main thread, the
    one that runs jobs. Kept open and read with pread, a tenth of the cost of opening it per
    run. `_NO_CHILDREN_FILE` where the kernel does not have that file."""
    pid = os.getpid()
    try:
        fd = _CHILDREN_FDS.get(pid)
        if fd is None:
            fd = _CHILDREN_FDS[pid] = os.open(f"/proc/self/task/{pid}/children", os.O_RDONLY | os.O_CLOEXEC)
        data = os.pread(fd, 65536, 0)  # past 9,000 or so children, the rest come next round
    except FileNotFoundError:
        return _NO_CHILDREN_FILE
    except OSError:
        return []
    return [int(child) for child in data.split()]


def _reap_any() -> None:
    """Without a children file: at least leave no zombie (the run's shell is reaped already)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _group_of(pid: int) -> Optional[int]:
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return None
    return None if group == os.getpgid(0) else group


def _signal_group(pgid: int, signum: int) -> bool:
    """False if the group has no process left (not even a zombie)."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs. Zombies don't count: one whose parent is
    slow to reap it would otherwise hold us here for the whole grace period."""
    if not _signal_group(pgid, 0):
        return False
    if not os.path.isdir("/proc/self"):
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


def kill_strays(home: str, worker_id: str, job_id: str, attempt: int) -> int:
    """Kill the process groups of one run of a worker that died (found by their environment).

    A worker killed with SIGKILL cannot take its run down with it, since the run has a session
    of its own; without this the retry could overlap the first run. Only that run's processes
    are killed, never the worker's later runs (if it lives after all) or another job's. Linux
    only; returns groups killed. `home` is the real path of the queue home the run belongs to.
    """
    marker = f"{ENV_RUN}={run_id(worker_id, job_id, attempt)}".encode()
    same_home = f"{ENV_HOME}={home}".encode()
    groups = set()
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                variables = handle.read().split(b"\0")
                if marker in variables and same_home in variables:
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


def _header(text: str) -> str:
    return text.replace("\n", " ") + "\n"


def _line_start(fd: int, output_start: int) -> str:
    """What makes the next header start on its own line: a newline, unless the log ends in one."""
    size = os.fstat(fd).st_size
    return "\n" if size > output_start and os.pread(fd, 1, size - 1) != b"\n" else ""


def _append(fd: int, text: str) -> None:
    """Write all of `text` or none of it: what a full disk let through is cut off again, so a
    later try does not leave half a line behind."""
    data = text.encode("utf-8", "replace")
    written = 0
    try:
        while written < len(data):
            written += os.write(fd, data[written:])
    except OSError:
        if written:
            try:
                os.ftruncate(fd, os.fstat(fd).st_size - written)
            except OSError:
                pass
        raise


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
