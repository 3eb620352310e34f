"""Shared fixtures: real databases (SQLite always, MariaDB/MySQL when reachable), the real app
behind Litestar's test client, and helpers to sign users in.

Service-backed fixtures skip when their service is absent on a developer laptop; with
RAG_REQUIRE_SERVICES=1 (as in .ci/run) a missing service fails instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pymysql
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.api.app import create_app
from rag_app.context import AppContext
from rag_app.db.engine import create_db_engine, create_sessionmaker
from rag_app.db.models import ChatHistory, ChatSession, Knowledge, Llm, Robot
from rag_app.domain.users.schemas import UserCreate
from rag_app.domain.users.service import UserService
from rag_app.settings import Settings
from tests.openai_server import forbid_global_settings, openai_server  # noqa: F401  (fixtures)
from tests.s3_server import s3_server  # noqa: F401  (fixture, shared by every module)

MYSQL_URL = os.environ.get("RAG_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
PASSWORD = "correct horse battery"
KNOWLEDGE = "/api/v1/knowledge"
ROBOTS = "/api/v1/robots"
LLMS = "/api/v1/llms"
KEYS = "/api/v1/apikeys"
# Past BIGINT and SQLite's INTEGER: an id like this must be refused before it reaches a driver.
HUGE_ID = 10**23
E = TypeVar("E")
T = TypeVar("T")


def require_service(name: str, reason: str) -> None:
    """Skip on a laptop without the service; fail in CI, where every service must be there."""
    message = f"{name} is not available: {reason}"
    if os.environ.get("RAG_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (RAG_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@dataclass
class MysqlServer:
    base_url: str

    def _connect(self) -> Any:
        from sqlalchemy.engine import make_url

        url = make_url(self.base_url)
        return pymysql.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 3306,
            user=url.username or "root",
            password=url.password or "",
            connect_timeout=3,
        )

    def create_database(self) -> str:
        """A fresh utf8mb4 database; returns its URL."""
        name = f"rag_test_{uuid.uuid4().hex[:10]}"
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(
                f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        return f"{self.base_url.rstrip('/')}/{name}"

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[-1]
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture(autouse=True)
def _no_global_llama_settings(request: pytest.FixtureRequest) -> None:
    """DESIGN §6: llm= and embed_model= are passed explicitly; any use of LlamaIndex's global
    Settings fails the test (see tests/openai_server.py)."""
    request.getfixturevalue("forbid_global_settings")


REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        require_service("Redis", f"{REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture(scope="session")
def mysql_server() -> MysqlServer:
    server = MysqlServer(MYSQL_URL)
    try:
        server._connect().close()
    except pymysql.err.MySQLError as exc:
        require_service("MariaDB/MySQL", f"{MYSQL_URL}: {exc}")
    return server


@pytest.fixture(scope="session")
def make_db_url(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """Factory of empty databases: make_db_url('sqlite') or make_db_url('mysql')."""
    created: list[str] = []

    def make(backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'rag_app.db'}"
        server: MysqlServer = request.getfixturevalue("mysql_server")
        url = server.create_database()
        created.append(url)
        return url

    yield make
    for url in created:
        MysqlServer(MYSQL_URL).drop_database(url)


def make_settings(db_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "data_dir": data_dir,
        "database": {"url": db_url},
        # Cheap hashing: the tests create hundreds of users.
        "security": {"argon2_time_cost": 1, "argon2_memory_kib": 1024},
        # One embedding process per test worker: the suite runs two workers on two cores, and
        # more model processes than cores only slow each other down. Pools of two are tested
        # in tests/integration/test_embedding_process.py.
        "jobs": {"embedding_processes": 1},
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session", params=["sqlite", "mysql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def app_ctx(backend: str, make_db_url: Any, tmp_path_factory: pytest.TempPathFactory) -> AppContext:
    settings = make_settings(make_db_url(backend), tmp_path_factory.mktemp(f"data-{backend}"))
    return AppContext.create(settings)


@pytest.fixture(scope="session")
async def client(app_ctx: AppContext) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(ctx=app_ctx)
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


@dataclass
class SignedIn:
    id: int
    username: str
    email: str
    password: str
    access_token: str
    refresh_token: str
    headers: dict[str, str] = field(default_factory=dict)


def new_api_key() -> str:
    return f"sk-test-{uuid.uuid4().hex}"


class Api:
    """The real app behind the test client, and helpers for tests.

    ``user``/``login`` and the ``create_*`` helpers go through HTTP and return the response
    body. ``admin`` (admins have no HTTP route by design; they come from the CLI), ``run`` and
    the row factories (``insert``, ``llm``, ``knowledge``, ``robot``, ``chat_session``,
    ``message``) write directly, for prerequisites whose own endpoints are not under test.
    """

    def __init__(
        self,
        client: AsyncTestClient[Any],
        ctx: AppContext,
        db: async_sessionmaker[AsyncSession],
    ) -> None:
        self.client = client
        self.ctx = ctx
        # The app runs on the test client's own event loop and its pooled MySQL connections
        # belong to that loop; rows written from the test's loop go through this separate pool.
        self.db = db

    async def login(self, username: str, password: str) -> SignedIn:
        response = await self.client.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        tokens = response.json()
        me = await self.client.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
        body = me.json()
        return SignedIn(
            id=body["id"],
            username=username,
            email=body["email"],
            password=password,
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
        )

    async def user(self, prefix: str = "user") -> SignedIn:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        response = await self.client.post(
            "/api/v1/auth/register",
            json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
        )
        assert response.status_code == 201, response.text
        return await self.login(name, PASSWORD)

    async def created(self, url: str, user: SignedIn, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``url`` as ``user``; it must answer 201. Returns the new resource."""
        response = await self.client.post(url, json=body, headers=user.headers)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def create_knowledge(self, user: SignedIn, **fields: Any) -> dict[str, Any]:
        """POST /knowledge; the embedding model is a new stored one unless given."""
        if "embed_llm_id" not in fields:
            fields["embed_llm_id"] = (await self.llm("embedding")).id
        return await self.created(KNOWLEDGE, user, {"name": "handbook", **fields})

    async def create_robot(self, user: SignedIn, **fields: Any) -> dict[str, Any]:
        return await self.created(ROBOTS, user, {"name": "helper", **fields})

    async def create_llm(self, admin: SignedIn, **fields: Any) -> dict[str, Any]:
        """POST /llms: a DeepSeek chat model unless the fields say otherwise."""
        body = {
            "provider": "deepseek",
            "name": f"chat-{uuid.uuid4().hex[:6]}",
            "model_name": "deepseek-chat",
            "model_type": "chat",
        }
        return await self.created(LLMS, admin, {**body, **fields})

    async def create_api_key(self, admin: SignedIn, llm_id: int, **fields: Any) -> dict[str, Any]:
        body = {"llm_id": llm_id, "alias": "main", "api_key": new_api_key()}
        return await self.created(KEYS, admin, {**body, **fields})

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Database work (reading rows back, calling a service) in a session of its own."""
        async with self.db() as session:
            return await work(session)

    async def insert(self, entity: E) -> E:
        """Store a row directly."""
        async with self.db() as session:
            session.add(entity)
            await session.commit()
            await session.refresh(entity)
        return entity

    async def llm(self, model_type: str = "embedding", **fields: Any) -> Llm:
        """A registered model, stored directly (its endpoints are tested in their own module)."""
        values: dict[str, Any] = {
            "name": f"{model_type}-{uuid.uuid4().hex[:6]}",
            "model_type": model_type,
            "provider": "local" if model_type == "embedding" else "openai-compatible",
            "model_name": "all-MiniLM-L6-v2" if model_type == "embedding" else "test-model",
            "base_url": None if model_type == "embedding" else "http://127.0.0.1:9/v1",
            "dimension": 384 if model_type == "embedding" else None,
        }
        values.update(fields)
        return await self.insert(Llm(**values))

    async def knowledge(self, owner: SignedIn, **fields: Any) -> Knowledge:
        """A stored knowledge base; its embedding model is a new stored one unless given."""
        if "embed_llm_id" not in fields:
            fields["embed_llm_id"] = (await self.llm("embedding")).id
        values: dict[str, Any] = {
            "user_id": owner.id,
            "name": "handbook",
            "vector_collection_name": f"kb_{uuid.uuid4().hex}",
        }
        return await self.insert(Knowledge(**{**values, **fields}))

    async def robot(self, owner: SignedIn, **fields: Any) -> Robot:
        """A stored robot: private, enabled, retrieval-only unless the fields say otherwise."""
        return await self.insert(Robot(**{"user_id": owner.id, "name": "helper", **fields}))

    async def chat_session(self, owner: SignedIn, robot_id: int, **fields: Any) -> ChatSession:
        values: dict[str, Any] = {"session_id": uuid.uuid4().hex, "user_id": owner.id}
        return await self.insert(ChatSession(**{**values, "robot_id": robot_id, **fields}))

    async def message(self, session_id: str, sequence: int, **fields: Any) -> ChatHistory:
        """A stored chat turn: a user's question unless the fields say otherwise."""
        values: dict[str, Any] = {
            "session_id": session_id,
            "message_id": uuid.uuid4().hex,
            "role": "user",
            "content": "你好",
            "sequence": sequence,
        }
        return await self.insert(ChatHistory(**{**values, **fields}))

    async def admin(self) -> SignedIn:
        name = f"admin_{uuid.uuid4().hex[:8]}"
        async with self.db() as session:
            await UserService(session, self.ctx).create(
                UserCreate(
                    username=name, email=f"{name}@example.com", password=PASSWORD, role="admin"
                )
            )
        return await self.login(name, PASSWORD)


@pytest.fixture(scope="session")
async def test_db(app_ctx: AppContext) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A pool on the test's own event loop, for writing prerequisites directly."""
    engine = create_db_engine(app_ctx.settings.database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def api(
    client: AsyncTestClient[Any], app_ctx: AppContext, test_db: async_sessionmaker[AsyncSession]
) -> Api:
    return Api(client, app_ctx, test_db)


@pytest.fixture
async def admin(api: Api) -> SignedIn:
    """A signed-in administrator, new for each test."""
    return await api.admin()


def assert_problem(response: Any, status: int, *fragments: str) -> dict[str, Any]:
    """A problem-details error with this status whose detail mentions every fragment."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    for fragment in fragments:
        assert fragment.lower() in body["detail"].lower(), body
    return body


def error_fields(problem: dict[str, Any]) -> set[str]:
    """The fields a 422 problem names in its ``errors`` list."""
    return {error["field"] for error in problem["errors"]}


def assert_invalid(response: Any, field: str) -> dict[str, Any]:
    """A 422 problem about ``field``, named in its detail and its errors."""
    problem = assert_problem(response, 422, field)
    assert field in error_fields(problem), problem
    return problem
