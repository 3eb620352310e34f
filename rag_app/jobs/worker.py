"""`rag-app worker`: SAQ workers that process queued documents (production stack).

Any number of worker processes may run; they share the Redis queue, and the database claim in
the ingestion job keeps each document to one run at a time.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from saq import CronJob, Worker

from rag_app.jobs.queue import INGEST_FUNCTION, SaqQueue, saq_ingest
from rag_app.jobs.stale import recover_stale_documents

if TYPE_CHECKING:
    from rag_app.context import AppContext

logger = logging.getLogger("rag_app.jobs")


async def recover(saq_ctx: dict[str, Any]) -> int:
    """Cron job (one worker runs it each minute): fail abandoned runs, queue stuck uploads."""
    app_ctx: AppContext = saq_ctx["app_ctx"]
    requeue = await recover_stale_documents(app_ctx)
    for document_id in requeue:
        await app_ctx.job_queue.enqueue(document_id)
    return len(requeue)


def build_worker(app_ctx: AppContext, concurrency: int) -> Worker:
    queue = app_ctx.job_queue
    if not isinstance(queue, SaqQueue):
        raise RuntimeError(
            "`rag-app worker` needs redis.url: without Redis, the API process runs the jobs itself"
        )

    async def startup(saq_ctx: dict[str, Any]) -> None:
        saq_ctx["app_ctx"] = app_ctx
        logger.info("worker ready (concurrency %s)", concurrency)

    return Worker(
        queue.queue,
        functions=[(INGEST_FUNCTION, saq_ingest)],
        concurrency=concurrency,
        cron_jobs=[CronJob(recover, cron="* * * * *", timeout=120)],
        startup=startup,
    )
