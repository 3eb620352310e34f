"""Ingest documents: original → parse → split → embed → vector and keyword stores.

A run takes a batch of queued documents (one, or up to ``jobs.batch_documents``) and claims
them with one atomic UPDATE (no two runs process one document at once). Each document is
parsed and embedded on its own; as documents finish, the ready ones are written to the stores
together and recorded in one transaction. A batch exists for the fixed costs, not the model:
a small document cost about as much CPU in claims, loads, heartbeats, store calls and recounts
as in embedding, and that CPU is taken from the model on the same cores.

While it works, the run reports progress and a heartbeat (a silent claim goes stale and the
document becomes retryable). Every document ends ``completed`` or ``failed`` with a readable
message, on its own: one broken file fails alone. Only a completed document has chunks: a failed
run removes whatever it wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import or_, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select

from indexes.errors import IndexesError
from rag_app.db.models import Document, Knowledge
from rag_app.db.models.document import DocumentStatus
from rag_app.db.types import utcnow
from rag_app.domain.knowledge.service import recount_statement
from rag_app.errors import RagAppError
from rag_app.indexing.access import drop_index_sync, open_index_sync, spec_for
from rag_app.jobs.progress import ProgressTracker, Snapshot

if TYPE_CHECKING:
    from llama_index.core.schema import BaseNode
    from sqlmodel.ext.asyncio.session import AsyncSession

    from indexes.knowledge_index import KnowledgeIndex
    from indexes.specs import KnowledgeSpec
    from rag_app.context import AppContext

logger = logging.getLogger("rag_app.jobs")

HEARTBEAT_SECONDS = 1.0
# A heartbeat with nothing new (a document waiting for the model) is written only this often:
# enough to keep the claim fresh (a claim goes stale after at least 30 s), without a database
# write per second per document in flight.
KEEPALIVE_SECONDS = 10.0


class _Stopped(Exception):
    """Raised in the embedding thread when the run stops early (worker stopping, claim lost)."""


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


@dataclass(eq=False)
class _Run:
    """One claimed document of a batch, and what became of it."""

    document: Document
    spec: KnowledgeSpec
    tracker: _StoppableTracker = field(default_factory=_StoppableTracker)
    nodes: list[BaseNode] | None = None  # embedded chunks, ready to store
    error: str | None = None  # why it failed
    lost: bool = False  # the claim was lost (document deleted or taken over): stop, record nothing
    stored: bool = False  # its chunks were written to the stores by this run
    outcome: str | None = None  # the final status, once recorded

    @property
    def id(self) -> int:
        return self.document.id or 0


class IngestionJob:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    async def run(self, document_id: int) -> str:
        """Process one document; returns its final status (or "skipped" if another run holds
        it, "cancelled" if it was deleted meanwhile)."""
        return (await self.run_many([document_id]))[document_id]

    async def run_many(self, document_ids: Sequence[int]) -> dict[int, str]:
        """Process these documents as one batch; returns each one's final status."""
        claim = uuid.uuid4().hex
        outcomes = dict.fromkeys(document_ids, "skipped")
        runs = await self._claim_and_load(document_ids, claim)
        for run in runs:
            outcomes[run.id] = "cancelled"  # until recorded
        for document_id in set(document_ids) - {run.id for run in runs}:
            logger.info("document %s is held by another run; skipped", document_id)
        if not runs:
            return outcomes
        heartbeat = asyncio.create_task(self._heartbeat(claim, runs))
        preparing = {asyncio.create_task(self._prepare(run)): run for run in runs}
        storing: asyncio.Task[None] | None = None
        try:
            while preparing:
                done, _ = await asyncio.wait(preparing, return_when=asyncio.FIRST_COMPLETED)
                # Shielded: a cancellation lets a store write and its record finish first.
                storing = asyncio.create_task(self._store(claim, [preparing.pop(t) for t in done]))
                await asyncio.shield(storing)
                storing = None
        except asyncio.CancelledError:
            # Shielded: a second cancellation (a hurried shutdown) must not leave it half done.
            await asyncio.shield(self._give_back(claim, runs, preparing, storing))
            raise
        except Exception:
            # Recording failed (the database went away): stop the other documents too rather
            # than leave their threads running unowned. What cannot be handed back now goes
            # stale and is recovered by the sweep.
            with contextlib.suppress(Exception):
                await self._give_back(claim, runs, preparing, None)
            raise
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        for run in runs:
            if run.outcome is None:  # deleted or taken over while it ran
                logger.info("document %s: run %s cancelled", run.id, claim)
            outcomes[run.id] = run.outcome or "cancelled"
        return outcomes

    async def _prepare(self, run: _Run) -> None:
        """Parse, split and embed one document: sets ``run.nodes`` or ``run.error``."""
        try:
            run.nodes = await self._embed(run)
        except _Stopped:
            pass  # the worker is stopping or the claim was lost: nothing to record
        except Exception as exc:
            run.error = _readable(exc)
            _log_failure(run.id, exc, run.error)

    async def _embed(self, run: _Run) -> list[BaseNode]:
        from indexes.pipeline import embed_document
        from indexes.readers import read_document

        document, spec, tracker = run.document, run.spec, run.tracker
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
                    document_id=run.id,
                    embed_model=embed_model,
                    tokenizer=tokenizer,
                    progress=tracker.report,
                )
            )

        nodes = await anyio.to_thread.run_sync(embed)
        tracker.stage(DocumentStatus.embedding, 1.0)
        return nodes

    async def _store(self, claim: str, wave: list[_Run]) -> None:
        """Write the wave's ready documents to their stores in one write per knowledge base,
        then record every document of the wave in one transaction."""
        for runs in _by_knowledge(wave):
            ready = [run for run in runs if run.nodes is not None and not run.lost]
            if ready:
                try:
                    await self._write(runs[0].spec, ready)
                    for run in ready:
                        run.stored = True
                except Exception as exc:
                    message = _readable(exc)
                    _log_failure(ready[0].id, exc, message)
                    for run in ready:
                        run.nodes, run.error = None, message
            failed = [run.id for run in runs if run.error is not None]
            # A failed document keeps no chunks, also none from an earlier version (reindex).
            await self._remove_chunks(runs[0].spec, failed)
        held = await self._record(claim, [run for run in wave if not run.lost])
        for runs in _by_knowledge(wave):
            lost = [run.id for run in runs if run.stored and run.id not in held]
            if lost:  # deleted or taken over while it was written: its chunks go again
                await self._remove_chunks(runs[0].spec, lost)

    async def _write(self, spec: KnowledgeSpec, ready: list[_Run]) -> None:
        index = await anyio.to_thread.run_sync(self._index, spec)
        chunks = {run.id: run.nodes or [] for run in ready}
        await anyio.to_thread.run_sync(index.replace_documents, chunks)

    def _index(self, spec: KnowledgeSpec) -> KnowledgeIndex:
        return open_index_sync(self.ctx, spec)

    async def _record(self, claim: str, wave: list[_Run]) -> set[int]:
        """Record each document's outcome, then recount their knowledge bases. Returns the
        documents whose claim held: the others were deleted or taken over."""
        values: dict[int, dict[str, Any]] = {}
        for run in wave:
            done = run.nodes is not None
            values[run.id] = {
                "status": DocumentStatus.completed if done else DocumentStatus.failed,
                "progress": 100 if done else 0,
                "chunk_count": len(run.nodes) if run.nodes is not None else 0,
                "error_msg": None if done else run.error,
                "job_id": None,
                "heartbeat_at": utcnow(),
            }
        async with self.ctx.sessionmaker() as session:
            held = await _update_claimed(session, claim, values)
        for run in wave:
            if run.id in held:
                run.outcome = values[run.id]["status"].value
        # After the outcomes are committed, in a transaction of its own (see _update_claimed).
        for knowledge_id in {run.spec.knowledge_id for run in wave}:
            await self._recount(knowledge_id)
        return held

    async def _recount(self, knowledge_id: int) -> None:
        """Counts are derived, so a failed recount is logged, not fatal: the outcomes are
        recorded, and the next recount of the knowledge base sets the counts right."""
        try:
            async with self.ctx.sessionmaker() as session:
                await session.exec(recount_statement(knowledge_id))
                await session.commit()
        except SQLAlchemyError as exc:
            logger.warning("knowledge base %s: recount failed: %s", knowledge_id, exc)

    async def _give_back(
        self,
        claim: str,
        runs: list[_Run],
        preparing: dict[asyncio.Task[None], _Run],
        storing: asyncio.Task[None] | None,
    ) -> None:
        """The run was cancelled (the worker is stopping): end it at a safe point and hand
        back what was not recorded, unclaimed and ``uploading``, so the queue's retry (or the
        next recovery sweep) runs it again. Left claimed, it would wait
        ``jobs.stale_after_seconds`` and then be failed as interrupted.

        Embedding stops at its next batch; a parse or a store write in progress finishes (a
        half-written index is worse than a late exit) and a write that finished is recorded.
        A failure while stopping is not recorded: the next run meets it again and records it.
        """
        for run in preparing.values():
            run.tracker.stop()
        if preparing:
            await asyncio.gather(*preparing, return_exceptions=True)
        if storing is not None:
            with contextlib.suppress(Exception):
                await storing
        back = [run for run in runs if run.outcome is None and not run.lost]
        if not back:
            return
        values = {
            run.id: {
                "status": DocumentStatus.uploading,
                "progress": 0,
                "job_id": None,
                "heartbeat_at": None,
            }
            for run in back
        }
        # Only our own claim is given back: a no-op for a document recorded (or lost) already.
        async with self.ctx.sessionmaker() as session:
            handed = await _update_claimed(session, claim, values)
        if handed:
            logger.info("documents %s: run stopped, handed back", sorted(handed))

    async def _claim_and_load(self, document_ids: Sequence[int], claim: str) -> list[_Run]:
        """Claim the queued documents among ``document_ids`` and load them with their
        knowledge base's spec, in one transaction."""
        stale = utcnow() - timedelta(seconds=self.ctx.settings.jobs.stale_after_seconds)
        statement = (
            update(Document)
            .where(
                col(Document.id).in_(document_ids),
                # Only a queued document is claimed: a duplicate queue entry for a document that
                # was processed meanwhile is a no-op instead of a second run.
                col(Document.status) == DocumentStatus.uploading,
                or_(col(Document.job_id).is_(None), col(Document.heartbeat_at) < stale),
            )
            .values(
                job_id=claim,
                status=DocumentStatus.parsing,
                progress=0,
                error_msg=None,
                heartbeat_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        async with self.ctx.sessionmaker() as session:
            claimed = await session.exec(statement)
            if not claimed.rowcount:
                await session.commit()
                return []
            query = select(Document).where(col(Document.job_id) == claim)
            documents = list((await session.exec(query)).all())
            await session.commit()
            runs: list[_Run] = []
            for knowledge_id, group in _grouped(documents, lambda d: d.knowledge_id).items():
                knowledge = await session.get(Knowledge, knowledge_id)
                if knowledge is None:  # deleted meanwhile, and with it its documents
                    continue
                spec = await spec_for(self.ctx, session, knowledge)
                runs.extend(_Run(document, spec) for document in group)
            return runs

    async def _heartbeat(self, claim: str, runs: list[_Run]) -> None:
        """Write each document's status and progress each second they change (and every
        KEEPALIVE_SECONDS anyway); stop a document whose claim was lost."""
        written: dict[int, Snapshot] = {}
        kept_alive = time.monotonic()
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            active = [run for run in runs if run.outcome is None and not run.lost]
            snapshots = {run.id: run.tracker.snapshot() for run in active}
            if time.monotonic() - kept_alive >= KEEPALIVE_SECONDS:
                kept_alive = time.monotonic()
            else:
                snapshots = {i: s for i, s in snapshots.items() if s != written.get(i)}
            if not snapshots:
                continue
            values = {
                document_id: {
                    "status": snapshot.status,
                    "progress": snapshot.progress,
                    "heartbeat_at": utcnow(),
                }
                for document_id, snapshot in snapshots.items()
            }
            async with self.ctx.sessionmaker() as session:
                held = await _update_claimed(session, claim, values)
            written.update(snapshots)
            for run in active:
                if run.id in snapshots and run.id not in held and run.outcome is None:
                    logger.info("document %s: claim lost, stopping", run.id)
                    run.lost = True
                    run.tracker.stop()

    async def _remove_chunks(self, spec: KnowledgeSpec, document_ids: list[int]) -> None:
        if not document_ids:
            return
        try:
            if not await self._knowledge_exists(spec.knowledge_id):
                # The knowledge base was deleted while this run worked. Its deletion dropped the
                # index first, and this run then opened it again to write (re-creating the
                # collection and keyword files): drop it again, or nothing ever would.
                await anyio.to_thread.run_sync(drop_index_sync, self.ctx, spec)
                return
            index = await anyio.to_thread.run_sync(self._index, spec)
            await anyio.to_thread.run_sync(index.delete_documents, document_ids)
        except Exception:
            logger.exception("documents %s: could not remove their chunks", document_ids)

    async def _knowledge_exists(self, knowledge_id: int) -> bool:
        async with self.ctx.sessionmaker() as session:
            return await session.get(Knowledge, knowledge_id) is not None


async def _update_claimed(
    session: AsyncSession, claim: str, values: dict[int, dict[str, Any]]
) -> set[int]:
    """Update each document still held by ``claim``; returns those it updated. One statement
    per document (its own values), each committed at once: a transaction holding several
    document rows deadlocked on MariaDB with a recount, whose subquery locks every document
    row of the knowledge base in id order (seen in CI). One row at a time never waits while
    holding another."""
    held = set()
    for document_id, row in values.items():
        statement = (
            update(Document)
            .where(col(Document.id) == document_id, col(Document.job_id) == claim)
            .values(**row)
            # The session is thrown away right after: syncing its (empty) identity map only
            # costs the ORM's evaluation work, a visible share of a small document's CPU.
            .execution_options(synchronize_session=False)
        )
        if (await session.exec(statement)).rowcount:
            held.add(document_id)
        await session.commit()
    return held


def _grouped(items: Iterable[Any], key: Any) -> dict[Any, list[Any]]:
    groups: dict[Any, list[Any]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return groups


def _by_knowledge(runs: list[_Run]) -> list[list[_Run]]:
    return list(_grouped(runs, lambda run: run.spec.knowledge_id).values())


def _log_failure(document_id: int, exc: Exception, message: str) -> None:
    if isinstance(exc, IndexesError | RagAppError):
        logger.warning("document %s failed: %s", document_id, message)
    else:
        logger.exception("document %s failed unexpectedly", document_id, exc_info=exc)


def _readable(exc: Exception) -> str:
    if isinstance(exc, IndexesError):
        return str(exc)
    if isinstance(exc, RagAppError):
        return exc.detail
    return "processing failed unexpectedly; the error has been logged"
