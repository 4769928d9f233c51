"""The store: the one interface to a queue's database, and the choice of its backend.

Two implementations speak SQL, each in its own module: `sqlite` (the default, a file in the
queue home) and `postgres` (a database shared by hosts; needs `queuectl[postgres]`). Nothing
above this package knows which one it has: both offer the methods of `interface.Store`.
"""
from __future__ import annotations

import sqlite3
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

from ..errors import BadInput, DatabaseError, QueuectlError, StoreError
from .interface import Store  # noqa: F401  (the interface, for annotations above the store)

ENV_VAR = "QUEUECTL_DB"
SCHEMES = ("postgresql", "postgres")

# Callers catch these to report or retry a database failure without importing a driver.
# PostgreSQL's errors arrive as DatabaseError, already worded without the URL's password.
DB_ERRORS = (sqlite3.Error, DatabaseError)


def resolve_url(option: Optional[str], environ: dict) -> Optional[str]:
    """`--db`, else $QUEUECTL_DB, else None (the queue home's SQLite file)."""
    if option is not None and not option.strip():
        raise BadInput("--db must be a postgresql:// URL, not an empty string")
    url = option or environ.get(ENV_VAR) or None  # an empty variable counts as unset
    if url is None:
        return None
    scheme = url.partition(":")[0].lower()
    if scheme not in SCHEMES or not url[len(scheme):].startswith("://"):
        source = "--db" if option else f"${ENV_VAR}"
        raise BadInput(f"{source} must be a postgresql://user@host:port/dbname URL, not {redact(url)!r}")
    return url


def redact(url: str, keep: str = ":***") -> str:
    """The URL without its password (`keep` stands in its place), for every message, status
    line and file. A password in the query (`?password=`) goes too."""
    try:
        parts = urlsplit(url)
        query = "&".join(p for p in parts.query.split("&") if not p.lower().startswith("password="))
        if parts.password is None and query == parts.query:
            return url
        netloc = parts.netloc
        if parts.password is not None:
            user = parts.username or ""
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            netloc = f"{user}{keep}@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:  # unparsable (a bad port, say): keep only what cannot hold a password
        return url.partition("://")[0] + "://…"


def settings_of(home, store):
    """Where a queue's configuration lives: the home's config.json with SQLite, the database
    itself with PostgreSQL, shared by every host (`store()` gives the caller's open store)."""
    from ..config import FileSettings

    if home.db_url is None:
        return FileSettings(home.config_path)
    return store()


def open_to_check(home):
    """The queue's store, to look at only (`queuectl check`): never created or migrated."""
    if home.db_url is None:
        import os
        from .sqlite import SqliteStore

        if not os.path.isfile(home.db_path):
            raise QueuectlError(f"no database at {home.db_path}: nothing to check")
        return SqliteStore.open_readonly(home.db_path)
    return open_store(home.db_path, home.db_url)


def open_store(db_path: str, url: Optional[str], durable: bool = True):
    """The store of a queue: the SQLite file at `db_path`, or the PostgreSQL database at `url`.

    `durable=False` is for workers: see each backend's `open`.
    """
    if url is None:
        from .sqlite import SqliteStore

        return SqliteStore.open(db_path, durable)
    try:
        from .postgres import PostgresStore
    except ImportError as exc:
        if "psycopg" not in str(exc):
            raise
        raise StoreError("a PostgreSQL database needs psycopg: pip install 'queuectl[postgres]'") from None
    return PostgresStore.open(url, durable)
