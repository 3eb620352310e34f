"""Liveness and readiness against the real backends: SQL and Redis."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from rag_app.api.app import create_app
from rag_app.context import AppContext
from tests.conftest import Api, assert_problem, make_settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _client_for(tmp_path: Path, **overrides: Any) -> AsyncIterator[AsyncTestClient[Any]]:
    settings = make_settings(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "data", **overrides)
    async with AsyncTestClient(app=create_app(ctx=AppContext.create(settings))) as client:
        yield client


async def test_liveness_and_readiness(api: Api, backend: str) -> None:
    assert (await api.client.get("/health")).json() == {"status": "ok"}
    response = await api.client.get("/health/ready")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"database": "ok", "object_store": "ok"}


async def test_ready_checks_redis(tmp_path: Path, redis_url: str) -> None:
    async for client in _client_for(tmp_path, redis={"url": redis_url}):
        response = await client.get("/health/ready")
        assert response.status_code == 200, response.text
        assert response.json()["checks"] == {"database": "ok", "redis": "ok", "object_store": "ok"}


async def test_ready_names_the_backend_that_is_down(tmp_path: Path) -> None:
    dead_redis = f"redis://127.0.0.1:{_free_port()}/0"
    async for client in _client_for(tmp_path, redis={"url": dead_redis}):
        body = assert_problem(await client.get("/health/ready"), 503, "redis")
        assert body["checks"]["database"] == "ok"
        assert "not reachable" in body["checks"]["redis"]


async def test_ready_names_an_unreachable_object_store(tmp_path: Path) -> None:
    storage = {
        "backend": "s3",
        "s3_endpoint": f"127.0.0.1:{_free_port()}",
        "s3_access_key": "access",
        "s3_secret_key": "secret-value",
    }
    async for client in _client_for(tmp_path, storage=storage):
        response = await client.get("/health/ready")
        body = assert_problem(response, 503, "object_store", "not reachable")
        assert "secret-value" not in response.text
        assert body["checks"]["database"] == "ok"
