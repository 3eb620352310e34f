"""Documents whose worker died: found by their heartbeat, made retryable or queued again."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, or_, update
from sqlmodel import col, select

from rag_app.db.models import Document
from rag_app.db.models.document import IN_PROGRESS, DocumentStatus
from rag_app.db.types import utcnow

if TYPE_CHECKING:
    from rag_app.context import AppContext

logger = logging.getLogger("rag_app.jobs")

INTERRUPTED = "processing was interrupted (the worker stopped); retry the document"


async def recover_stale_documents(ctx: AppContext) -> list[int]:
    """Fail abandoned runs, and return documents stuck in ``uploading`` to queue them again.

    A run is abandoned when its heartbeat is older than ``jobs.stale_after_seconds``; it is
    marked failed (so retry works) rather than silently restarted, because a document that
    kills its worker would otherwise kill every worker in turn.
    """
    cutoff = utcnow() - timedelta(seconds=ctx.settings.jobs.stale_after_seconds)
    async with ctx.sessionmaker() as session:
        failed = await session.exec(
            update(Document)
            .where(
                col(Document.status).in_(IN_PROGRESS),
                or_(col(Document.heartbeat_at).is_(None), col(Document.heartbeat_at) < cutoff),
            )
            .values(status=DocumentStatus.failed, error_msg=INTERRUPTED, job_id=None, progress=0)
        )
        waiting = await session.exec(
            select(Document.id).where(
                and_(
                    col(Document.status) == DocumentStatus.uploading,
                    col(Document.job_id).is_(None),
                    col(Document.updated_at) < cutoff,
                )
            )
        )
        requeue = [doc_id for doc_id in waiting.all() if doc_id is not None]
        if requeue:
            # Touch them so that the next sweep does not queue them again before they run.
            await session.exec(
                update(Document).where(col(Document.id).in_(requeue)).values(updated_at=utcnow())
            )
        await session.commit()
    if failed.rowcount:
        logger.warning("%s abandoned document run(s) marked failed", failed.rowcount)
    return requeue
