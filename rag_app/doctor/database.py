"""The SQL database: can we connect, and is its schema at the code's migration head?"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import NullPool

from rag_app.db import migrate
from rag_app.db.engine import sync_url
from rag_app.doctor.common import CheckResult, ok, problem
from rag_app.settings import Settings

SET_URL = "set RAG_DATABASE__URL (e.g. mysql+pymysql://user:password@host:3306/rag_app)"
MIGRATE = "run `rag-app migrate`"
# MySQL/MariaDB client and server error numbers the doctor explains.
_CANNOT_CONNECT = {2003, 2005, 2006, 2013}  # refused, unknown host, gone away, lost
_ACCESS_DENIED = {1044, 1045, 1698}
_UNKNOWN_DATABASE = 1049


@dataclass
class DatabaseReport:
    results: list[CheckResult] = field(default_factory=list)
    # True when the schema is at the code's head, so the registry tables can be read.
    usable: bool = False


def check_database(settings: Settings, timeout: float) -> DatabaseReport:
    try:
        url = sync_url(settings.database_url)
    except (ArgumentError, ValueError) as exc:
        # Not echoing the URL: an unparsable one may still hold a password.
        reason = str(exc) if isinstance(exc, ValueError) else "it cannot be parsed"
        return DatabaseReport(
            [problem("database", f"database.url is not usable: {reason}", SET_URL)]
        )
    shown = url.render_as_string(hide_password=True)
    missing = _missing_sqlite_file(url)
    if missing is not None:
        return DatabaseReport(
            [
                problem(
                    "database",
                    f"the SQLite database {missing} does not exist yet",
                    f"{MIGRATE} to create it (`rag-app serve` also does at start), or set "
                    "RAG_DATABASE__URL",
                )
            ]
        )
    try:
        current = _current_revision(url, timeout)
    except DBAPIError as exc:
        return DatabaseReport([_connection_problem(url, shown, exc)])
    where = f"SQLite database {url.database}" if _is_sqlite(url) else f"MySQL/MariaDB at {shown}"
    connected = ok("database", f"{where} answers")
    migrations = check_migrations(settings.database_url, current)
    return DatabaseReport([connected, migrations], usable=migrations.status == "ok")


def check_migrations(url: str, current: str | None) -> CheckResult:
    head = migrate.head_revision()
    if current is None:
        return problem(
            "migrations", "the database has no tables yet (no migration applied)", MIGRATE
        )
    if current != head:
        if not _known_revision(current):
            return problem(
                "migrations",
                f"the database is at revision {current}, which this version of rag-app does not "
                "know: a newer version migrated it",
                "upgrade rag-app to the version that migrated this database, or point "
                "RAG_DATABASE__URL at a database of this version",
            )
        return problem(
            "migrations", f"the database is at revision {current}, the code at {head}", MIGRATE
        )
    differences = migrate.schema_differences(url)
    if differences:
        first = ", ".join(str(d) for d in differences[:3])
        return problem(
            "migrations",
            f"at revision {head}, but {len(differences)} difference(s) from the models: {first}",
            "the schema was changed outside the migrations: undo those changes (restore the "
            "tables from a backup), then check with `rag-app migrate --check`",
        )
    return ok("migrations", f"schema at the newest revision {head}")


def _is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def _missing_sqlite_file(url: URL) -> Path | None:
    if not _is_sqlite(url) or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database)
    return None if path.is_file() else path


def _connect_args(url: URL, timeout: float) -> dict[str, Any]:
    if _is_sqlite(url):
        return {"timeout": timeout}
    # connect_timeout covers only the TCP connect: a listener that never speaks MySQL would
    # hang the handshake read without read_timeout.
    return {"connect_timeout": timeout, "read_timeout": timeout, "write_timeout": timeout}


def _current_revision(url: URL, timeout: float) -> str | None:
    engine = create_engine(url, connect_args=_connect_args(url, timeout), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _known_revision(revision: str) -> bool:
    scripts = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    try:
        scripts.get_revision(revision)
    except Exception:  # alembic raises CommandError or ResolutionError for unknown ids
        return False
    return True


def _kind(url: URL) -> str:
    return "SQLite" if _is_sqlite(url) else "MySQL/MariaDB"


def _connection_problem(url: URL, shown: str, exc: DBAPIError) -> CheckResult:
    reason = exc.orig if exc.orig is not None else exc
    code = reason.args[0] if reason.args and isinstance(reason.args[0], int) else None
    where = f"{_kind(url)} at {shown}"
    if code in _CANNOT_CONNECT:
        return problem(
            "database",
            f"{where} is not reachable: {reason}",
            f"start MariaDB/MySQL on {url.host}:{url.port or 3306}, or {SET_URL}",
        )
    if code in _ACCESS_DENIED:
        return problem(
            "database",
            f"{where} rejected the credentials: {reason}",
            "check the user name and password in RAG_DATABASE__URL, and that this user may "
            "use the database",
        )
    if code == _UNKNOWN_DATABASE:
        return problem(
            "database",
            f"{where}: the database {url.database} does not exist",
            f"create it: CREATE DATABASE `{url.database}` CHARACTER SET utf8mb4 COLLATE "
            f"utf8mb4_unicode_ci; then {MIGRATE}",
        )
    return problem("database", f"{where} cannot be used: {reason}", f"check {shown}, or {SET_URL}")
