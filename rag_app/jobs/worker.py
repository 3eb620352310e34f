"""`rag-app worker`: SAQ workers that process queued documents (production stack).

Any number of worker processes may run; they share the Redis queue, and the database claim in
the ingestion job keeps each document to one run at a time.

Stopping (SIGTERM from `docker compose stop`, or Ctrl-C): SAQ 0.26 on its own cancels every
task at once and waits one second. A run cancelled that way left its document claimed until
``jobs.stale_after_seconds`` passed, and recovery then marked it failed. ``GracefulWorker``
instead stops taking jobs at once, gives running jobs a grace period to finish, then cancels
them: the ingestion job hands its document back (unclaimed, ``uploading``, see
``IngestionJob._give_back``) and ``ingest`` queues it again for another worker.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from saq import CronJob, Job, Worker

from rag_app.errors import BackendUnavailable
from rag_app.jobs.queue import INGEST_FUNCTION, SaqQueue, saq_ingest
from rag_app.jobs.stale import recover_stale_documents

if TYPE_CHECKING:
    from rag_app.context import AppContext

logger = logging.getLogger("rag_app.jobs")


async def recover(saq_ctx: dict[str, Any]) -> int:
    """Cron job (one worker runs it each minute): fail abandoned runs, queue stuck uploads."""
    app_ctx: AppContext = saq_ctx["app_ctx"]
    requeue = await recover_stale_documents(app_ctx)
    await app_ctx.job_queue.enqueue(requeue)
    return len(requeue)


async def ingest(
    saq_ctx: dict[str, Any],
    *,
    document_ids: list[int] | None = None,
    document_id: int | None = None,
) -> dict[str, str]:
    """``saq_ingest``; a run cancelled (this worker stopping, or SAQ aborting the job) hands its
    documents back, and they are queued again here. SAQ's own retry after a cancellation is not
    enough: it skips aborted jobs (its sweep aborts a job caught between dequeue and start),
    and it can come before the hand-back, when a document still looks claimed. A duplicate
    entry is harmless: the database claim runs a document once.

    ``document_id``: jobs queued by a version that queued one document per job."""
    batch = list(document_ids or []) + ([document_id] if document_id is not None else [])
    try:
        return await saq_ingest(saq_ctx, document_ids=batch)
    except asyncio.CancelledError:
        app_ctx: AppContext = saq_ctx["app_ctx"]
        try:
            await app_ctx.job_queue.enqueue(batch)
        except BackendUnavailable as exc:  # the recovery sweep queues them later
            logger.warning("documents %s not queued again: %s", batch, exc.detail)
        raise


# Docker sends SIGKILL 10 s after SIGTERM by default: the grace period and a cancelled run's
# hand-back (the embedding stops at its next batch) both fit in that.
DEFAULT_GRACE_SECONDS = 5.0
# How long SAQ waits for a cancelled run to hand its document back (its default, 1 s, is
# shorter than an embedding batch); past it the shutdown goes on and may cut the hand-back.
_HAND_BACK_SECONDS = 30.0
_PROCESSOR = "process"  # the name SAQ gives the tasks that dequeue and run jobs


class GracefulWorker(Worker):
    """SAQ's Worker with the shutdown described in the module docstring."""

    def __init__(self, *args: Any, grace_seconds: float, **kwargs: Any) -> None:
        super().__init__(
            *args,
            before_process=self._job_started,
            after_process=self._job_ended,
            cancellation_hard_deadline_s=_HAND_BACK_SECONDS,
            **kwargs,
        )
        self.grace_seconds = grace_seconds
        # Processors (SAQ's tasks that dequeue and run jobs) holding a job, with the job; the
        # others are waiting in a dequeue.
        self._busy: dict[asyncio.Task[Any], Job] = {}
        self._winding_down = False

    async def _job_started(self, ctx: Any) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._busy[task] = ctx["job"]

    async def _job_ended(self, _ctx: Any) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._busy.pop(task, None)

    async def stop(self) -> None:
        if not self._winding_down:
            self._winding_down = True
            await self._wind_down()
        await super().stop()

    async def _wind_down(self) -> None:
        self.event.set()  # SAQ starts no new processor once this is set
        processors = [task for task in self.tasks if task.get_name() == _PROCESSOR]
        for task in processors:
            if task not in self._busy:
                task.cancel()  # waiting for a job: take none from now on
        running = {job: context["task"] for job, context in self.job_task_contexts.items()}
        if running:
            logger.info(
                "stopping: waiting up to %ss for %s job(s)", self.grace_seconds, len(running)
            )
            _, late = await asyncio.wait(running.values(), timeout=self.grace_seconds)
            # Cancel the processor, not the job: SAQ then cancels the job, waits for it (up
            # to cancellation_hard_deadline_s) and queues it again. A job task cancelled
            # directly is left "active" in Redis and never retried.
            for processor, job in list(self._busy.items()):
                if running.get(job) in late:
                    processor.cancel()
            if late:
                logger.info("stopping: %s job(s) cancelled and handed back", len(late))
        # Let the processors record each outcome in Redis (finished, or queued again): SAQ's
        # own stop would cancel them in the middle of that.
        busy = [task for task in processors if not task.done()]
        if busy:
            await asyncio.wait(busy, timeout=2 * _HAND_BACK_SECONDS)


def build_worker(
    app_ctx: AppContext, concurrency: int, grace_seconds: float = DEFAULT_GRACE_SECONDS
) -> Worker:
    queue = app_ctx.job_queue
    if not isinstance(queue, SaqQueue):
        raise RuntimeError(
            "`rag-app worker` needs redis.url: without Redis, the API process runs the jobs itself"
        )

    async def startup(saq_ctx: dict[str, Any]) -> None:
        saq_ctx["app_ctx"] = app_ctx
        logger.info("worker ready (concurrency %s)", concurrency)

    return GracefulWorker(
        queue.queue,
        functions=[(INGEST_FUNCTION, ingest)],
        concurrency=concurrency,
        cron_jobs=[CronJob(recover, cron="* * * * *", timeout=120)],
        startup=startup,
        grace_seconds=grace_seconds,
    )
