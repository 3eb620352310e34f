"""Processes that migrate one database at once (the API and the workers of the compose stack
start together) take turns: all succeed and the schema ends at head. A lock held for too long
gives a clear error. MariaDB (named lock) and SQLite (a file lock beside the database)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rag_app.db import migrate
from rag_app.db.engine import create_sync_engine
from rag_app.db.locks import LockTimeout, file_lock, mysql_lock, sqlite_lock_path

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4
# Each process imports everything first, then sleeps until the same moment: without the lock
# they all find an empty database and create the same tables.
_MIGRATE_AT = """
import sys, time
from rag_app.db import migrate
url, start_at = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, start_at - time.time()))
migrate.upgrade(url)
print("migrated")
"""


def _migrate_together(url: str) -> list[subprocess.CompletedProcess[str]]:
    start_at = f"{time.time() + 8:.3f}"  # the imports take a few seconds on 2 cores
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE_AT, url, start_at],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    results = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=120)
        finally:
            process.kill()
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


@pytest.mark.parametrize("db", ["mysql", "sqlite"])
def test_processes_migrating_at_once_all_succeed(db: str, make_db_url: Any) -> None:
    url = make_db_url(db)
    for result in _migrate_together(url):
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip() == "migrated"
    assert migrate.current_revision(url) == migrate.head_revision()
    assert migrate.schema_differences(url) == []


def test_mysql_waiter_gives_up_with_a_clear_error(make_db_url: Any) -> None:
    url, other_url = make_db_url("mysql"), make_db_url("mysql")
    engine = create_sync_engine(url)
    try:
        with engine.connect() as holder, mysql_lock(holder, "migrate", 5, "testing"):
            started = time.monotonic()
            with pytest.raises(LockTimeout, match="has been migrating this database for over 1 s"):
                migrate.upgrade(url, lock_timeout=1)
            assert 0.9 <= time.monotonic() - started < 5
            # The lock is per database: another database on the same server is not held up.
            migrate.upgrade(other_url, lock_timeout=1)
        assert migrate.current_revision(url) is None  # the waiter changed nothing
    finally:
        engine.dispose()
    migrate.upgrade(url, lock_timeout=1)  # released on leaving the block
    assert migrate.current_revision(url) == migrate.head_revision()
    assert migrate.current_revision(other_url) == migrate.head_revision()


def test_sqlite_waiter_gives_up_with_a_clear_error(make_db_url: Any) -> None:
    url = make_db_url("sqlite")
    path = sqlite_lock_path(url, "migrate")
    assert path is not None
    assert path.parent == Path(url.removeprefix("sqlite:///")).parent
    with (
        file_lock(path, 5, "testing"),
        pytest.raises(LockTimeout, match=r"has been migrating this database for over 0\.5 s"),
    ):
        migrate.upgrade(url, lock_timeout=0.5)
    migrate.upgrade(url, lock_timeout=0.5)
    assert migrate.current_revision(url) == migrate.head_revision()
    assert sqlite_lock_path("sqlite://", "migrate") is None  # in memory: nothing to share
