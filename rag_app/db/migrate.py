"""Run and check Alembic migrations from code (the CLI, app start-up and tests use this)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import types

from rag_app.db.locks import file_lock, mysql_lock, sqlite_lock_path

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# How long a process waits for another one's migration: generous, since a migration that
# rewrites a large table can take minutes, and a start-up that gives up too early only fails.
LOCK_WAIT_SECONDS = 600.0


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url
    return config


@contextmanager
def _exclusive(url: str, lock_timeout: float) -> Iterator[Config]:
    """An Alembic config whose migrations run while this process holds the database's
    migration lock (see rag_app.db.locks). The API and every worker migrate at start-up, and
    in the compose stack they start together: one migrates, the others wait, then find the
    schema at head and do nothing."""
    from rag_app.db.engine import create_sync_engine, sync_url

    config = alembic_config(url)
    busy = "migrating this database"
    if sync_url(url).get_backend_name() != "mysql":
        with file_lock(sqlite_lock_path(url, "migrate"), lock_timeout, busy):
            yield config
        return
    engine = create_sync_engine(url, pool_size=1)
    try:
        # Alembic runs on the connection that holds the lock (env.py takes it from here).
        with engine.connect() as connection, mysql_lock(connection, "migrate", lock_timeout, busy):
            config.attributes["connection"] = connection
            yield config
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head", lock_timeout: float = LOCK_WAIT_SECONDS) -> None:
    with _exclusive(url, lock_timeout) as config:
        command.upgrade(config, revision)


def downgrade(url: str, revision: str, lock_timeout: float = LOCK_WAIT_SECONDS) -> None:
    with _exclusive(url, lock_timeout) as config:
        command.downgrade(config, revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(url: str) -> str | None:
    from rag_app.db.engine import create_sync_engine

    engine = create_sync_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def schema_differences(url: str) -> list[Any]:
    """What differs between the database at ``url`` and the models; empty when in step."""
    from sqlmodel import SQLModel

    import rag_app.db.models  # noqa: F401
    from rag_app.db.engine import create_sync_engine

    engine = create_sync_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": compare_type})
            diff: list[Any] = compare_metadata(context, SQLModel.metadata)
            return diff
    finally:
        engine.dispose()


def compare_type(
    context: MigrationContext,
    inspected_column: Any,
    metadata_column: Any,
    inspected_type: types.TypeEngine[Any],
    metadata_type: types.TypeEngine[Any],
) -> bool | None:
    # MariaDB implements JSON as LONGTEXT with a json_valid() check, so reflection reports
    # LONGTEXT for our JSON columns: the same column, not a difference.
    if isinstance(metadata_type, types.JSON) and isinstance(inspected_type, types.Text):
        return False
    return None  # Alembic's default comparison for everything else
