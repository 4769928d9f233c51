"""Domain errors. The CLI turns each into one `Error:` line and its exit code, in one place."""
from __future__ import annotations


class QueuectlError(Exception):
    """An operation that could not be done."""

    exit_code = 1


class BadInput(QueuectlError):
    """Bad input or usage: malformed JSON, unknown key, invalid id, bad number or duration."""

    exit_code = 2


class NotFound(QueuectlError):
    """No job matches the id or prefix given."""


class Conflict(QueuectlError):
    """The job exists already, or is in a state that does not allow the operation."""


class StoreError(QueuectlError):
    """The database or a file of the queue home cannot be opened or used."""


class DatabaseError(StoreError):
    """The database server failed or could not be reached; the text never holds a password."""


class StillRunning(QueuectlError):
    """Workers are still running after the stop timeout."""


class DatabaseDamaged(StoreError):
    """SQLite reports the database corrupt or not a database: retrying cannot help."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"database {path} is damaged: {detail}; run `queuectl check`")
