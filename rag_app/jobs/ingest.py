"""Ingest one document: original → parse → split → embed → vector and keyword stores.

The run claims the document with an atomic UPDATE (no two workers process one document at
once), reports progress and a heartbeat while it works (a silent claim goes stale and the
document becomes retryable), and ends ``completed`` or ``failed`` with a readable message.
Only a completed document has chunks: a failed run removes whatever it wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
from sqlalchemy import or_, update
from sqlmodel import col

from indexes.errors import IndexesError
from rag_app.db.models import Document, Knowledge
from rag_app.db.models.document import DocumentStatus
from rag_app.db.types import utcnow
from rag_app.domain.knowledge.service import KnowledgeService
from rag_app.errors import RagAppError
from rag_app.indexing.access import drop_index_sync, open_index_sync, spec_for
from rag_app.jobs.progress import ProgressTracker

if TYPE_CHECKING:
    from llama_index.core.schema import BaseNode

    from indexes.knowledge_index import KnowledgeIndex
    from indexes.specs import KnowledgeSpec
    from rag_app.context import AppContext

logger = logging.getLogger("rag_app.jobs")

HEARTBEAT_SECONDS = 1.0
# A heartbeat with nothing new (a document waiting for the model) is written only this often:
# enough to keep the claim fresh (a claim goes stale after at least 30 s), without a database
# write per second per document in flight.
KEEPALIVE_SECONDS = 10.0


class JobCancelled(Exception):
    """The document was deleted or claimed by another run while this one worked."""


class _Stopped(Exception):
    """Raised in the embedding thread when the run's task was cancelled (the worker stops)."""


class _StoppableTracker(ProgressTracker):
    """Progress reports double as stop points: ``embed_document`` reports after every batch
    and aborts on an exception from the callback. A cancelled asyncio task cannot stop the
    thread it awaits, and a thread still embedding would keep the process from exiting."""

    def __init__(self) -> None:
        super().__init__()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def report(self, stage_name: str, fraction: float) -> None:
        if self._stop.is_set():
            raise _Stopped()
        super().report(stage_name, fraction)


@dataclass
class _Loaded:
    document: Document
    spec: KnowledgeSpec


class IngestionJob:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    async def run(self, document_id: int) -> str:
        """Process one document; returns its final status (or "skipped" if another run holds it)."""
        job_id = uuid.uuid4().hex
        if not await self._claim(document_id, job_id):
            logger.info("document %s is held by another run; skipped", document_id)
            return "skipped"
        tracker = _StoppableTracker()
        heartbeat = asyncio.create_task(self._heartbeat(document_id, job_id, tracker))
        loaded: _Loaded | None = None
        work: asyncio.Task[int] | None = None
        try:
            loaded = await self._load(document_id)
            # A task of its own, shielded: a cancellation lets it reach a safe point first.
            work = asyncio.create_task(self._process(loaded, tracker))
            chunk_count = await asyncio.shield(work)
            heartbeat.cancel()
            if not await self._finish(
                document_id, job_id, DocumentStatus.completed, chunk_count, None
            ):
                raise JobCancelled()
            return DocumentStatus.completed.value
        except JobCancelled:
            logger.info("document %s: run %s cancelled", document_id, job_id)
            await self._remove_chunks(loaded, document_id)
            return "cancelled"
        except asyncio.CancelledError:
            # Shielded: a second cancellation (a hurried shutdown) must not leave it half done.
            await asyncio.shield(self._give_back(document_id, job_id, tracker, work, loaded))
            raise
        except Exception as exc:
            message = _readable(exc)
            if not isinstance(exc, IndexesError | RagAppError):
                logger.exception("document %s failed unexpectedly", document_id)
            else:
                logger.warning("document %s failed: %s", document_id, message)
            heartbeat.cancel()
            await self._remove_chunks(loaded, document_id)
            await self._finish(document_id, job_id, DocumentStatus.failed, 0, message)
            return DocumentStatus.failed.value
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            if loaded is not None:
                await self._recount(loaded.document.knowledge_id)

    async def _give_back(
        self,
        document_id: int,
        job_id: str,
        tracker: _StoppableTracker,
        work: asyncio.Task[int] | None,
        loaded: _Loaded | None,
    ) -> None:
        """The run was cancelled (the worker is stopping): end it at a safe point and hand
        the document back, unclaimed and ``uploading``, so the queue's retry (or the next
        recovery sweep) runs it again. Left claimed, it would wait ``jobs.stale_after_seconds``
        and then be failed as interrupted.

        Embedding stops at its next batch; a parse or an index write in progress finishes
        (a half-written index is worse than a late exit). Work that finished anyway is
        recorded as completed. A failure while stopping is not recorded: the next run meets
        it again and records it.
        """
        if work is not None and not work.done():
            tracker.stop()
            with contextlib.suppress(Exception):
                await work
            if not work.cancelled() and work.exception() is None:
                if await self._finish(
                    document_id, job_id, DocumentStatus.completed, work.result(), None
                ):
                    return
                await self._remove_chunks(loaded, document_id)  # as for a lost claim above
                return
        # Only our own claim is given back: a no-op if it was recorded (or lost) already.
        if await self._update_claimed(
            document_id,
            job_id,
            status=DocumentStatus.uploading,
            progress=0,
            job_id=None,
            heartbeat_at=None,
        ):
            logger.info("document %s: run %s stopped, document handed back", document_id, job_id)

    async def _process(self, loaded: _Loaded, tracker: ProgressTracker) -> int:
        from indexes.pipeline import embed_document
        from indexes.readers import read_document

        document, spec = loaded.document, loaded.spec
        data = await self.ctx.object_store.get_bytes(document.file_path)
        limit = self.ctx.settings.uploads.max_unpacked_mb * 1024 * 1024
        parsed = await anyio.to_thread.run_sync(
            lambda: read_document(data, document.file_name, max_unpacked_bytes=limit),
            limiter=self.ctx.parse_limiter,
        )
        tracker.stage(DocumentStatus.splitting)

        def embed() -> list[BaseNode]:
            embed_model, tokenizer = self.ctx.embeddings.get(spec.embedding)
            embed_model.prepare()  # model processes started before "embedding" is reported
            return list(
                embed_document(
                    spec,
                    parsed,
                    document_id=document.id or 0,
                    embed_model=embed_model,
                    tokenizer=tokenizer,
                    progress=tracker.report,
                )
            )

        nodes = await anyio.to_thread.run_sync(embed)
        tracker.stage(DocumentStatus.embedding, 1.0)
        index = await anyio.to_thread.run_sync(self._index, spec)
        await anyio.to_thread.run_sync(index.replace_document, document.id or 0, nodes)
        return len(nodes)

    def _index(self, spec: KnowledgeSpec) -> KnowledgeIndex:
        return open_index_sync(self.ctx, spec)

    async def _claim(self, document_id: int, job_id: str) -> bool:
        stale = utcnow() - timedelta(seconds=self.ctx.settings.jobs.stale_after_seconds)
        statement = (
            update(Document)
            .where(
                col(Document.id) == document_id,
                # Only a queued document is claimed: a duplicate queue entry for a document that
                # was processed meanwhile is a no-op instead of a second run.
                col(Document.status) == DocumentStatus.uploading,
                or_(col(Document.job_id).is_(None), col(Document.heartbeat_at) < stale),
            )
            .values(
                job_id=job_id,
                status=DocumentStatus.parsing,
                progress=0,
                error_msg=None,
                heartbeat_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        async with self.ctx.sessionmaker() as session:
            result = await session.exec(statement)
            await session.commit()
            return bool(result.rowcount)

    async def _load(self, document_id: int) -> _Loaded:
        async with self.ctx.sessionmaker() as session:
            document = await session.get(Document, document_id)
            if document is None:
                raise JobCancelled()
            knowledge = await session.get(Knowledge, document.knowledge_id)
            if knowledge is None:
                raise JobCancelled()
            return _Loaded(document, await spec_for(self.ctx, session, knowledge))

    async def _heartbeat(self, document_id: int, job_id: str, tracker: ProgressTracker) -> None:
        """Write status and progress each second they change (and every KEEPALIVE_SECONDS
        anyway); stop the run if the claim was lost."""
        written, written_at = None, time.monotonic()
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            snapshot = tracker.snapshot()
            if snapshot == written and time.monotonic() - written_at < KEEPALIVE_SECONDS:
                continue
            written, written_at = snapshot, time.monotonic()
            held = await self._update_claimed(
                document_id,
                job_id,
                status=snapshot.status,
                progress=snapshot.progress,
                heartbeat_at=utcnow(),
            )
            if not held:
                logger.info("document %s: claim lost, stopping heartbeat", document_id)
                return

    async def _update_claimed(self, document_id: int, claim: str, **values: object) -> bool:
        statement = (
            update(Document)
            .where(col(Document.id) == document_id, col(Document.job_id) == claim)
            .values(**values)
            # The session is thrown away right after: syncing its (empty) identity map only
            # costs the ORM's evaluation work, a visible share of a small document's CPU.
            .execution_options(synchronize_session=False)
        )
        async with self.ctx.sessionmaker() as session:
            result = await session.exec(statement)
            await session.commit()
            return bool(result.rowcount)

    async def _finish(
        self,
        document_id: int,
        job_id: str,
        status: DocumentStatus,
        chunk_count: int,
        error: str | None,
    ) -> bool:
        """Record the outcome; False when the claim was lost (document deleted or re-claimed)."""
        return await self._update_claimed(
            document_id,
            job_id,
            status=status,
            progress=100 if status == DocumentStatus.completed else 0,
            chunk_count=chunk_count,
            error_msg=error,
            job_id=None,
            heartbeat_at=utcnow(),
        )

    async def _remove_chunks(self, loaded: _Loaded | None, document_id: int) -> None:
        if loaded is None:
            try:
                loaded = await self._load(document_id)
            except JobCancelled:
                return  # the knowledge base is gone, and with it its index
        spec = loaded.spec
        try:
            if not await self._knowledge_exists(spec.knowledge_id):
                # The knowledge base was deleted while this run worked. Its deletion dropped the
                # index first, and this run then opened it again to write (re-creating the
                # collection and keyword files): drop it again, or nothing ever would.
                await anyio.to_thread.run_sync(drop_index_sync, self.ctx, spec)
                return
            index = await anyio.to_thread.run_sync(self._index, spec)
            await anyio.to_thread.run_sync(lambda: index.delete_document(document_id))
        except Exception:
            logger.exception("document %s: could not remove its chunks", document_id)

    async def _knowledge_exists(self, knowledge_id: int) -> bool:
        async with self.ctx.sessionmaker() as session:
            return await session.get(Knowledge, knowledge_id) is not None

    async def _recount(self, knowledge_id: int) -> None:
        async with self.ctx.sessionmaker() as session:
            with contextlib.suppress(RagAppError):
                await KnowledgeService(session).recount(knowledge_id, reload=False)


def _readable(exc: Exception) -> str:
    if isinstance(exc, IndexesError):
        return str(exc)
    if isinstance(exc, RagAppError):
        return exc.detail
    return "processing failed unexpectedly; the error has been logged"
