"""Settings precedence, the data directory, and the refusal of default secrets in production."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_app.context import AppContext
from rag_app.errors import ConfigurationError
from rag_app.secrets import resolve_secrets
from rag_app.settings import Settings


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "config"
    directory.mkdir()
    (directory / "default.yaml").write_text(
        "data_dir: from-default\nserver:\n  port: 8001\n  host: 127.0.0.1\n", encoding="utf-8"
    )
    (directory / "site.yaml").write_text("server:\n  port: 8002\n", encoding="utf-8")
    monkeypatch.setenv("RAG_CONFIG_DIR", str(directory))
    for name in ("RAG_CONFIG", "RAG_DATA_DIR", "RAG_SERVER__PORT", "RAG_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return directory


def test_yaml_default_then_overlay_then_env(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings().server.port == 8001
    monkeypatch.setenv("RAG_CONFIG", "site")
    settings = Settings()
    assert settings.server.port == 8002
    assert settings.server.host == "127.0.0.1"  # deep merge keeps keys the overlay omits
    monkeypatch.setenv("RAG_SERVER__PORT", "8003")
    assert Settings().server.port == 8003


def test_unknown_overlay_is_an_error(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_CONFIG", "nope")
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        Settings()


def test_data_dir_moves_every_path(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_DATA_DIR", str(config_dir.parent / "elsewhere"))
    settings = Settings()
    assert settings.data_dir == (config_dir.parent / "elsewhere").resolve()
    assert settings.database_url == f"sqlite:///{settings.data_dir / 'rag_app.db'}"
    assert settings.index_dir.is_relative_to(settings.data_dir)


def test_production_refuses_default_secrets(tmp_path: Path) -> None:
    settings = Settings(environment="production", data_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="default secrets"):
        AppContext.create(settings)
    only_jwt = Settings(
        environment="production", data_dir=tmp_path, security={"jwt_secret": "x" * 40}
    )
    with pytest.raises(ConfigurationError):
        resolve_secrets(only_jwt)
    explicit = Settings(
        environment="production",
        data_dir=tmp_path,
        security={"jwt_secret": "j" * 40, "encryption_key": "e" * 40},
    )
    assert resolve_secrets(explicit).jwt_secret == "j" * 40


def test_generated_secrets_persist_per_data_dir(tmp_path: Path) -> None:
    first = resolve_secrets(Settings(environment="development", data_dir=tmp_path / "a"))
    again = resolve_secrets(Settings(environment="development", data_dir=tmp_path / "a"))
    other = resolve_secrets(Settings(environment="development", data_dir=tmp_path / "b"))
    assert first == again
    assert first.jwt_secret != other.jwt_secret
    assert len(first.encryption_key) >= 40
    secrets_file = tmp_path / "a" / "secrets.json"
    assert secrets_file.stat().st_mode & 0o777 == 0o600
