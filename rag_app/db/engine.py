"""Engines and sessions. One SQL URL in settings; the async driver is derived from it."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

_SYNC_DRIVERS = {"sqlite": "sqlite", "mysql": "mysql+pymysql"}
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "mysql": "mysql+aiomysql"}


def _json_dumps(value: Any) -> str:
    # ensure_ascii=False: Chinese stays readable and searchable inside MySQL JSON columns.
    return json.dumps(value, ensure_ascii=False)


def _url_for(url: str, drivers: dict[str, str]) -> URL:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "mariadb":
        backend = "mysql"
    if backend not in drivers:
        raise ValueError(f"unsupported database {backend!r}: use sqlite or mysql")
    parsed = parsed.set(drivername=drivers[backend])
    if backend == "mysql" and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def sync_url(url: str) -> URL:
    return _url_for(url, _SYNC_DRIVERS)


def async_url(url: str) -> URL:
    return _url_for(url, _ASYNC_DRIVERS)


def _engine_options(url: URL, echo: bool, pool_size: int) -> dict[str, Any]:
    options: dict[str, Any] = {
        "echo": echo,
        "json_serializer": _json_dumps,
        # A logged or raised database error shows the statement, never the row values: those
        # include password hashes and encrypted API keys.
        "hide_parameters": True,
    }
    if url.get_backend_name() == "mysql":
        # MySQL closes idle connections after wait_timeout; pre-ping replaces dead ones.
        options.update(pool_size=pool_size, pool_pre_ping=True, pool_recycle=3600)
    return options


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # SQLite ignores ON DELETE CASCADE unless foreign keys are switched on per connection.
        cursor.execute("PRAGMA foreign_keys=ON")
        # Write-ahead log: readers (the API) do not wait for the writer (ingestion) and a
        # commit appends to the log instead of writing and deleting a rollback journal.
        # synchronous=NORMAL syncs at checkpoints, not at each commit: a power cut may lose the
        # last commits but never corrupts the database (sqlite.org/wal.html). Ingestion
        # commits each document's status on its own; with the default journal, those commits
        # were a third of the ingesting process's CPU on small documents (docs/benchmarks.md).
        # An in-memory database answers "memory" and keeps its journal in memory.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def create_sync_engine(url: str, echo: bool = False, pool_size: int = 5) -> Engine:
    parsed = sync_url(url)
    engine = create_engine(parsed, **_engine_options(parsed, echo, pool_size))
    if parsed.get_backend_name() == "sqlite":
        _configure_sqlite(engine)
    return engine


def create_db_engine(url: str, echo: bool = False, pool_size: int = 10) -> AsyncEngine:
    parsed = async_url(url)
    options = _engine_options(parsed, echo, pool_size)
    if parsed.get_backend_name() == "sqlite":
        # Writers wait for each other instead of failing at once with "database is locked".
        options["connect_args"] = {"timeout": 30}
    engine = create_async_engine(parsed, **options)
    if parsed.get_backend_name() == "sqlite":
        _configure_sqlite(engine.sync_engine)
    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: entities stay readable after commit for building responses.
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
