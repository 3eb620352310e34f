"""Ingestion jobs: SAQ workers on a real Redis (a document queued twice is processed once), and
recovery of documents whose worker died. SQLite and MariaDB. Concurrent runs inside one process:
test_concurrent_ingestion.py."""

from __future__ import annotations

import asyncio
import dataclasses
import faulthandler
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from saq import Status, Worker
from sqlalchemy import update
from sqlmodel import col

from rag_app.context import AppContext
from rag_app.db.models import Document, Knowledge, Llm, User
from rag_app.db.models.document import DocumentStatus
from rag_app.db.types import utcnow
from rag_app.domain.documents.service import DocumentService
from rag_app.domain.documents.upload import received_from_path
from rag_app.domain.knowledge.service import new_collection_name
from rag_app.indexing.access import open_index
from rag_app.jobs.queue import INGEST_FUNCTION, SaqQueue
from rag_app.jobs.stale import INTERRUPTED, recover_stale_documents
from rag_app.jobs.worker import build_worker
from tests import fixtures_docs as docs
from tests.conftest import REDIS_URL, Api, SignedIn, make_settings, require_service
from tests.integration.test_documents import new_kb, store_counts, upload, wait_done

DEADLINE = 180.0
TERMINAL = {DocumentStatus.completed.value, DocumentStatus.failed.value}


def guide(topic: str, sentences: int = 60) -> bytes:
    """A Markdown policy of ``sentences`` numbered rules (~10 tokens each)."""
    body = " ".join(
        f"{topic} rule {i} explains how the {topic} policy applies." for i in range(sentences)
    )
    return f"# {topic.title()} guide\n\n{body}\n".encode()


# --- a knowledge base in a context of its own (workers are other processes in production) ----


async def seed_knowledge(ctx: AppContext, **fields: Any) -> Knowledge:
    """A user, the packaged embedding model and a knowledge base, stored directly."""
    async with ctx.sessionmaker() as session:
        name = f"owner_{uuid.uuid4().hex[:8]}"
        user = User(username=name, email=f"{name}@example.com", password_hash="unused")
        llm = Llm(
            name=f"minilm-{uuid.uuid4().hex[:6]}",
            model_type="embedding",
            provider="local",
            model_name="all-MiniLM-L6-v2",
            dimension=384,
        )
        session.add_all([user, llm])
        await session.flush()
        knowledge = Knowledge(
            user_id=user.id or 0,
            name="handbook",
            embed_llm_id=llm.id or 0,
            vector_collection_name=new_collection_name(),
            **fields,
        )
        session.add(knowledge)
        await session.commit()
        await session.refresh(knowledge)
        return knowledge


async def upload_files(ctx: AppContext, knowledge_id: int, files: Sequence[Path]) -> list[int]:
    """Upload through DocumentService, as the API and `rag-app kb ingest` do (queues the jobs)."""
    async with ctx.sessionmaker() as session:
        knowledge = await session.get(Knowledge, knowledge_id)
        assert knowledge is not None
        received = [received_from_path(path) for path in files]
        stored = await DocumentService(session, ctx).upload(knowledge, received, replace=False)
        return [document.id or 0 for document in stored]


async def wait_documents(ctx: AppContext, ids: Sequence[int]) -> list[Document]:
    deadline = time.monotonic() + DEADLINE
    while True:
        async with ctx.sessionmaker() as session:
            found = [await session.get(Document, document_id) for document_id in ids]
        documents = [d for d in found if d is not None]
        if len(documents) == len(ids) and all(d.status in TERMINAL for d in documents):
            return documents
        if time.monotonic() > deadline:
            faulthandler.dump_traceback(all_threads=True)  # where the runs are stuck
            pytest.fail(
                f"not processed in time: {[(d.id, d.status, d.progress) for d in documents]}"
            )
        await asyncio.sleep(0.2)


async def counts_in(ctx: AppContext, knowledge_id: int, document_id: int | None) -> tuple[int, int]:
    """(vector store, keyword store) chunk counts of a document, or of the knowledge base."""
    async with ctx.sessionmaker() as session:
        knowledge = await session.get(Knowledge, knowledge_id)
        assert knowledge is not None
        index = await open_index(ctx, session, knowledge)
    return await asyncio.to_thread(
        lambda: (index.count(document_id), index.keyword_store.count(document_id))
    )


# --- Redis, SAQ ---------------------------------------------------------------------------------


@pytest.fixture
def queue_name() -> Iterator[str]:
    """A queue of this test's own in the shared Redis, and its keys removed afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        require_service("Redis", f"{REDIS_URL}: {exc}")
    name = f"rag_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        for pattern in (f"saq:{name}:*", f"saq:job:{name}:*"):
            for key in client.scan_iter(match=pattern):
                client.delete(key)
        client.close()


@pytest.fixture
async def redis_ctx(
    backend: str, make_db_url: Any, tmp_path: Path, queue_name: str
) -> AsyncIterator[AppContext]:
    settings = make_settings(
        make_db_url(backend),
        tmp_path / "data",
        redis={"url": REDIS_URL},
        jobs={"queue_name": queue_name},
    )
    ctx = AppContext.create(settings)
    await asyncio.to_thread(ctx.migrate)
    await ctx.start_jobs()
    try:
        yield ctx
    finally:
        await ctx.close()


@asynccontextmanager
async def running(*workers: Worker) -> AsyncIterator[None]:
    """SAQ workers running as tasks (as `rag-app worker` runs one), stopped cleanly after."""
    tasks = [asyncio.create_task(worker.start()) for worker in workers]
    try:
        yield
    finally:
        for worker in workers:
            await worker.stop()
        done, pending = await asyncio.wait(tasks, timeout=30)
        for task in pending:
            task.cancel()
    assert not pending, "a worker did not stop"
    assert [task.exception() for task in done] == [None] * len(workers)


async def ingest_results(ctx: AppContext, expected: int) -> list[str]:
    """Final status of each document as reported by the finished ingestion jobs (a job reports
    every document of its batch), once ``expected`` documents have been reported.

    SAQ's start-up sweep may abort a job it races with: the job still runs to its end (or,
    cancelled, queues its documents again) but reports nothing. Such a job's documents count
    with their status in the database once it is final."""
    queue = ctx.job_queue
    assert isinstance(queue, SaqQueue)
    deadline = time.monotonic() + DEADLINE
    while True:
        jobs = [job async for job in queue.queue.iter_jobs() if job.function == INGEST_FUNCTION]
        assert not [job.error for job in jobs if job.status == Status.FAILED]
        done = [job for job in jobs if job.status == Status.COMPLETE]
        statuses = [status for job in done for status in job.result.values()]
        reported = {int(key) for job in done for key in job.result}
        aborted = {
            document_id
            for job in jobs
            if job.status == Status.ABORTED
            for document_id in job.kwargs["document_ids"]
        }
        async with ctx.sessionmaker() as session:
            for document_id in aborted - reported:
                document = await session.get(Document, document_id)
                if document is not None and document.status in TERMINAL:
                    statuses.append(document.status)
        if len(statuses) >= expected:
            return sorted(statuses)
        assert time.monotonic() < deadline, [(job.status, job.result) for job in jobs]
        await asyncio.sleep(0.2)


async def test_saq_worker_processes_uploaded_documents(
    redis_ctx: AppContext, tmp_path: Path
) -> None:
    assert isinstance(redis_ctx.job_queue, SaqQueue)
    knowledge = await seed_knowledge(redis_ctx, chunk_size=100, chunk_overlap=10)
    files = [tmp_path / "refunds.md", tmp_path / "travel.md"]
    for path in files:
        path.write_bytes(guide(path.stem))
    ids = await upload_files(redis_ctx, knowledge.id or 0, files)
    async with running(build_worker(redis_ctx, concurrency=2)):
        documents = await wait_documents(redis_ctx, ids)
        assert await ingest_results(redis_ctx, expected=2) == ["completed", "completed"]
    for document in documents:
        assert document.status == "completed", document.error_msg
        assert document.chunk_count > 1
        assert document.job_id is None
        assert await counts_in(redis_ctx, knowledge.id or 0, document.id) == (
            document.chunk_count,
            document.chunk_count,
        )


async def test_saq_jobs_carry_batches_of_documents(
    redis_ctx: AppContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_ctx.settings.jobs, "batch_documents", 2)
    knowledge = await seed_knowledge(redis_ctx, chunk_size=100, chunk_overlap=10)
    files = [tmp_path / f"{topic}.md" for topic in ("leave", "travel", "expense", "pay", "safety")]
    for path in files:
        path.write_bytes(guide(path.stem, sentences=20))
    ids = await upload_files(redis_ctx, knowledge.id or 0, files)
    queue = redis_ctx.job_queue
    assert isinstance(queue, SaqQueue)
    jobs = [job async for job in queue.queue.iter_jobs() if job.function == INGEST_FUNCTION]
    assert sorted(job.kwargs["document_ids"] for job in jobs) == [ids[0:2], ids[2:4], ids[4:]]

    async with running(build_worker(redis_ctx, concurrency=2)):
        documents = await wait_documents(redis_ctx, ids)
        assert await ingest_results(redis_ctx, expected=5) == ["completed"] * 5
    for document in documents:
        assert document.status == "completed", document.error_msg
        expected = (document.chunk_count, document.chunk_count)
        assert await counts_in(redis_ctx, knowledge.id or 0, document.id) == expected


async def test_a_document_queued_twice_is_processed_once(
    redis_ctx: AppContext, tmp_path: Path
) -> None:
    knowledge = await seed_knowledge(redis_ctx, chunk_size=100, chunk_overlap=10)
    path = tmp_path / "policy.md"
    path.write_bytes(guide("expense", sentences=120))
    (document_id,) = await upload_files(redis_ctx, knowledge.id or 0, [path])
    await redis_ctx.job_queue.enqueue([document_id])  # a duplicate entry, e.g. a re-sent request
    # A second "process" with its own engine and index cache, as another `rag-app worker` has.
    # Both entries are queued before the workers start, so both runs start together.
    other = AppContext.create(redis_ctx.settings)
    await other.start_jobs()
    try:
        async with running(build_worker(redis_ctx, 1), build_worker(other, 1)):
            assert await ingest_results(redis_ctx, expected=2) == ["completed", "skipped"]
    finally:
        await other.close()
    (document,) = await wait_documents(redis_ctx, [document_id])
    assert document.status == "completed", document.error_msg
    assert document.chunk_count > 1
    # No chunk twice anywhere: the document's count, and the whole knowledge base's.
    expected = (document.chunk_count, document.chunk_count)
    assert await counts_in(redis_ctx, knowledge.id or 0, document_id) == expected
    assert await counts_in(redis_ctx, knowledge.id or 0, None) == expected


async def test_build_worker_refuses_the_in_process_queue(tmp_path: Path) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "data")
    ctx = AppContext.create(settings)
    await ctx.start_jobs()
    try:
        with pytest.raises(RuntimeError, match=r"needs redis\.url"):
            build_worker(ctx, 1)
    finally:
        await ctx.close()


# --- runs whose worker died ---------------------------------------------------------------


def job_context(api: Api) -> AppContext:
    """The app's context with sessions on the test's event loop (the app runs on another)."""
    return dataclasses.replace(api.ctx, sessionmaker=api.db, _job_queue=None)


async def set_columns(api: Api, document_id: int, **values: Any) -> None:
    async def write(session: Any) -> None:
        await session.exec(update(Document).where(col(Document.id) == document_id).values(**values))
        await session.commit()

    await api.run(write)


async def test_a_dead_run_becomes_failed_and_retry_completes_it(api: Api) -> None:
    user = await api.user()
    kb = await new_kb(api, user)
    response = await upload(api, user, kb["id"], ("notes.md", docs.markdown_bytes()))
    item = response.json()["items"][0]
    done = await wait_done(api, user, item["id"])
    assert done["status"] == "completed"
    # What a worker killed while embedding leaves behind: a claim whose heartbeat stopped,
    # and the chunks it had already written.
    long_ago = utcnow() - timedelta(seconds=api.ctx.settings.jobs.stale_after_seconds * 2)
    await set_columns(
        api,
        item["id"],
        status=DocumentStatus.embedding,
        job_id="dead-worker-run",
        heartbeat_at=long_ago,
        progress=40,
    )
    ctx = job_context(api)
    assert item["id"] not in await recover_stale_documents(ctx)
    failed = (
        await api.client.get(f"/api/v1/documents/{item['id']}/status", headers=user.headers)
    ).json()
    assert failed["status"] == "failed"
    assert failed["error_msg"] == INTERRUPTED
    assert failed["progress"] == 0

    retried = await api.client.post(f"/api/v1/documents/{item['id']}/retry", headers=user.headers)
    assert retried.status_code == 202, retried.text
    final = await wait_done(api, user, item["id"])
    assert final["status"] == "completed", final
    assert final["error_msg"] is None
    assert final["chunk_count"] == done["chunk_count"]
    # The retry replaced what the dead run left: no chunk twice.
    counts = await store_counts(api, kb["id"], item["id"])
    assert counts == (final["chunk_count"], final["chunk_count"])


async def test_a_live_run_is_left_alone_and_a_forgotten_upload_is_requeued(
    api: Api,
) -> None:
    user: SignedIn = await api.user()
    knowledge = await api.knowledge(user)
    ctx = job_context(api)
    stale = timedelta(seconds=api.ctx.settings.jobs.stale_after_seconds)
    live = await api.insert(
        Document(
            knowledge_id=knowledge.id or 0,
            file_name="live.md",
            file_extension="md",
            file_path="kb/x/live.md",
            status=DocumentStatus.parsing,
            job_id="live-run",
            heartbeat_at=utcnow() - stale / 2,
        )
    )
    forgotten = await api.insert(
        Document(
            knowledge_id=knowledge.id or 0,
            file_name="forgotten.md",
            file_extension="md",
            file_path="kb/x/forgotten.md",
            updated_at=utcnow() - stale * 2,
        )
    )
    recent = await api.insert(
        Document(
            knowledge_id=knowledge.id or 0,
            file_name="recent.md",
            file_extension="md",
            file_path="kb/x/recent.md",
        )
    )
    requeue = await recover_stale_documents(ctx)
    assert forgotten.id in requeue
    assert live.id not in requeue
    assert recent.id not in requeue
    # Touched when handed back: the next sweep does not queue it a second time.
    assert forgotten.id not in await recover_stale_documents(ctx)

    async def reread(session: Any) -> list[Document | None]:
        return [await session.get(Document, d.id) for d in (live, forgotten, recent)]

    live_now, forgotten_now, recent_now = await api.run(reread)
    assert live_now is not None
    assert (live_now.status, live_now.job_id, live_now.error_msg) == ("parsing", "live-run", None)
    assert forgotten_now is not None
    assert forgotten_now.status == "uploading"
    assert recent_now is not None
    assert recent_now.status == "uploading"
