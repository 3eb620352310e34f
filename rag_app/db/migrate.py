"""Run and check Alembic migrations from code (the CLI, app start-up and tests use this)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import types

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


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
