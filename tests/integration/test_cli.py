"""The rag-app command: migrate, the first admin, and refusing bad input without a traceback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from litestar.testing import AsyncTestClient

from rag_app.api.app import create_app
from rag_app.cli import main
from rag_app.settings import Settings


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "RAG_DATA_DIR": str(tmp_path / "data"),
        "RAG_SECURITY__ARGON2_TIME_COST": "1",
        "RAG_SECURITY__ARGON2_MEMORY_KIB": "1024",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RAG_DATABASE__URL", raising=False)
    return values


def test_migrate_and_check(env: dict[str, str]) -> None:
    runner = CliRunner()
    before = runner.invoke(main, ["migrate", "--check"])
    assert before.exit_code == 1
    assert "run `rag-app migrate`" in before.output
    result = runner.invoke(main, ["migrate"])
    assert result.exit_code == 0, result.output
    assert "migrated to" in result.output
    assert Path(env["RAG_DATA_DIR"], "rag_app.db").is_file()
    after = runner.invoke(main, ["migrate", "--check"])
    assert after.exit_code == 0, after.output
    assert "up to date" in after.output


def test_unreachable_database_is_a_clear_error(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_DATABASE__URL", "mysql+pymysql://root:secretpw@127.0.0.1:1/none")
    result = CliRunner().invoke(main, ["migrate"])
    assert result.exit_code == 1
    assert "cannot be used" in result.output
    assert "secretpw" not in result.output  # the password is masked
    assert "Traceback" not in result.output


async def test_user_create_admin_then_sign_in(env: dict[str, str]) -> None:
    # The command runs its own event loop, as it does from a shell: keep it off the test's loop.
    def invoke(*argv: str) -> Result:
        return CliRunner().invoke(main, list(argv))

    args = ["user", "create", "--username", "boss", "--email", "boss@example.com"]
    result = await asyncio.to_thread(invoke, *args, "--password", "a long password", "--admin")
    assert result.exit_code == 0, result.output
    assert "created admin 'boss'" in result.output

    again = await asyncio.to_thread(invoke, *args, "--password", "a long password")
    assert again.exit_code == 1
    assert "taken" in again.output

    weak = await asyncio.to_thread(
        invoke, "user", "create", "--username", "x y", "--email", "bad", "--password", "short"
    )
    assert weak.exit_code == 1
    assert "username" in weak.output
    assert "password" in weak.output

    async with AsyncTestClient(app=create_app(Settings())) as client:
        login = await client.post(
            "/api/v1/auth/login", json={"username": "boss", "password": "a long password"}
        )
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        users = await client.get("/api/v1/users", headers=headers)
        assert users.status_code == 200, users.text
        assert [u["username"] for u in users.json()["items"]] == ["boss"]
