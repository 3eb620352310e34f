"""Run every check in order; a check that fails unexpectedly becomes a problem row, never an
exception, and no secret reaches the results."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from pydantic import BaseModel, SecretStr

from rag_app.crypto import SecretBox
from rag_app.doctor.common import DEFAULT_TIMEOUT, CheckResult, problem, skipped, url_secrets
from rag_app.doctor.database import DatabaseReport, check_database
from rag_app.doctor.models import check_models
from rag_app.doctor.ports import check_server_port
from rag_app.doctor.registry import Registry, check_secrets, read_registry
from rag_app.doctor.services import check_object_store, check_redis
from rag_app.doctor.stores import MilvusReport, check_elasticsearch, check_milvus
from rag_app.settings import Settings

T = TypeVar("T")
REPORT_BUG = "run `rag-app doctor` again; if it persists, report it with this output"


def run_checks(settings: Settings, *, timeout: float = DEFAULT_TIMEOUT) -> list[CheckResult]:
    """Check every configured component (blocking; each network check waits at most about
    ``timeout`` seconds). Nothing is changed, except that an S3 bucket is created when missing,
    as the app itself does at its first upload."""
    results: list[CheckResult] = []
    database = _guarded(
        "database", lambda: check_database(settings, timeout), lambda row: DatabaseReport([row])
    )
    results += database.results
    secrets_row, box = _guarded("secrets", lambda: check_secrets(settings), lambda row: (row, None))
    results.append(secrets_row)
    registry = _read_registry(settings, box) if database.usable else None
    results.append(_row("redis", lambda: check_redis(settings, timeout)))
    results.append(_row("object store", lambda: check_object_store(settings, timeout)))
    knowledge = registry.knowledge if isinstance(registry, Registry) else []
    collections = [k.vector_collection_name for k in knowledge]
    milvus = _guarded("milvus", lambda: check_milvus(settings, collections, timeout), MilvusReport)
    results.append(milvus.result)
    es_users = [
        f"'{k.name}' (id {k.id})" for k in knowledge if k.keyword_backend == "elasticsearch"
    ]
    results += _guarded(
        "elasticsearch", lambda: check_elasticsearch(settings, es_users, timeout), _as_list
    )
    if isinstance(registry, Registry):
        dimensions = milvus.dimensions
        results += _guarded("models", lambda: check_models(registry, dimensions, timeout), _as_list)
    else:
        results.append(
            registry or skipped("models", "not checked: the database is not usable (see above)")
        )
    results.append(_row("server port", lambda: check_server_port(settings, timeout)))
    hidden = settings_secrets(settings)
    if isinstance(registry, Registry):
        hidden += registry.secrets()
    return [result.scrubbed(hidden) for result in results]


def _read_registry(settings: Settings, box: SecretBox | None) -> Registry | CheckResult:
    def read() -> Registry | CheckResult:
        return read_registry(settings, box)

    return _guarded("models", read, _identity)


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret in the configuration, to scrub from anything shown: each ``SecretStr``
    and each password inside a URL, found by walking the settings so that a setting added
    later is covered too."""
    return list(_secrets_in(settings))


def _secrets_in(model: BaseModel) -> Iterator[str]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            yield value.get_secret_value()
        elif isinstance(value, BaseModel):
            yield from _secrets_in(value)
        elif isinstance(value, str) and "://" in value:
            yield from url_secrets(value)


def _guarded(component: str, check: Callable[[], T], on_crash: Callable[[CheckResult], T]) -> T:
    """``check()``; if it raises, ``on_crash`` of a problem row saying so: one broken check
    must not hide the others."""
    try:
        return check()
    except Exception as exc:
        row = problem(
            component, f"the check itself failed: {type(exc).__name__}: {exc}", REPORT_BUG
        )
        return on_crash(row)


def _row(component: str, check: Callable[[], CheckResult]) -> CheckResult:
    return _guarded(component, check, _identity)


def _identity(row: CheckResult) -> CheckResult:
    return row


def _as_list(row: CheckResult) -> list[CheckResult]:
    return [row]
