"""First run: `rag-app serve` on a fresh data directory (a real server process, offline), its
second start, the RAG_ADMIN_* and RAG_CHAT_* variables, and rag_app.bootstrap itself on SQLite
and MariaDB (idempotence, key rotation, two processes starting at once)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import func
from sqlmodel import col, select

from rag_app.bootstrap import BootstrapReport, bootstrap, prepare_schema
from rag_app.cli import main
from rag_app.context import AppContext
from rag_app.crypto import SecretBox
from rag_app.db.models import ApiKey, Llm, User
from rag_app.domain.users.schemas import UserCreate
from rag_app.domain.users.service import UserService
from rag_app.errors import ConfigurationError
from tests.conftest import make_settings
from tests.openai_server import OpenAIServer

RAG_APP = Path(sys.executable).with_name("rag-app")
GENERATED = re.compile(r"generated password: (\S+) \(shown only this once")
START_SECONDS = 180
# Any attempt to reach the internet goes to a closed port; loopback (the test servers) not.
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fresh_env(data_dir: Path, **variables: str) -> dict[str, str]:
    """A machine that has never run rag_app: no RAG_* variable but the data directory (so no
    RAG_DATABASE__URL: the SQLite default), cheap password hashing, offline."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAG_")}
    env.update(OFFLINE)
    env.update(
        RAG_DATA_DIR=str(data_dir),
        RAG_SECURITY__ARGON2_TIME_COST="1",
        RAG_SECURITY__ARGON2_MEMORY_KIB="1024",
        PYTHONUNBUFFERED="1",
    )
    env.update(variables)
    return env


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def api(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, trust_env=False)


def _drain(stream: Any, into: list[str]) -> None:
    for line in stream:
        into.append(line)


@contextmanager
def serving(env: dict[str, str], cwd: Path) -> Iterator[Server]:
    """`rag-app serve` in a process of its own, until /health answers; stopped (Ctrl-C) on
    exit, its output complete in ``stdout``/``stderr`` afterwards."""
    port = free_port()
    process = subprocess.Popen(
        [str(RAG_APP), "serve", "--port", str(port)],
        env=env,
        cwd=cwd,  # no .env or config/ of the source tree's working directory
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = Server(f"http://127.0.0.1:{port}", process)
    readers = [
        threading.Thread(target=_drain, args=(process.stdout, server.out), daemon=True),
        threading.Thread(target=_drain, args=(process.stderr, server.err), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        _wait_until_healthy(server)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(2)  # SIGINT: uvicorn's graceful shutdown
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for reader in readers:
            reader.join(timeout=10)


def _wait_until_healthy(server: Server) -> None:
    deadline = time.monotonic() + START_SECONDS
    with server.api() as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                time.sleep(0.5)  # let the readers catch the last lines
                pytest.fail(f"rag-app serve exited: {server.stdout}\n{server.stderr}")
            try:
                if client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
    pytest.fail(f"rag-app serve did not answer within {START_SECONDS} s: {server.stderr}")


def sign_in(server: Server, username: str, password: str) -> str:
    with server.api() as client:
        response = client.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def listing(server: Server, token: str, path: str) -> dict[str, Any]:
    with server.api(token) as client:
        response = client.get(path)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- a real server process ----------------------------------------------------------------------


def test_first_start_then_a_second_start_that_changes_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = fresh_env(data_dir)
    with serving(env, tmp_path) as first:
        (password,) = GENERATED.findall(first.stdout)
        assert len(password) >= 20
        token = sign_in(first, "admin", password)
        with first.api(token) as client:
            me = client.get("/api/v1/auth/me").json()
            assert (me["role"], me["email"]) == ("admin", "admin@example.com")
            # Something to lose: a second user and a knowledge base on the packaged model.
            registered = client.post(
                "/api/v1/auth/register",
                json={"username": "reader", "email": "r@example.com", "password": "x" * 10},
            )
            assert registered.status_code == 201, registered.text
        models = listing(first, token, "/api/v1/llms")["items"]
        assert [
            (m["provider"], m["model_name"], m["model_type"], m["dimension"]) for m in models
        ] == [("local", "all-MiniLM-L6-v2", "embedding", 384)]
        with first.api(token) as client:
            kb = client.post(
                "/api/v1/knowledge", json={"name": "handbook", "embed_llm_id": models[0]["id"]}
            )
            assert kb.status_code == 201, kb.text
        assert f"API docs: {first.url}/docs" in first.stdout
        assert data_dir.is_dir()
        assert (data_dir / "indexes").is_dir()
        assert (data_dir / "rag_app.db").is_file()
    assert first.stdout.count(password) == 1  # printed once ...
    assert password not in first.stderr  # ... and never logged

    with serving(env, tmp_path) as second:
        assert "password" not in second.stdout
        assert "Created" not in second.stdout
        assert "Registered" not in second.stdout
        again = sign_in(second, "admin", password)
        assert listing(second, again, "/api/v1/users")["total"] == 2
        assert listing(second, again, "/api/v1/llms")["items"] == models
        assert [k["name"] for k in listing(second, again, "/api/v1/knowledge")["items"]] == [
            "handbook"
        ]
        # Same secrets: a token of the first run still works.
        assert listing(second, token, "/api/v1/auth/me")["username"] == "admin"


def test_administrator_and_chat_model_from_the_environment(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    key = f"sk-first-run-{uuid.uuid4().hex}"
    openai_server.api_key = key
    data_dir = tmp_path / "data"
    env = fresh_env(
        data_dir,
        RAG_ADMIN_USERNAME="boss",
        RAG_ADMIN_PASSWORD="a boss password",
        RAG_ADMIN_EMAIL="boss@corp.example.com",
        RAG_CHAT_BASE_URL=openai_server.base_url,
        RAG_CHAT_MODEL="test-chat",
        RAG_CHAT_API_KEY=key,
    )
    with serving(env, tmp_path) as first:
        assert "Created the administrator 'boss' with the password from RAG_ADMIN_PASSWORD" in (
            first.stdout
        )
        assert GENERATED.search(first.stdout) is None
        assert "Registered the chat model 'test-chat'" in first.stdout
        token = sign_in(first, "boss", "a boss password")
        assert listing(first, token, "/api/v1/auth/me")["email"] == "boss@corp.example.com"
        models = listing(first, token, "/api/v1/llms")["items"]
        chat = next(m for m in models if m["model_type"] == "chat")
        assert (chat["provider"], chat["model_name"], chat["base_url"], chat["has_api_key"]) == (
            "openai-compatible",
            "test-chat",
            openai_server.base_url,
            True,
        )
        keys = listing(first, token, "/api/v1/apikeys")
        assert [(k["llm_id"], k["alias"]) for k in keys["items"]] == [
            (chat["id"], "RAG_CHAT_API_KEY")
        ]
        assert key not in json.dumps(keys)
    for output in (first.stdout, first.stderr):
        assert key not in output
        assert "a boss password" not in output
    assert_key_stored_encrypted(data_dir, key)

    with serving(env, tmp_path) as second:
        assert "Created" not in second.stdout
        assert "Registered" not in second.stdout
        assert "Replaced" not in second.stdout
        token = sign_in(second, "boss", "a boss password")
        assert listing(second, token, "/api/v1/llms")["items"] == models
        assert listing(second, token, "/api/v1/apikeys")["total"] == 1
        assert listing(second, token, "/api/v1/users")["total"] == 1
    assert key not in second.stdout + second.stderr


def assert_key_stored_encrypted(data_dir: Path, key: str) -> None:
    """The column holds AES-GCM ciphertext that opens, with the instance's key, to ``key``."""
    with sqlite3.connect(data_dir / "rag_app.db") as db:
        (sealed,) = db.execute("SELECT api_key_encrypted FROM rag_apikey").fetchone()
    assert sealed.startswith("v1:")
    assert key not in sealed
    secrets = json.loads((data_dir / "secrets.json").read_text(encoding="utf-8"))
    assert SecretBox(secrets["encryption_key"]).decrypt(sealed) == key


# --- serve refuses a broken first-run configuration before it starts ----------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [name for name in os.environ if name.startswith("RAG_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_SECURITY__ARGON2_TIME_COST", "1")
    monkeypatch.setenv("RAG_SECURITY__ARGON2_MEMORY_KIB", "1024")
    return tmp_path / "data"


def users_in(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "rag_app.db") as db:
        (count,) = db.execute("SELECT count(*) FROM rag_user").fetchone()
    return int(count)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"RAG_ADMIN_PASSWORD": "short"}, "RAG_ADMIN_PASSWORD"),
        ({"RAG_ADMIN_USERNAME": "a b"}, "RAG_ADMIN_USERNAME"),
        ({"RAG_CHAT_MODEL": "deepseek-chat"}, "RAG_CHAT_BASE_URL is missing"),
        ({"RAG_CHAT_API_KEY": "sk-lonely-key"}, "RAG_CHAT_API_KEY is set without"),
        (
            {"RAG_CHAT_BASE_URL": "ftp://example.com", "RAG_CHAT_MODEL": "m"},
            "RAG_CHAT_BASE_URL: Value error, must start with http",
        ),
        (
            {
                "RAG_CHAT_BASE_URL": "https://api.deepseek.com/v1",
                "RAG_CHAT_MODEL": "deepseek-chat",
                "RAG_CHAT_API_KEY": "sk-one sk-two",
            },
            "RAG_CHAT_API_KEY must be one key",
        ),
    ],
)
async def test_serve_refuses_a_broken_configuration_before_creating_anyone(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    result = await asyncio.to_thread(lambda: CliRunner().invoke(main, ["serve"]))
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert "API docs" not in result.output  # the server never started
    assert "sk-lonely-key" not in result.output
    assert users_in(cli_env) == 0


async def test_serve_without_auto_migrate_needs_a_migrated_database(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_DATABASE__AUTO_MIGRATE", "false")
    result = await asyncio.to_thread(lambda: CliRunner().invoke(main, ["serve"]))
    assert result.exit_code == 1, result.output
    assert "run `rag-app migrate` first" in result.output
    assert "Traceback" not in result.output


# --- rag_app.bootstrap on SQLite and MariaDB ----------------------------------------------------


async def context_for(db_url: str, data_dir: Path, **settings: Any) -> AppContext:
    ctx = AppContext.create(make_settings(db_url, data_dir, **settings))
    await prepare_schema(ctx)
    return ctx


async def counts(ctx: AppContext) -> dict[str, int]:
    async with ctx.sessionmaker() as session:
        return {
            entity.__name__: (await session.exec(select(func.count()).select_from(entity))).one()
            for entity in (User, Llm, ApiKey)
        }


async def test_bootstrap_twice(backend: str, make_db_url: Any, tmp_path: Path) -> None:
    ctx = await context_for(make_db_url(backend), tmp_path / "data")
    try:
        first = await bootstrap(ctx)
        assert first.admin_created == "admin"
        password = first.generated_password
        assert password is not None
        assert password not in repr(first)
        assert any(password in line for line in first.lines())
        assert first.embedding_model_created
        async with ctx.sessionmaker() as session:
            admin = await session.get(User, first.admin_id)
            model = await session.get(Llm, first.embedding_model_id)
        assert admin is not None
        assert model is not None
        assert (admin.username, admin.role, admin.email) == ("admin", "admin", "admin@example.com")
        assert ctx.passwords.verify(admin.password_hash, password)
        assert (model.provider, model.model_name, model.dimension, model.user_id) == (
            "local",
            "all-MiniLM-L6-v2",
            384,
            admin.id,
        )
        before = await counts(ctx)
        assert before == {"User": 1, "Llm": 1, "ApiKey": 0}

        second = await bootstrap(ctx)
        assert second == BootstrapReport(
            admin_id=first.admin_id, embedding_model_id=first.embedding_model_id
        )
        assert second.lines() == []
        assert await counts(ctx) == before
        async with ctx.sessionmaker() as session:
            unchanged = await session.get(User, first.admin_id)
        assert unchanged is not None
        assert unchanged.password_hash == admin.password_hash
    finally:
        await ctx.close()


async def test_an_existing_administrator_is_kept(
    backend: str, make_db_url: Any, tmp_path: Path
) -> None:
    ctx = await context_for(make_db_url(backend), tmp_path / "data", admin_password="ignored pw")
    try:
        async with ctx.sessionmaker() as session:
            boss = await UserService(session, ctx).create(
                UserCreate(
                    username="boss", email="boss@example.com", password="x" * 10, role="admin"
                )
            )
        report = await bootstrap(ctx)
        assert (report.admin_created, report.generated_password, report.admin_id) == (
            None,
            None,
            boss.id,
        )
        assert (await counts(ctx))["User"] == 1
    finally:
        await ctx.close()


async def test_the_chat_model_and_a_rotated_key(
    backend: str, make_db_url: Any, tmp_path: Path, openai_server: OpenAIServer
) -> None:
    db_url, data_dir = make_db_url(backend), tmp_path / "data"
    chat = {"chat_base_url": openai_server.base_url, "chat_model": "test-chat"}
    ctx = await context_for(db_url, data_dir, **chat, chat_api_key="sk-key-one")
    try:
        first = await bootstrap(ctx)
        assert (first.chat_model_created, first.chat_key) == (True, "stored")
        sealed = await stored_key(ctx)
        assert ctx.secret_box.decrypt(sealed.api_key_encrypted) == "sk-key-one"
        assert "sk-key-one" not in sealed.api_key_encrypted
        assert not any("sk-key-one" in line for line in first.lines())
    finally:
        await ctx.close()

    # The same model (a trailing slash is the same endpoint) and key: nothing is written.
    chat["chat_base_url"] += "/"
    ctx = await context_for(db_url, data_dir, **chat, chat_api_key="sk-key-one")
    try:
        again = await bootstrap(ctx)
        assert (again.chat_model_id, again.chat_model_created, again.chat_key) == (
            first.chat_model_id,
            False,
            "unchanged",
        )
        assert again.lines() == []
        assert await stored_key(ctx) == sealed
    finally:
        await ctx.close()

    ctx = await context_for(db_url, data_dir, **chat, chat_api_key="sk-key-two")
    try:
        rotated = await bootstrap(ctx)
        assert (rotated.chat_model_id, rotated.chat_key) == (first.chat_model_id, "replaced")
        assert rotated.lines() == [
            f"Replaced the API key of chat model {first.chat_model_id} with RAG_CHAT_API_KEY."
        ]
        replaced = await stored_key(ctx)
        assert replaced.id == sealed.id
        assert ctx.secret_box.decrypt(replaced.api_key_encrypted) == "sk-key-two"
        assert await counts(ctx) == {"User": 1, "Llm": 2, "ApiKey": 1}
    finally:
        await ctx.close()


async def stored_key(ctx: AppContext) -> ApiKey:
    async with ctx.sessionmaker() as session:
        (key,) = (await session.exec(select(ApiKey).order_by(col(ApiKey.id)))).all()
        return key


async def test_processes_starting_together_create_one_administrator(
    make_db_url: Any, tmp_path: Path
) -> None:
    """Two API servers of the production stack starting at once on one MariaDB database."""
    db_url = make_db_url("mysql")
    contexts = [await context_for(db_url, tmp_path / f"data-{n}") for n in range(3)]
    try:
        reports = await asyncio.gather(*(bootstrap(ctx) for ctx in contexts))
        assert [r.admin_created for r in reports].count("admin") == 1
        assert [r.embedding_model_created for r in reports].count(True) == 1
        assert len({r.admin_id for r in reports}) == 1
        assert await counts(contexts[0]) == {"User": 1, "Llm": 1, "ApiKey": 0}
    finally:
        for ctx in contexts:
            await ctx.close()


async def test_a_stored_key_that_no_longer_decrypts_is_replaced(
    make_db_url: Any, tmp_path: Path, openai_server: OpenAIServer
) -> None:
    db_url = make_db_url("sqlite")
    chat = {"chat_base_url": openai_server.base_url, "chat_model": "test-chat"}
    old = {"argon2_time_cost": 1, "argon2_memory_kib": 1024, "encryption_key": "old " * 10}
    ctx = await context_for(db_url, tmp_path / "a", **chat, chat_api_key="sk-same", security=old)
    try:
        await bootstrap(ctx)
    finally:
        await ctx.close()
    # The operator changed RAG_SECURITY__ENCRYPTION_KEY: the stored key cannot be read back.
    ctx = await context_for(db_url, tmp_path / "b", **chat, chat_api_key="sk-same")
    try:
        with pytest.raises(ConfigurationError):
            ctx.secret_box.decrypt((await stored_key(ctx)).api_key_encrypted)
        assert (await bootstrap(ctx)).chat_key == "replaced"
        assert ctx.secret_box.decrypt((await stored_key(ctx)).api_key_encrypted) == "sk-same"
    finally:
        await ctx.close()
