"""`rag-app doctor` against the real services here (SQLite, MariaDB, Redis, SeaweedFS S3,
Milvus Lite, the packaged embedding model, the local OpenAI-compatible server) and against
deliberately wrong configuration: wrong ports, bad credentials, a taken port, wrong keys,
vectors of the wrong size. No secret may appear in any output."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner, Result
from sqlalchemy.engine import make_url
from sqlmodel import Session

from indexes.specs import PACKAGED_EMBEDDING
from rag_app.api.app import create_app
from rag_app.cli_doctor import doctor
from rag_app.crypto import SecretBox, mask_secret
from rag_app.db import migrate
from rag_app.db.engine import create_sync_engine
from rag_app.db.models import ApiKey, Knowledge, Llm, User
from rag_app.doctor import CheckResult, run_checks
from rag_app.indexing.specs import store_settings
from rag_app.secrets import resolve_secrets
from rag_app.settings import Settings
from tests.conftest import MYSQL_URL, MysqlServer, require_service
from tests.openai_server import DEFAULT_API_KEY, OpenAIServer
from tests.s3_server import S3Server

TIMEOUT = 3.0  # the doctor's per-check timeout in these tests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers: the worst case for a timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


@dataclass
class Deployment:
    """One configuration (as settings values and as the RAG_* environment the CLI reads) with
    helpers to register models and knowledge bases in its database."""

    values: dict[str, Any]
    _owner_id: int | None = field(default=None, init=False)

    @property
    def settings(self) -> Settings:
        return Settings(**self.values)

    def env(self) -> dict[str, str]:
        flat: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for key, inner in value.items():
                    walk(f"{prefix}__{key.upper()}" if prefix else key.upper(), inner)
            else:
                flat[f"RAG_{prefix}"] = str(value)

        walk("", self.values)
        return flat

    def migrate(self, revision: str = "head") -> None:
        migrate.upgrade(self.settings.database_url, revision)

    def _insert(self, entity: Any) -> Any:
        engine = create_sync_engine(self.settings.database_url)
        try:
            with Session(engine, expire_on_commit=False) as session:
                session.add(entity)
                session.commit()
                session.refresh(entity)
                return entity
        finally:
            engine.dispose()

    def _owner(self) -> int:
        if self._owner_id is None:
            name = f"owner_{uuid.uuid4().hex[:8]}"
            user = self._insert(User(username=name, email=f"{name}@example.com", password_hash="x"))
            self._owner_id = user.id
        assert self._owner_id is not None
        return self._owner_id

    def model(self, model_type: str, api_key: str | None = None, **fields: Any) -> Llm:
        values: dict[str, Any] = {
            "name": f"{model_type}-{uuid.uuid4().hex[:6]}",
            "model_type": model_type,
            "provider": "openai-compatible",
        }
        llm: Llm = self._insert(Llm(**{**values, **fields}))
        if api_key is not None:
            box = SecretBox(resolve_secrets(self.settings).encryption_key)
            self._insert(
                ApiKey(
                    llm_id=llm.id or 0,
                    alias="main",
                    api_key_encrypted=box.encrypt(api_key),
                    key_mask=mask_secret(api_key),
                )
            )
        return llm

    def local_embedding(self) -> Llm:
        return self.model(
            "embedding", provider="local", model_name=PACKAGED_EMBEDDING, dimension=384
        )

    def knowledge(self, llm: Llm, name: str = "handbook", **fields: Any) -> Knowledge:
        values = {
            "user_id": self._owner(),
            "name": name,
            "embed_llm_id": llm.id,
            "vector_collection_name": f"kb_{uuid.uuid4().hex}",
        }
        knowledge: Knowledge = self._insert(Knowledge(**{**values, **fields}))
        return knowledge

    def collection(self, knowledge: Knowledge, dimension: int) -> None:
        """Create the knowledge base's Milvus Lite collection, as its first document would."""
        from milvus_lite.server_manager import server_manager_instance

        from indexes.stores.milvus import MilvusStore

        stores = store_settings(self.settings)
        store = MilvusStore.open(stores, knowledge.vector_collection_name, dimension)
        store.client.close()
        # A running app would hold the database; this test process must let the doctor in.
        server_manager_instance.release_server(str(stores.milvus_lite_path))

    def check(self, timeout: float = TIMEOUT) -> list[CheckResult]:
        return run_checks(self.settings, timeout=timeout)


def deployment(tmp_path: Path, db_url: str | None = None, **overrides: Any) -> Deployment:
    data_dir = tmp_path / "data"
    values: dict[str, Any] = {
        "environment": "test",
        "data_dir": str(data_dir),
        "database": {"url": db_url or f"sqlite:///{data_dir / 'rag_app.db'}"},
        # A port nobody uses: 8000 may be taken on the machine running the tests.
        "server": {"host": "127.0.0.1", "port": free_port()},
    }
    values.update(overrides)
    data_dir.mkdir(parents=True, exist_ok=True)
    return Deployment(values)


def row(results: list[CheckResult], component: str) -> CheckResult:
    """The one result whose component is, or starts with, ``component``."""
    found = [r for r in results if r.component == component] or [
        r for r in results if r.component.startswith(component)
    ]
    assert len(found) == 1, (component, results)
    return found[0]


def problems(results: list[CheckResult]) -> list[CheckResult]:
    return [r for r in results if r.status == "problem"]


def invoke(monkeypatch: pytest.MonkeyPatch, target: Deployment, *args: str) -> Result:
    for name in list(os.environ):
        if name.startswith("RAG_") and name not in ("RAG_REQUIRE_SERVICES", "RAG_TEST_MYSQL_URL"):
            monkeypatch.delenv(name)
    for name, value in target.env().items():
        monkeypatch.setenv(name, value)
    return CliRunner().invoke(doctor, ["--timeout", str(TIMEOUT), *args])


def parsed(result: Result) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = json.loads(result.stdout)
    assert all(set(r) == {"component", "status", "detail", "fix"} for r in rows), rows
    return rows


def as_results(rows: list[dict[str, str]]) -> list[CheckResult]:
    return [CheckResult(**r) for r in rows]  # type: ignore[arg-type]


def mysql_available() -> MysqlServer:
    server = MysqlServer(MYSQL_URL)
    try:
        server._connect().close()
    except Exception as exc:
        require_service("MariaDB/MySQL", f"{MYSQL_URL}: {exc}")
    return server


# --- everything fine --------------------------------------------------------------------------


def test_embedded_default_is_all_ok(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = deployment(tmp_path)
    target.migrate()
    minilm = target.local_embedding()
    handbook = target.knowledge(minilm, "handbook")
    target.collection(handbook, 384)

    result = invoke(monkeypatch, target)

    assert result.exit_code == 0, result.output
    for header in ("COMPONENT", "STATUS", "DETAIL", "FIX"):
        assert header in result.stdout
    assert "No problems found" in result.stdout
    rows = as_results(parsed(invoke(monkeypatch, target, "--json")))
    assert {r.component: r.status for r in rows} == {
        "database": "ok",
        "migrations": "ok",
        "secrets": "ok",
        "redis": "skipped",
        "object store": "ok",
        "milvus": "ok",
        "elasticsearch": "skipped",
        f"model '{minilm.name}' (id {minilm.id}, embedding)": "ok",
        f"dimension of '{minilm.name}' (id {minilm.id})": "ok",
        "server port": "ok",
    }
    assert "SQLite" in row(rows, "database").detail
    assert "1 knowledge-base collections" in row(rows, "milvus").detail
    assert "384-d vectors" in row(rows, "model ").detail
    assert f"'handbook' (id {handbook.id})" in row(rows, "dimension of").detail


def test_mariadb_redis_and_s3_are_all_ok(
    tmp_path: Path, make_db_url: Any, redis_url: str, s3_server: S3Server
) -> None:
    target = deployment(
        tmp_path,
        make_db_url("mysql"),
        redis={"url": redis_url},
        storage={
            "backend": "s3",
            "s3_endpoint": s3_server.endpoint,
            "s3_access_key": s3_server.access_key,
            "s3_secret_key": s3_server.secret_key,
            "s3_bucket": f"doctor-{uuid.uuid4().hex[:8]}",
        },
    )
    target.migrate()
    target.knowledge(target.local_embedding())

    results = target.check()

    assert problems(results) == []
    assert "MySQL/MariaDB" in row(results, "database").detail
    assert "answers PING" in row(results, "redis").detail
    store = row(results, "object store")
    assert s3_server.endpoint in store.detail
    assert "credentials accepted" in store.detail
    assert s3_server.client().bucket_exists(target.values["storage"]["s3_bucket"])


def test_remote_models_with_a_valid_key_answer(tmp_path: Path, openai_server: OpenAIServer) -> None:
    target = deployment(tmp_path)
    target.migrate()
    common = {"base_url": openai_server.base_url, "api_key": DEFAULT_API_KEY}
    embed = target.model("embedding", model_name="test-embed", dimension=64, **common)
    target.model("chat", model_name="test-chat", **common)
    target.model("rerank", model_name="test-rerank", **common)
    target.knowledge(embed, "remote")

    results = target.check()

    assert problems(results) == []
    assert "64-d vectors" in row(results, f"model '{embed.name}'").detail
    chat = openai_server.requests_to("/chat/completions")
    assert len(chat) == 1
    assert chat[0].key_ok
    assert chat[0].body["max_tokens"] == 1
    assert [r.key_ok for r in openai_server.requests_to("/embeddings")] == [True]
    assert [r.key_ok for r in openai_server.requests_to("/rerank")] == [True]


# --- the database -----------------------------------------------------------------------------


def test_missing_sqlite_database_asks_for_migrate(tmp_path: Path) -> None:
    results = deployment(tmp_path).check()

    database = row(results, "database")
    assert database.status == "problem"
    assert "does not exist yet" in database.detail
    assert "rag-app migrate" in database.fix
    assert row(results, "models").status == "skipped"


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
def test_unapplied_migrations_ask_for_migrate(
    tmp_path: Path, make_db_url: Any, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = deployment(tmp_path, make_db_url(backend))
    engine = create_sync_engine(target.settings.database_url)
    engine.connect().close()  # an empty database (SQLite creates the file)
    engine.dispose()

    migrations = row(target.check(), "migrations")
    assert migrations.status == "problem"
    assert "no migration applied" in migrations.detail
    assert migrations.fix == "run `rag-app migrate`"

    target.migrate("0001")
    migrations = row(target.check(), "migrations")
    assert migrations.status == "problem"
    assert f"at revision 0001, the code at {migrate.head_revision()}" in migrations.detail
    assert "rag-app migrate" in migrations.fix
    result = invoke(monkeypatch, target)
    assert result.exit_code == 1
    assert "PROBLEM" in result.stdout


def test_wrong_mariadb_port(tmp_path: Path) -> None:
    port = free_port()
    target = deployment(tmp_path, f"mysql+pymysql://root@127.0.0.1:{port}/rag_app")

    started = time.monotonic()
    results = target.check()

    assert time.monotonic() - started < 30
    database = row(results, "database")
    assert database.status == "problem"
    assert "not reachable" in database.detail
    assert "Connection refused" in database.detail
    assert f"start MariaDB/MySQL on 127.0.0.1:{port}" in database.fix
    assert "RAG_DATABASE__URL" in database.fix
    assert row(results, "models").status == "skipped"


def test_bad_mariadb_credentials_and_no_password_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = mysql_available()
    base = make_url(server.base_url)
    password = f"pw-{uuid.uuid4().hex}"
    url = f"mysql+pymysql://doctor_nobody:{password}@{base.host}:{base.port or 3306}/rag_app"
    target = deployment(tmp_path, url)

    result = invoke(monkeypatch, target, "--json")

    assert result.exit_code == 1
    database = row(as_results(parsed(result)), "database")
    assert database.status == "problem"
    assert "rejected the credentials" in database.detail
    assert "doctor_nobody:***@" in database.detail
    assert "user name and password in RAG_DATABASE__URL" in database.fix
    text = invoke(monkeypatch, target)
    assert password not in result.output
    assert password not in text.output


# --- Redis and the object store ---------------------------------------------------------------


def test_redis_at_a_wrong_port(tmp_path: Path) -> None:
    port = free_port()
    target = deployment(tmp_path, redis={"url": f"redis://:redis-pw-1234@127.0.0.1:{port}/0"})

    redis_row = row(target.check(), "redis")

    assert redis_row.status == "problem"
    assert "not reachable" in redis_row.detail
    assert f"redis://:***@127.0.0.1:{port}/0" in redis_row.detail
    assert "redis-pw-1234" not in redis_row.detail + redis_row.fix
    assert f"start Redis on 127.0.0.1:{port}" in redis_row.fix


def test_s3_with_bad_credentials(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong_secret = f"wrong-{uuid.uuid4().hex}"
    storage = {
        "backend": "s3",
        "s3_endpoint": s3_server.endpoint,
        "s3_access_key": s3_server.access_key,
        "s3_secret_key": wrong_secret,
    }
    target = deployment(tmp_path, storage=storage)

    result = invoke(monkeypatch, target, "--json")

    store = row(as_results(parsed(result)), "object store")
    assert store.status == "problem"
    assert "rejected the credentials" in store.detail
    assert "RAG_STORAGE__S3_SECRET_KEY" in store.fix
    assert result.exit_code == 1
    assert wrong_secret not in result.output
    assert s3_server.access_key not in result.output


def test_s3_at_a_closed_port(tmp_path: Path) -> None:
    port = free_port()
    storage = {
        "backend": "s3",
        "s3_endpoint": f"127.0.0.1:{port}",
        "s3_access_key": "access",
        "s3_secret_key": "secret-value",
    }
    store = row(deployment(tmp_path, storage=storage).check(), "object store")
    assert store.status == "problem"
    assert "not reachable" in store.detail
    assert f"start the S3 server (MinIO) at 127.0.0.1:{port}" in store.fix


def test_s3_settings_missing(tmp_path: Path) -> None:
    store = row(deployment(tmp_path, storage={"backend": "s3"}).check(), "object store")
    assert store.status == "problem"
    assert "RAG_STORAGE__S3_ENDPOINT" in store.detail
    assert "RAG_STORAGE__S3_SECRET_KEY" in store.detail


# --- Milvus and Elasticsearch -----------------------------------------------------------------


def test_elasticsearch_at_a_closed_port(tmp_path: Path) -> None:
    port = free_port()
    target = deployment(
        tmp_path,
        index={"elasticsearch_url": f"http://elastic:es-pw-5678@127.0.0.1:{port}"},
    )

    results = target.check()

    es = row(results, "elasticsearch")
    assert es.status == "problem"
    assert "not reachable" in es.detail
    assert f"http://elastic:***@127.0.0.1:{port}" in es.detail
    assert "RAG_INDEX__ELASTICSEARCH_URL" in es.fix
    assert all("es-pw-5678" not in r.detail + r.fix for r in results)


def test_knowledge_base_on_elasticsearch_without_a_url(tmp_path: Path) -> None:
    target = deployment(tmp_path)
    target.migrate()
    kb = target.knowledge(target.local_embedding(), "faq", keyword_backend="elasticsearch")

    es = row(target.check(), "elasticsearch")

    assert es.status == "problem"
    assert f"'faq' (id {kb.id})" in es.detail
    assert es.fix == "set RAG_INDEX__ELASTICSEARCH_URL"


def test_milvus_server_at_a_closed_port(tmp_path: Path) -> None:
    port = free_port()
    milvus = row(
        deployment(tmp_path, index={"milvus_uri": f"http://127.0.0.1:{port}"}).check(), "milvus"
    )
    assert milvus.status == "problem"
    assert f"127.0.0.1:{port}" in milvus.detail
    assert "RAG_INDEX__MILVUS_URI" in milvus.fix


# --- the server port --------------------------------------------------------------------------


def test_server_port_taken_by_another_program(
    tmp_path: Path, silent_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = deployment(tmp_path, server={"host": "127.0.0.1", "port": silent_port})

    result = invoke(monkeypatch, target, "--json")

    port = row(as_results(parsed(result)), "server port")
    assert port.status == "problem"
    assert f"the port {silent_port} on 127.0.0.1 is taken" in port.detail
    assert "RAG_SERVER__PORT" in port.fix
    assert result.exit_code == 1


def test_server_port_held_by_a_running_rag_app_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = deployment(tmp_path)
    target.migrate()
    sock = socket.socket()
    sock.bind(("127.0.0.1", target.values["server"]["port"]))
    server = uvicorn.Server(
        uvicorn.Config(create_app(target.settings), log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("uvicorn did not start")
            time.sleep(0.05)
        result = invoke(monkeypatch, target, "--json")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()

    port = row(as_results(parsed(result)), "server port")
    assert port.status == "warning"
    assert "running rag_app server" in port.detail
    assert result.exit_code == 0, result.output  # a warning alone is not a failure


# --- registered models ------------------------------------------------------------------------


def test_remote_embedding_with_a_wrong_key(
    tmp_path: Path, openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong_key = f"sk-wrong-{uuid.uuid4().hex}"
    target = deployment(tmp_path)
    target.migrate()
    embed = target.model(
        "embedding",
        model_name="test-embed",
        base_url=openai_server.base_url,
        dimension=64,
        api_key=wrong_key,
    )
    target.knowledge(embed)

    result = invoke(monkeypatch, target, "--json")

    rows = as_results(parsed(result))
    model = row(rows, f"model '{embed.name}'")
    assert model.status == "problem"
    assert "rejected the API key (HTTP 401)" in model.detail
    assert "register a valid API key" in model.fix
    assert "/api/v1/apikeys" in model.fix
    assert row(rows, "dimension of").status == "skipped"
    assert [r.key_ok for r in openai_server.requests_to("/embeddings")] == [False]
    assert result.exit_code == 1
    # The test server echoes the key it was sent in its 401 body, as real providers do.
    text = invoke(monkeypatch, target)
    assert wrong_key not in result.output
    assert wrong_key not in text.output


def test_remote_embedding_at_an_unreachable_url(tmp_path: Path) -> None:
    target = deployment(tmp_path)
    target.migrate()
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    embed = target.model(
        "embedding", model_name="test-embed", base_url=base_url, dimension=64, api_key="sk-x1234"
    )

    model = row(target.check(), f"model '{embed.name}'")

    assert model.status == "problem"
    assert "could not be reached" in model.detail
    assert f"start the provider at {base_url}" in model.fix
    assert "base_url" in model.fix


def test_knowledge_base_whose_vectors_differ_from_its_model(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    target = deployment(tmp_path)
    target.migrate()
    # Registered right (the server returns 64-d vectors), but a knowledge base holds 384-d
    # ones: the model behind the registration was changed after its first documents.
    embed = target.model(
        "embedding",
        model_name="test-embed",
        base_url=openai_server.base_url,
        dimension=64,
        api_key=DEFAULT_API_KEY,
    )
    legacy = target.knowledge(embed, "legacy")
    target.collection(legacy, 384)
    fresh = target.knowledge(embed, "fresh")

    dimension = row(target.check(), "dimension of")

    assert dimension.status == "problem"
    assert "returns 64-d vectors" in dimension.detail
    assert f"'legacy' (id {legacy.id}, 384-d stored)" in dimension.detail
    assert f"id {fresh.id}" not in dimension.detail
    assert "new knowledge bases" in dimension.fix


def test_model_registered_with_the_wrong_dimension(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    target = deployment(tmp_path)
    target.migrate()
    embed = target.model(
        "embedding",
        model_name="test-embed",
        base_url=openai_server.base_url,
        dimension=384,
        api_key=DEFAULT_API_KEY,
    )
    kb = target.knowledge(embed, "handbook")

    dimension = row(target.check(), "dimension of")

    assert dimension.status == "problem"
    assert "returns 64-d vectors but is registered with dimension 384" in dimension.detail
    assert f"'handbook' (id {kb.id}, 384-d expected)" in dimension.detail


def test_embedding_model_without_knowledge_bases_and_a_disabled_one(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    target = deployment(tmp_path)
    target.migrate()
    target.model(
        "embedding",
        model_name="test-embed",
        base_url=openai_server.base_url,
        dimension=64,
        api_key=DEFAULT_API_KEY,
    )
    target.model("embedding", model_name="test-embed", status=0)

    results = target.check()

    assert row(results, "dimension of").detail == "64-d vectors"
    disabled = [r for r in results if r.status == "skipped" and r.detail == "disabled"]
    assert len(disabled) == 1


def test_stored_key_that_cannot_be_decrypted(tmp_path: Path) -> None:
    target = deployment(tmp_path)
    target.migrate()
    llm = target.model("chat", model_name="test-chat", base_url="http://127.0.0.1:9/v1")
    target._insert(
        ApiKey(
            llm_id=llm.id or 0,
            alias="old",
            api_key_encrypted=SecretBox("another-key-entirely").encrypt("sk-old-key"),
            key_mask="sk-…-key",
        )
    )
    resolve_secrets(target.settings)  # this deployment's own generated secrets

    model = row(target.check(), f"model '{llm.name}'")

    assert model.status == "problem"
    assert "cannot be decrypted" in model.detail
    assert "enter the model's API key again" in model.fix


# --- timeouts, configuration, output ----------------------------------------------------------


def test_a_silent_listener_never_hangs_a_check(tmp_path: Path, silent_port: int) -> None:
    address = f"127.0.0.1:{silent_port}"
    target = deployment(
        tmp_path,
        f"mysql+pymysql://root@{address}/rag_app",
        redis={"url": f"redis://{address}/0"},
        storage={
            "backend": "s3",
            "s3_endpoint": address,
            "s3_access_key": "access",
            "s3_secret_key": "secret-value",
        },
        index={"milvus_uri": f"http://{address}", "elasticsearch_url": f"http://{address}"},
        server={"host": "127.0.0.1", "port": silent_port},
    )

    started = time.monotonic()
    results = target.check(timeout=1.0)
    elapsed = time.monotonic() - started

    assert elapsed < 30, elapsed
    for component in (
        "database",
        "redis",
        "object store",
        "milvus",
        "elasticsearch",
        "server port",
    ):
        assert row(results, component).status == "problem", row(results, component)


def test_unreadable_configuration_is_a_problem_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_SERVER__PORT", "not-a-port")

    result = CliRunner().invoke(doctor, ["--json"])

    assert result.exit_code == 1
    [configuration] = parsed(result)
    assert configuration["component"] == "configuration"
    assert "server.port" in configuration["detail"]


def test_json_lists_every_check_without_secrets(
    tmp_path: Path, openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_key = f"sk-{uuid.uuid4().hex}"
    secrets = {
        "db": f"db-{uuid.uuid4().hex}",
        "redis": f"rd-{uuid.uuid4().hex}",
        "s3": f"s3-{uuid.uuid4().hex}",
        "es": f"es-{uuid.uuid4().hex}",
        "jwt": f"jwt-{uuid.uuid4().hex}",
        "encryption": f"enc-{uuid.uuid4().hex}",
    }
    target = deployment(
        tmp_path,
        security={"jwt_secret": secrets["jwt"], "encryption_key": secrets["encryption"]},
        redis={"url": f"redis://:{secrets['redis']}@127.0.0.1:{free_port()}/0"},
        storage={
            "backend": "s3",
            "s3_endpoint": f"127.0.0.1:{free_port()}",
            "s3_access_key": "doctor-access",
            "s3_secret_key": secrets["s3"],
        },
        index={
            "elasticsearch_url": f"http://127.0.0.1:{free_port()}",
            "elasticsearch_api_key": secrets["es"],
        },
    )
    target.migrate()
    target.model("chat", model_name="test-chat", base_url=openai_server.base_url, api_key=model_key)
    mysql_like = deployment(
        tmp_path / "other", f"mysql+pymysql://root:{secrets['db']}@127.0.0.1:{free_port()}/x"
    )

    first = invoke(monkeypatch, target, "--json")
    second = invoke(monkeypatch, mysql_like, "--json")

    assert first.exit_code == 1
    assert second.exit_code == 1
    statuses = {r["component"]: r["status"] for r in parsed(first)}
    assert statuses["redis"] == statuses["object store"] == statuses["elasticsearch"] == "problem"
    assert statuses["secrets"] == "ok"
    # The model's key was decrypted and sent (and refused: the test server wants another).
    assert [r.key_ok for r in openai_server.requests_to("/chat/completions")] == [False]
    for output in (first.output, second.output):
        for secret in [model_key, *secrets.values()]:
            assert secret not in output


def test_model_that_never_answers_times_out(tmp_path: Path, silent_port: int) -> None:
    target = deployment(tmp_path)
    target.migrate()
    base_url = f"http://127.0.0.1:{silent_port}/v1"
    chat = target.model("chat", model_name="test-chat", base_url=base_url, api_key="sk-x1234")

    started = time.monotonic()
    model = row(target.check(timeout=1.0), f"model '{chat.name}'")

    assert time.monotonic() - started < 20
    assert model.status == "problem"
    assert "did not answer within 1 s" in model.detail
    assert f"start the provider at {base_url}" in model.fix


def test_milvus_lite_open_in_another_process_is_a_warning(tmp_path: Path) -> None:
    target = deployment(tmp_path)
    target.migrate()
    lite_path = store_settings(target.settings).milvus_lite_path
    lite_path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pymilvus import MilvusClient\n"
            "MilvusClient(sys.argv[1]).list_collections()\n"
            "print('ready', flush=True)\n"
            "time.sleep(120)\n",
            str(lite_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        milvus = row(target.check(), "milvus")
    finally:
        holder.kill()
        holder.wait(timeout=30)

    assert milvus.status == "warning"
    assert "open in another process" in milvus.detail


def test_a_real_elasticsearch_and_its_chinese_analyzer(tmp_path: Path) -> None:
    # As in test_stores: no Elasticsearch runs on these machines or in CI, so an unset
    # RAG_TEST_ES_URL skips; one that is set must answer.
    es_url = os.environ.get("RAG_TEST_ES_URL")
    if not es_url:
        pytest.skip("RAG_TEST_ES_URL is not set: no Elasticsearch to test against")

    results = deployment(tmp_path, index={"elasticsearch_url": es_url}).check()

    assert row(results, "elasticsearch").status == "ok"
    analyzer = row(results, "elasticsearch: Chinese analyzer")
    # Which one depends on the server's plugins; never a failing problem either way.
    assert analyzer.status in ("ok", "warning")
    if analyzer.status == "warning":
        assert "IK analyzer is not installed" in analyzer.detail
