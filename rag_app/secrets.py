"""Resolve the JWT secret and the encryption key.

Outside production the shipped placeholder is replaced by random secrets generated once and
kept in ``<data_dir>/secrets.json`` (mode 0600): an embedded install then has its own secrets
without any setup, and they survive restarts so stored API keys stay readable. In production
the placeholder is refused, because several API processes must share explicitly set secrets.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass

from rag_app.errors import ConfigurationError
from rag_app.settings import DEFAULT_SECRET, Settings


@dataclass(frozen=True)
class AppSecrets:
    jwt_secret: str
    encryption_key: str


def resolve_secrets(settings: Settings) -> AppSecrets:
    jwt_secret = settings.security.jwt_secret.get_secret_value()
    encryption_key = settings.security.encryption_key.get_secret_value()
    if not settings.uses_default_secrets:
        return AppSecrets(jwt_secret, encryption_key)
    if settings.environment == "production":
        raise ConfigurationError(
            "Refusing to start in production with the default secrets: set "
            "RAG_SECURITY__JWT_SECRET and RAG_SECURITY__ENCRYPTION_KEY to long random values "
            "(for example `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)."
        )
    generated = _load_or_create_generated(settings)
    return AppSecrets(
        jwt_secret if jwt_secret != DEFAULT_SECRET else generated["jwt_secret"],
        encryption_key if encryption_key != DEFAULT_SECRET else generated["encryption_key"],
    )


def _load_or_create_generated(settings: Settings) -> dict[str, str]:
    path = settings.data_dir / "secrets.json"
    if path.is_file():
        loaded: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
        return loaded
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    generated = {
        "jwt_secret": secrets.token_urlsafe(48),
        "encryption_key": secrets.token_urlsafe(48),
    }
    # Write a private temporary file, then link it into place: link fails if another process
    # won the race, and then we read the winner's complete file instead.
    tmp = path.with_name(f".secrets.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(generated, handle)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return _load_or_create_generated(settings)
    finally:
        tmp.unlink()
    return generated
