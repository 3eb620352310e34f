"""The Alembic migrations produce exactly the schema the models declare, on SQLite and MariaDB."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from rag_app.db import migrate
from rag_app.db.engine import create_sync_engine

BACKENDS = ["sqlite", "mysql"]


@pytest.mark.parametrize("db", BACKENDS)
def test_upgrade_matches_models_and_downgrade_round_trips(db: str, make_db_url: Any) -> None:
    url = make_db_url(db)
    migrate.upgrade(url)
    assert migrate.current_revision(url) == migrate.head_revision()
    assert migrate.schema_differences(url) == []

    migrate.downgrade(url, "base")
    engine = create_sync_engine(url)
    try:
        with engine.connect() as conn:
            from sqlalchemy import inspect

            assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()

    migrate.upgrade(url)
    assert migrate.schema_differences(url) == []


def test_single_head() -> None:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, f"several migration heads, merge them: {heads}"


def test_differences_are_detected(make_db_url: Any) -> None:
    """The check is not vacuous: a column the models do not know is reported."""
    url = make_db_url("sqlite")
    migrate.upgrade(url)
    engine = create_sync_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE rag_user ADD COLUMN nickname VARCHAR(20)"))
    finally:
        engine.dispose()
    differences = migrate.schema_differences(url)
    assert any("nickname" in str(d) for d in differences), differences


def test_mysql_tables_are_utf8mb4_innodb(make_db_url: Any) -> None:
    url = make_db_url("mysql")
    migrate.upgrade(url)
    engine = create_sync_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT table_name, engine, table_collation FROM information_schema.tables "
                    "WHERE table_schema = DATABASE() AND table_name LIKE 'rag_%'"
                )
            ).all()
    finally:
        engine.dispose()
    assert len(rows) == 11
    for name, engine_name, collation in rows:
        assert engine_name == "InnoDB", name
        assert collation.startswith("utf8mb4"), (name, collation)


@pytest.mark.parametrize("db", BACKENDS)
def test_upgrade_keeps_existing_rows(db: str, make_db_url: Any) -> None:
    """Each migration applies to a database that already holds data (as a real upgrade does)."""
    url = make_db_url(db)
    migrate.upgrade(url, "0001")
    stamp = "'2026-01-01 00:00:00'"
    engine = create_sync_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO rag_user (username, email, password_hash, role, status, "
                    f"token_version, created_at, updated_at) VALUES ('老王', 'w@example.com', "
                    f"'h', 'user', 1, 0, {stamp}, {stamp})"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO rag_llm (name, model_type, provider, model_name, status, "
                    f"created_at, updated_at) VALUES ('m', 'embedding', 'local', 'x', 1, "
                    f"{stamp}, {stamp})"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO rag_knowledge (user_id, name, embed_llm_id, "
                    "vector_collection_name, keyword_backend, chunk_size, chunk_overlap, "
                    "document_count, total_chunks, status, created_at, updated_at) VALUES "
                    f"(1, '知识库', 1, 'kb_c', 'bm25', 500, 50, 1, 0, 1, {stamp}, {stamp})"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO rag_document (knowledge_id, file_name, file_path, "
                    "file_extension, file_size, status, chunk_count, created_at, updated_at) "
                    f"VALUES (1, '说明.pdf', 'p', 'pdf', 10, 'completed', 3, {stamp}, {stamp})"
                )
            )
        migrate.upgrade(url)
        with engine.connect() as conn:
            row = conn.execute(text("SELECT file_name, progress FROM rag_document")).one()
            user = conn.execute(text("SELECT username FROM rag_user")).scalar_one()
    finally:
        engine.dispose()
    assert tuple(row) == ("说明.pdf", 0)
    assert user == "老王"
    assert migrate.schema_differences(url) == []
