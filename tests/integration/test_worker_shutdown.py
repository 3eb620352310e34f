"""`rag-app worker` stopped with SIGTERM (as `docker compose stop` does) while it embeds a
document: it takes no new job, exits promptly, and the document is either finished within the
grace period or handed back unclaimed, and another worker then completes it. Also a run that
SAQ aborts (its sweep does so to a job caught between dequeue and start). Real worker
processes on a real Redis, SQLite database, packaged embedding model."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from saq import Job

from rag_app.context import AppContext
from rag_app.db.models import Document
from rag_app.jobs.queue import INGEST_FUNCTION, SaqQueue
from rag_app.jobs.worker import build_worker
from tests.conftest import REDIS_URL, make_settings
from tests.integration.test_jobs import (
    counts_in,
    guide,
    queue_name,
    running,
    seed_knowledge,
    upload_files,
)

__all__ = ["queue_name"]  # the fixture, for pytest to find here

# Docker's default stop timeout: after it, SIGKILL leaves the document claimed.
DOCKER_STOP_SECONDS = 10.0
DEADLINE = 240.0
# `rag-app` itself, with its log (the job and shutdown steps) shown when a test fails.
_RAG_APP = (
    "import logging, sys; logging.basicConfig(level=logging.INFO); "
    "from rag_app.cli import main; main(sys.argv[1:])"
)


@pytest.fixture
async def ctx(make_db_url: Any, tmp_path: Path, queue_name: str) -> AsyncIterator[AppContext]:
    """The API side: it uploads and queues; the workers are the subprocesses below."""
    settings = make_settings(
        make_db_url("sqlite"),
        tmp_path / "data",
        redis={"url": REDIS_URL},
        jobs={"queue_name": queue_name},
    )
    context = AppContext.create(settings)
    await asyncio.to_thread(context.migrate)
    await context.start_jobs()
    try:
        yield context
    finally:
        await context.close()


@contextmanager
def worker(ctx: AppContext, log: Path, *options: str) -> Iterator[subprocess.Popen[bytes]]:
    """A `rag-app worker` on the same database, data directory and queue as ``ctx``."""
    settings = ctx.settings
    env = {
        **os.environ,
        "RAG_CONFIG": "test",
        "RAG_DATA_DIR": str(settings.data_dir),
        "RAG_DATABASE__URL": settings.database_url,
        "RAG_REDIS__URL": REDIS_URL,
        "RAG_JOBS__QUEUE_NAME": settings.jobs.queue_name,
        "HF_HUB_OFFLINE": "1",
    }
    command = [sys.executable, "-c", _RAG_APP, "worker", "--concurrency", "2", *options]
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def read(ctx: AppContext, document_id: int) -> Document:
    async with ctx.sessionmaker() as session:
        document = await session.get(Document, document_id)
    assert document is not None
    return document


async def wait_for(ctx: AppContext, document_id: int, log: Path | None, *statuses: str) -> Document:
    deadline = time.monotonic() + DEADLINE
    while True:
        document = await read(ctx, document_id)
        if document.status in statuses:
            return document
        if time.monotonic() > deadline or document.status == "failed":
            shown = tail(log) if log else "(in this process)"
            pytest.fail(f"{document.status} {document.error_msg}; worker log:\n{shown}")
        await asyncio.sleep(0.1)


async def stop(process: subprocess.Popen[bytes], within: float, log: Path) -> float:
    """SIGTERM; the seconds the process took to exit (it must exit cleanly)."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(process.wait, within)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not exit within {within} s; log:\n{tail(log)}")
    assert code == 0, tail(log)
    return time.monotonic() - started


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


async def ingest_jobs(ctx: AppContext, status: str) -> list[Job]:
    queue = ctx.job_queue
    assert isinstance(queue, SaqQueue)
    jobs = [job async for job in queue.queue.iter_jobs() if job.function == INGEST_FUNCTION]
    return [job for job in jobs if job.status == status]


async def queued_jobs(ctx: AppContext) -> int:
    return len(await ingest_jobs(ctx, "queued"))


async def test_a_stopped_run_is_handed_back_and_another_worker_completes_it(
    ctx: AppContext, tmp_path: Path
) -> None:
    knowledge = await seed_knowledge(ctx, chunk_size=100, chunk_overlap=10)
    path = tmp_path / "expenses.md"
    path.write_bytes(guide("expense", sentences=6000))  # ~650 chunks: a minute of embedding
    (document_id,) = await upload_files(ctx, knowledge.id or 0, [path])
    log = tmp_path / "worker.log"

    with worker(ctx, log, "--grace-seconds", "0") as first:
        running = await wait_for(ctx, document_id, log, "embedding")
        assert running.job_id is not None
        took = await stop(first, DOCKER_STOP_SECONDS, log)

    document = await read(ctx, document_id)
    # Handed back: not claimed, not failed, waiting to be run again, and queued again.
    assert (document.status, document.job_id, document.progress) == ("uploading", None, 0), (
        document.error_msg,
        tail(log),
    )
    assert await queued_jobs(ctx) >= 1
    assert took < DOCKER_STOP_SECONDS

    with worker(ctx, log) as second:
        done = await wait_for(ctx, document_id, log, "completed")
        await stop(second, DOCKER_STOP_SECONDS, log)
    assert done.job_id is None
    assert done.chunk_count > 500
    # Exactly one copy of every chunk in both stores: the stopped run left nothing behind.
    assert await counts_in(ctx, knowledge.id or 0, None) == (done.chunk_count, done.chunk_count)


async def test_running_documents_finish_in_the_grace_period_and_no_new_job_starts(
    ctx: AppContext, tmp_path: Path
) -> None:
    knowledge = await seed_knowledge(ctx, chunk_size=100, chunk_overlap=10)
    path = tmp_path / "travel.md"
    path.write_bytes(guide("travel", sentences=600))  # a few seconds of embedding
    (document_id,) = await upload_files(ctx, knowledge.id or 0, [path])
    log = tmp_path / "worker.log"

    with worker(ctx, log, "--grace-seconds", "120") as only:
        await wait_for(ctx, document_id, log, "embedding")
        only.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.0)  # the worker has handled the signal by now
        # Queued while the worker winds down, with a processor free: it must not be taken.
        late = tmp_path / "late.md"
        late.write_bytes(guide("late", sentences=20))
        (late_id,) = await upload_files(ctx, knowledge.id or 0, [late])
        took = await stop(only, 100, log)  # a second SIGTERM changes nothing

    document = await read(ctx, document_id)
    assert (document.status, document.job_id) == ("completed", None), tail(log)
    assert took < 100  # it exits once the document is done, not at the end of the grace
    late_document = await read(ctx, late_id)
    assert (late_document.status, late_document.job_id) == ("uploading", None)
    assert await queued_jobs(ctx) >= 1  # still in the queue for the next worker


async def test_a_run_aborted_by_saq_is_handed_back_and_run_again(
    ctx: AppContext, tmp_path: Path
) -> None:
    knowledge = await seed_knowledge(ctx, chunk_size=100, chunk_overlap=10)
    path = tmp_path / "audit.md"
    path.write_bytes(guide("audit", sentences=2000))
    (document_id,) = await upload_files(ctx, knowledge.id or 0, [path])
    queue = ctx.job_queue
    assert isinstance(queue, SaqQueue)

    async with running(build_worker(ctx, concurrency=2)):
        await wait_for(ctx, document_id, None, "embedding")
        (job,) = await ingest_jobs(ctx, "active")
        await queue.queue.abort(job, "aborted by the test")
        done = await wait_for(ctx, document_id, None, "completed")
    assert await counts_in(ctx, knowledge.id or 0, None) == (done.chunk_count, done.chunk_count)
    await job.refresh()
    assert job.status == "aborted"  # the run was really cut short, and run again
