"""SQLite connection settings of both engines (the app's async one, Alembic's sync one)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from rag_app.db.engine import create_db_engine, create_sync_engine

PRAGMAS = ("journal_mode", "synchronous", "foreign_keys")
# Write-ahead log, NORMAL (1) syncing, foreign keys enforced.
EXPECTED = {"journal_mode": "wal", "synchronous": 1, "foreign_keys": 1}


def test_sync_sqlite_connections_use_the_write_ahead_log_and_foreign_keys(tmp_path: Path) -> None:
    engine = create_sync_engine(f"sqlite:///{tmp_path / 'app.db'}")
    try:
        with engine.connect() as connection:
            found = {name: connection.execute(text(f"PRAGMA {name}")).scalar() for name in PRAGMAS}
    finally:
        engine.dispose()
    assert found == EXPECTED


async def test_async_sqlite_connections_use_the_write_ahead_log_and_foreign_keys(
    tmp_path: Path,
) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'app.db'}")
    try:
        async with engine.connect() as connection:
            found = {
                name: (await connection.execute(text(f"PRAGMA {name}"))).scalar()
                for name in PRAGMAS
            }
    finally:
        await engine.dispose()
    assert found == EXPECTED
