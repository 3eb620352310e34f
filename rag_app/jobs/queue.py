"""Job queues: in process for the embedded default, SAQ on Redis for the production stack.

Both run the same ``IngestionJob``; the database claim in that job, not the queue, is what
guarantees that one document is never processed by two runs at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
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

    async def enqueue(self, document_ids: Sequence[int]) -> None:
        for document_id in document_ids:
            self._queue.put_nowait(document_id)

    async def check(self) -> None:
        return None  # in process: always there

    async def join(self) -> None:
        """Wait until every queued document has been processed (tests, the CLI)."""
        await self._queue.join()

    async def _work(self) -> None:
        job = IngestionJob(self.ctx)
        while True:
            batch = await self._next_batch()
            try:
                await job.run_many(batch)
            except Exception:  # one broken batch must not stop the worker
                logger.exception("ingestion of documents %s crashed", batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _next_batch(self) -> list[int]:
        """The next queued document, and as many more as are waiting, up to the batch size."""
        batch = [await self._queue.get()]
        while len(batch) < self.ctx.settings.jobs.batch_documents and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _recover_periodically(self) -> None:
        interval = max(self.ctx.settings.jobs.stale_after_seconds / 2, 15)
        while True:
            await self.enqueue(await recover_stale_documents(self.ctx))
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

    async def enqueue(self, document_ids: Sequence[int]) -> None:
        await self._connect()
        size = self.ctx.settings.jobs.batch_documents
        for start in range(0, len(document_ids), size):
            batch = list(document_ids[start : start + size])
            # A fresh key per request: SAQ keeps finished jobs for a while under their key and
            # would silently drop a retry that reused it.
            await self.queue.enqueue(
                INGEST_FUNCTION,
                key=f"doc-{batch[0]}-{uuid.uuid4().hex}",
                document_ids=batch,
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


async def saq_ingest(saq_ctx: dict[str, Any], *, document_ids: list[int]) -> dict[str, str]:
    """The SAQ job function: the worker's AppContext is in its SAQ context. The result (kept
    in Redis for a while) is each document's final status, by document id."""
    app_ctx: AppContext = saq_ctx["app_ctx"]
    outcomes = await IngestionJob(app_ctx).run_many(document_ids)
    return {str(document_id): status for document_id, status in outcomes.items()}
