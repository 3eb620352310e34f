"""The index stores: Milvus (Lite or a server) and Elasticsearch with its Chinese analyzer."""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexes.kb_resources import lite_database_in_use
from rag_app.doctor.common import (
    CheckResult,
    hide_password,
    ok,
    problem,
    skipped,
    unwritable_reason,
    warning,
)
from rag_app.indexing.specs import store_settings
from rag_app.settings import Settings

IK_ANALYZER = "ik_smart"


@dataclass
class MilvusReport:
    result: CheckResult
    # Vector size of each knowledge-base collection that exists; None when Milvus could not
    # be inspected (down, or a Lite database held by a running process).
    dimensions: dict[str, int] | None = field(default=None)


def check_milvus(settings: Settings, collections: Collection[str], timeout: float) -> MilvusReport:
    """``collections``: the knowledge bases' collection names, whose dimensions are read."""
    if settings.index.milvus_uri:
        return _check_milvus_server(settings, collections, timeout)
    return _check_milvus_lite(store_settings(settings).milvus_lite_path, collections)


def _check_milvus_server(
    settings: Settings, collections: Collection[str], timeout: float
) -> MilvusReport:
    from pymilvus import MilvusClient
    from pymilvus.client.types import Status
    from pymilvus.exceptions import MilvusException

    uri = settings.index.milvus_uri or ""
    shown = hide_password(uri)
    token = settings.index.milvus_token
    try:
        client = MilvusClient(
            uri=uri, token=token.get_secret_value() if token else "", timeout=timeout
        )
        try:
            dimensions = _dimensions(client, collections, timeout)
        finally:
            client.close()
    except MilvusException as exc:
        if exc.code == Status.CONNECT_FAILED:
            fix = (
                f"start Milvus at {shown}, or correct RAG_INDEX__MILVUS_URI (empty: Milvus Lite "
                "under the data directory)"
            )
        else:
            fix = "check RAG_INDEX__MILVUS_TOKEN (user:password) and the Milvus server's log"
        return MilvusReport(problem("milvus", f"Milvus at {shown}: {exc.message}", fix))
    return MilvusReport(ok("milvus", f"Milvus at {shown} answers"), dimensions)


def _check_milvus_lite(path: Path, collections: Collection[str]) -> MilvusReport:
    if importlib.util.find_spec("milvus_lite") is None:
        return MilvusReport(
            problem(
                "milvus",
                "Milvus Lite is not installed (the package milvus-lite)",
                "install it (pip install milvus-lite), or set RAG_INDEX__MILVUS_URI to a server",
            )
        )
    if not path.exists():
        reason = unwritable_reason(path.parent)
        if reason:
            return MilvusReport(
                problem(
                    "milvus",
                    f"the Milvus Lite database {path} cannot be created: {reason}",
                    "make the data directory writable, or set RAG_DATA_DIR",
                )
            )
        return MilvusReport(
            ok("milvus", f"Milvus Lite database {path} is created at first use"), {}
        )
    reason = unwritable_reason(path)
    if reason:
        return MilvusReport(
            problem(
                "milvus",
                f"the Milvus Lite database {path} cannot be written: {reason}",
                "run rag-app (and the doctor) as the user that owns the data directory",
            )
        )
    if lite_database_in_use(path):
        return MilvusReport(
            warning(
                "milvus",
                f"the Milvus Lite database {path} is open in another process (a running "
                "`rag-app serve` or `rag-app worker`): its collections were not inspected",
                "nothing to do if rag-app is running; stop it to let the doctor look inside",
            )
        )
    return _inspect_lite(path, collections)


def _inspect_lite(path: Path, collections: Collection[str]) -> MilvusReport:
    from milvus_lite.server_manager import server_manager_instance
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    try:
        client = MilvusClient(str(path))
        try:
            dimensions = _dimensions(client, collections, None)
        finally:
            client.close()
    except MilvusException as exc:
        return MilvusReport(
            problem(
                "milvus",
                f"the Milvus Lite database {path} cannot be opened: {exc.message}",
                "check the folder's permissions and free disk space",
            )
        )
    finally:
        # No process held the database before, so the in-process server is ours: release it
        # (and its lock) so that a server started later in this process can open the database.
        server_manager_instance.release_server(str(path))
    return MilvusReport(
        ok(
            "milvus",
            f"Milvus Lite database {path} opens ({len(dimensions)} knowledge-base collections)",
        ),
        dimensions,
    )


def _dimensions(client: Any, collections: Collection[str], timeout: float | None) -> dict[str, int]:
    from indexes.stores.milvus import EMBEDDING_FIELD

    wanted = set(collections)
    dimensions: dict[str, int] = {}
    for name in client.list_collections(timeout=timeout):
        if name not in wanted:
            continue
        info = client.describe_collection(name, timeout=timeout)
        for spec in info.get("fields", []):
            if spec.get("name") == EMBEDDING_FIELD and "dim" in spec.get("params", {}):
                dimensions[name] = int(spec["params"]["dim"])
    return dimensions


def check_elasticsearch(settings: Settings, users: list[str], timeout: float) -> list[CheckResult]:
    """``users``: the knowledge bases (as shown names) whose keyword backend is Elasticsearch."""
    url = settings.index.elasticsearch_url
    if not url:
        if users:
            return [
                problem(
                    "elasticsearch",
                    f"knowledge bases {', '.join(users)} use the Elasticsearch keyword backend, "
                    "but no Elasticsearch is configured",
                    "set RAG_INDEX__ELASTICSEARCH_URL",
                )
            ]
        return [skipped("elasticsearch", "not configured (no knowledge base needs it)")]
    from elasticsearch import Elasticsearch

    api_key = settings.index.elasticsearch_api_key
    client = Elasticsearch(
        url,
        api_key=api_key.get_secret_value() if api_key else None,
        request_timeout=timeout,
        max_retries=0,
        retry_on_timeout=False,
    )
    try:
        return _check_elasticsearch_server(client, hide_password(url))
    finally:
        client.close()


def _check_elasticsearch_server(client: Any, shown: str) -> list[CheckResult]:
    from elasticsearch import (
        ApiError,
        AuthenticationException,
        AuthorizationException,
        TransportError,
    )

    try:
        version = client.info()["version"]["number"]
    except (AuthenticationException, AuthorizationException) as exc:
        return [
            problem(
                "elasticsearch",
                f"Elasticsearch at {shown} refused the credentials (HTTP {exc.meta.status})",
                "check RAG_INDEX__ELASTICSEARCH_API_KEY (or the user and password in the URL)",
            )
        ]
    except ApiError as exc:
        return [
            problem(
                "elasticsearch",
                f"Elasticsearch at {shown} answered HTTP {exc.meta.status}: {exc.message}",
                "check the Elasticsearch server's health and log",
            )
        ]
    except TransportError as exc:
        return [
            problem(
                "elasticsearch",
                f"Elasticsearch at {shown} is not reachable: {exc.message}",
                f"start Elasticsearch at {shown}, or correct RAG_INDEX__ELASTICSEARCH_URL",
            )
        ]
    return [ok("elasticsearch", f"Elasticsearch {version} at {shown} answers"), _check_ik(client)]


def _check_ik(client: Any) -> CheckResult:
    """A missing IK analyzer is a warning, not a problem: indexes then fall back to the
    standard analyzer (see indexes.stores.elasticsearch), which works, only worse for Chinese."""
    from elasticsearch import ApiError, BadRequestError, TransportError

    component = "elasticsearch: Chinese analyzer"
    try:
        client.indices.analyze(analyzer=IK_ANALYZER, text="中文分词")
    except BadRequestError:
        return warning(
            component,
            "the IK analyzer is not installed: new indexes use the standard analyzer, which "
            "splits Chinese into single characters (weaker Chinese keyword search)",
            "install the analysis-ik plugin matching the Elasticsearch version on every node and "
            "restart it (knowledge bases created before keep their analyzer until re-created); "
            "or keep the standard analyzer",
        )
    except (ApiError, TransportError) as exc:
        return warning(
            component,
            f"could not ask Elasticsearch whether the IK analyzer is installed: {exc}",
            "allow this API key to use the _analyze API, or check the plugins by hand "
            "(GET _cat/plugins)",
        )
    return ok(component, "the IK analyzer (ik_max_word, ik_smart) is installed")
