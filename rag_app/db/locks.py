"""Locks that make processes started together (the API and the workers of the compose stack)
take turns at one-time work on a database: migrating it, creating the first administrator.

- MySQL/MariaDB: a named lock (``GET_LOCK``). It belongs to the connection's session, not to
  a transaction, so it survives the implicit commit of every DDL statement, and the server
  drops it if the holder dies. Lock names are server-wide: the database name is part of ours,
  so two installations (or two test databases) on one server do not wait for each other.
- SQLite: an exclusive ``flock`` on a file next to the database file. SQLite's own locking is
  not enough for migrations: Alembic runs DDL outside a transaction there and Python's sqlite3
  starts none before DDL, so two processes both see no ``alembic_version`` and both create
  the tables (the second fails with "table already exists").
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from sqlalchemy import Connection, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from rag_app.errors import ConfigurationError

try:
    import fcntl
except ImportError:  # Windows: no flock; the embedded default is one process there anyway
    fcntl = None  # type: ignore[assignment]

_MAX_MYSQL_LOCK_NAME = 64  # MySQL refuses longer names
_FILE_LOCK_POLL_SECONDS = 0.1


class LockTimeout(ConfigurationError):
    """Another process held the lock for longer than we were willing to wait."""


def _timeout_error(busy: str, wait_seconds: float) -> LockTimeout:
    return LockTimeout(
        f"another rag_app process has been {busy} for over {wait_seconds:g} s; "
        "start again once it is done"
    )


def _mysql_lock_name(connection: Connection, purpose: str) -> str:
    database = connection.scalar(select(func.database())) or ""
    name = f"rag_app.{purpose}.{database}"
    if len(name) > _MAX_MYSQL_LOCK_NAME:
        digest = hashlib.sha256(database.encode()).hexdigest()[:16]
        name = f"rag_app.{purpose}.{digest}"
    return name


def _acquire(connection: Connection, purpose: str, wait_seconds: float, busy: str) -> str:
    name = _mysql_lock_name(connection, purpose)
    locked = connection.scalar(select(func.get_lock(name, wait_seconds)))
    # End the transaction SELECT opened (the lock is not part of it): Alembic must find the
    # connection idle, or it treats it as an outside transaction and never commits.
    connection.commit()
    if locked != 1:  # 0: timed out; NULL: an error such as being killed
        raise _timeout_error(busy, wait_seconds)
    return name


def _release(connection: Connection, name: str) -> None:
    connection.scalar(select(func.release_lock(name)))
    connection.commit()


@contextmanager
def mysql_lock(
    connection: Connection, purpose: str, wait_seconds: float, busy: str
) -> Iterator[None]:
    """Hold the named lock for ``purpose`` on this connection's session; ``busy`` says what
    the holder is doing, for the error raised after ``wait_seconds`` seconds of waiting."""
    name = _acquire(connection, purpose, wait_seconds, busy)
    try:
        yield
    except BaseException:
        # A statement that failed inside the block may have left a transaction open; the
        # release below needs a usable connection.
        if connection.in_transaction():
            connection.rollback()
        raise
    finally:
        _release(connection, name)


@asynccontextmanager
async def mysql_lock_async(
    connection: AsyncConnection, purpose: str, wait_seconds: float, busy: str
) -> AsyncIterator[None]:
    """``mysql_lock`` on an async connection (the wait does not block the event loop)."""
    name = await connection.run_sync(_acquire, purpose, wait_seconds, busy)
    try:
        yield
    finally:
        await connection.run_sync(_release, name)


def sqlite_lock_path(url: str, purpose: str) -> Path | None:
    """The lock file beside a SQLite database file; None for an in-memory database (nothing
    else can see it)."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(f"{database}.{purpose}.lock")


@contextmanager
def file_lock(path: Path | None, wait_seconds: float, busy: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing; left in place afterwards, since
    removing it would let a waiter and a newcomer lock two different files)."""
    if path is None or fcntl is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _timeout_error(busy, wait_seconds) from None
                time.sleep(_FILE_LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
