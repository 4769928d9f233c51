"""The queue home: where it is, what it holds, and creating it with private permissions."""
from __future__ import annotations

import os
from typing import NamedTuple, Optional

from .errors import BadInput, StoreError

ENV_VAR = "QUEUECTL_HOME"


def resolve(option: str | None) -> str:
    """`--home`, else $QUEUECTL_HOME, else ~/.queuectl; never the current directory."""
    if option is not None and not option.strip():
        raise BadInput("--home must name a directory, not an empty string")
    # An empty $QUEUECTL_HOME counts as unset, as shells treat empty variables.
    chosen = option or os.environ.get(ENV_VAR) or os.path.join(os.path.expanduser("~"), ".queuectl")
    return os.path.abspath(os.path.expanduser(chosen))


class QueueHome(NamedTuple):
    """A queue home, and the database of its queue: the SQLite file in it (db_url None), or the
    PostgreSQL database at db_url, shared with the homes of other hosts."""

    root: str
    db_url: Optional[str] = None

    def open_store(self, durable: bool = True):
        """The queue's store, opened in the calling process (never share one across fork)."""
        from .store import open_store

        return open_store(self.db_path, self.db_url, durable)

    def settings(self, store):
        """Where the queue's configuration lives; `store()` gives an open store (see store.settings_of)."""
        from .store import settings_of

        return settings_of(self, store)

    @property
    def database(self) -> str:
        """The database as messages name it: the file's path, or the URL without its password."""
        from .store import redact

        return self.db_path if self.db_url is None else redact(self.db_url)

    @property
    def db_path(self) -> str:
        return os.path.join(self.root, "queue.db")

    @property
    def config_path(self) -> str:
        return os.path.join(self.root, "config.json")

    @property
    def logs_dir(self) -> str:
        return os.path.join(self.root, "logs")

    @property
    def pool_log_path(self) -> str:
        """Where a detached pool writes its own messages: beside the pidfiles, out of `logs/`,
        where a job with id `workers` would share (and `delete workers` remove) the file."""
        return os.path.join(self.root, "pools.log")

    def log_path(self, job_id: str) -> str:
        # Job ids are validated to a safe alphabet that cannot name another directory.
        return os.path.join(self.logs_dir, f"{job_id}.log")

    def pidfile_path(self, pool_id: str) -> str:
        return os.path.join(self.root, f"pool-{pool_id}.pid")

    def pidfiles(self) -> list:
        import glob

        return sorted(glob.glob(os.path.join(glob.escape(self.root), "pool-*.pid")))

    def ensure(self) -> "QueueHome":
        """Create the home and its logs folder, mode 0700, on first use."""
        if not os.path.isdir(self.root):
            _make_dir(self.root, "queue home", BadInput)
        if not os.path.isdir(self.logs_dir):
            _refuse_unwritable(self.root)
            _make_dir(self.logs_dir, "logs folder", StoreError)
        return self


def _make_dir(path: str, what: str, blocked: type) -> None:
    """Create `path` mode 0700; a file in the way is `blocked` (bad input for the home itself)."""
    in_the_way = _not_a_directory(path)
    if in_the_way == path:
        raise blocked(f"{what} {path} is not a directory")
    if in_the_way:
        raise blocked(f"cannot create {what} {path}: {in_the_way} is not a directory")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise StoreError(f"cannot create {what} {path}: {exc.strerror}") from None


def _not_a_directory(path: str) -> Optional[str]:
    """The path itself or its nearest existing ancestor, if that is not a directory."""
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    return None if os.path.isdir(path) else path


def _refuse_unwritable(root: str) -> None:
    # Else the first failure would name `logs`, a folder the user never chose.
    if not os.access(root, os.W_OK | os.X_OK):
        raise StoreError(f"queue home {root} is not writable")


def create_private(path: str) -> None:
    """Create an empty file with mode 0600 unless it exists, so SQLite inherits the mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError as exc:
        raise StoreError(f"cannot create {path}: {exc.strerror}") from None
