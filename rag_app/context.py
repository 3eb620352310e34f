"""Everything built once per process from settings: engines, secrets, crypto.

The API, the CLI and the Python API for notebooks all start from ``AppContext.create``, so they
see the same configuration and the same database the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.crypto import PasswordService, SecretBox
from rag_app.db import migrate
from rag_app.db.engine import create_db_engine, create_sessionmaker
from rag_app.indexing.registry import EmbeddingRegistry, IndexRegistry
from rag_app.indexing.specs import store_settings
from rag_app.jobs.base import JobQueue
from rag_app.secrets import AppSecrets, resolve_secrets
from rag_app.settings import Settings
from rag_app.storage.base import ObjectStore
from rag_app.storage.factory import build_object_store


@dataclass
class AppContext:
    settings: Settings
    secrets: AppSecrets
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    secret_box: SecretBox
    passwords: PasswordService
    object_store: ObjectStore
    index_registry: IndexRegistry
    embeddings: EmbeddingRegistry
    # Set by start_jobs(): the queue needs a running event loop (and Redis, when configured).
    _job_queue: JobQueue | None = field(default=None, repr=False)
    _parse_limiter: anyio.CapacityLimiter | None = field(default=None, repr=False)

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
            object_store=build_object_store(settings),
            index_registry=IndexRegistry(store_settings(settings)),
            embeddings=EmbeddingRegistry(local_processes=settings.jobs.embedding_processes),
        )

    def migrate(self) -> None:
        """Bring the schema to the newest migration (blocking: call from a thread in async code)."""
        migrate.upgrade(self.settings.database_url)

    @property
    def job_queue(self) -> JobQueue:
        if self._job_queue is None:
            raise RuntimeError("jobs are not started: call AppContext.start_jobs() first")
        return self._job_queue

    @property
    def parse_limiter(self) -> anyio.CapacityLimiter:
        """Documents parsed at once. Parsing is CPU-bound and holds a whole file's text: with
        many documents in flight (so that their chunks fill embedding batches), more parses at
        once than cores would only cost memory. Created on first use, inside the event loop."""
        if self._parse_limiter is None:
            self._parse_limiter = anyio.CapacityLimiter(os.cpu_count() or 1)
        return self._parse_limiter

    async def start_jobs(self) -> None:
        """Start the ingestion queue: in process, or SAQ on Redis when redis.url is set."""
        from rag_app.jobs.queue import build_job_queue

        if self._job_queue is None:
            queue = build_job_queue(self)
            await queue.start()
            self._job_queue = queue

    async def close(self) -> None:
        if self._job_queue is not None:
            await self._job_queue.stop()
            self._job_queue = None
        await self.engine.dispose()
