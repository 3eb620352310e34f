"""Everything built once per process from settings: engines, secrets, crypto.

The API, the CLI and the Python API for notebooks all start from ``AppContext.create``, so they
see the same configuration and the same database the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.crypto import PasswordService, SecretBox
from rag_app.db import migrate
from rag_app.db.engine import create_db_engine, create_sessionmaker
from rag_app.secrets import AppSecrets, resolve_secrets
from rag_app.settings import Settings


@dataclass
class AppContext:
    settings: Settings
    secrets: AppSecrets
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    secret_box: SecretBox
    passwords: PasswordService

    @classmethod
    def create(cls, settings: Settings) -> AppContext:
        secrets = resolve_secrets(settings)
        settings.prepare_directories()
        engine = create_db_engine(
            settings.database_url,
            echo=settings.database.echo,
            pool_size=settings.database.pool_size,
        )
        return cls(
            settings=settings,
            secrets=secrets,
            engine=engine,
            sessionmaker=create_sessionmaker(engine),
            secret_box=SecretBox(secrets.encryption_key),
            passwords=PasswordService(
                time_cost=settings.security.argon2_time_cost,
                memory_kib=settings.security.argon2_memory_kib,
            ),
        )

    def migrate(self) -> None:
        """Bring the schema to the newest migration (blocking: call from a thread in async code)."""
        migrate.upgrade(self.settings.database_url)

    async def close(self) -> None:
        await self.engine.dispose()
