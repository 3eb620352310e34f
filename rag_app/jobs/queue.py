"""Job queues: in process for the embedded default, SAQ on Redis for the production stack.

Both run the same ``IngestionJob``; the database claim in that job, not the queue, is what
guarantees that one document is never processed by two runs at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from rag_app.errors import BackendUnavailable
from rag_app.jobs.ingest import IngestionJob
from rag_app.jobs.stale import recover_stale_documents

if TYPE_CHECKING:
    from saq import Queue

    from rag_app.context import AppContext

logger = logging.getLogger("rag_app.jobs")

INGEST_FUNCTION = "ingest_document"


class InProcessQueue:
    """An asyncio queue drained by ``jobs.workers`` tasks inside the API process."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for _ in range(self.ctx.settings.jobs.workers):
            self._tasks.append(asyncio.create_task(self._work()))
        self._tasks.append(asyncio.create_task(self._recover_periodically()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def enqueue(self, document_id: int) -> None:
        self._queue.put_nowait(document_id)

    async def check(self) -> None:
        return None  # in process: always there

    async def join(self) -> None:
        """Wait until every queued document has been processed (tests, the CLI)."""
        await self._queue.join()

    async def _work(self) -> None:
        job = IngestionJob(self.ctx)
        while True:
            document_id = await self._queue.get()
            try:
                await job.run(document_id)
            except Exception:  # one broken document must not stop the worker
                logger.exception("ingestion of document %s crashed", document_id)
            finally:
                self._queue.task_done()

    async def _recover_periodically(self) -> None:
        interval = max(self.ctx.settings.jobs.stale_after_seconds / 2, 15)
        while True:
            for document_id in await recover_stale_documents(self.ctx):
                await self.enqueue(document_id)
            await asyncio.sleep(interval)


class SaqQueue:
    """Enqueues into Redis; `rag-app worker` processes (any number) run the jobs."""

    def __init__(self, ctx: AppContext, redis_url: str) -> None:
        self.ctx = ctx
        self.queue = build_saq_queue(redis_url, ctx.settings.jobs.queue_name)
        self._connected = False

    async def start(self) -> None:
        # The API must start (and report "not ready") while Redis is down, so connecting
        # is attempted here and again on first use.
        try:
            await self._connect()
        except BackendUnavailable as exc:
            logger.warning("job queue not connected yet: %s", exc.detail)

    async def _connect(self) -> None:
        if self._connected:
            return
        try:
            await self.queue.connect()
        except RedisError as exc:
            raise BackendUnavailable("Redis (the job queue) is not reachable") from exc
        self._connected = True

    async def stop(self) -> None:
        if self._connected:
            self._connected = False
            try:
                await self.queue.disconnect()
            except RedisError as exc:  # shutting down: a dead Redis must not block it
                logger.warning("job queue disconnect failed: %s", exc)

    async def check(self) -> None:
        await self._connect()
        try:
            await self.queue.redis.ping()  # type: ignore[attr-defined]
        except RedisError as exc:
            raise BackendUnavailable("Redis (the job queue) is not reachable") from exc

    async def enqueue(self, document_id: int) -> None:
        await self._connect()
        # A fresh key per request: SAQ keeps finished jobs for a while under their key and
        # would silently drop a retry that reused it.
        await self.queue.enqueue(
            INGEST_FUNCTION,
            key=f"doc-{document_id}-{uuid.uuid4().hex}",
            document_id=document_id,
            timeout=0,  # no SAQ time limit: progress heartbeats in the database cover hangs
            retries=1,
        )


def build_saq_queue(redis_url: str, name: str) -> Queue:
    """``name`` (jobs.queue_name) keys everything SAQ keeps in Redis: API servers and workers
    meet on it, and deployments (or test runs) sharing one Redis stay apart."""
    from saq import Queue

    return Queue.from_url(redis_url, name=name)


def build_job_queue(ctx: AppContext) -> InProcessQueue | SaqQueue:
    if ctx.settings.redis.url:
        return SaqQueue(ctx, ctx.settings.redis.url)
    return InProcessQueue(ctx)


async def saq_ingest(saq_ctx: dict[str, Any], *, document_id: int) -> str:
    """The SAQ job function: the worker's AppContext is in its SAQ context."""
    app_ctx: AppContext = saq_ctx["app_ctx"]
    return await IngestionJob(app_ctx).run(document_id)
