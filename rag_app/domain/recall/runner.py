"""Running batch recall tests in the background.

A test runs as an asyncio task in the API process that accepted it, in both deployments. The
work is the chat path's retrieval (embed the query, search, fuse, rerank), which API processes
do for every chat request anyway, and it is bounded (at most 1000 queries): neither the Redis
queue nor a `rag-app worker` is needed for it. Everything a client polls lives in SQL (status,
progress, results), so any API process answers GET; the task writes its progress every second,
and a test whose process went away (no progress for ``jobs.stale_after_seconds``) is reported
failed by the service instead of "running" forever. At most ``CONCURRENCY`` tests run at once
per process; the others wait as "queued". Stopping the app cancels the running ones and marks
them failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlmodel import col

from indexes.errors import IndexesError
from indexes.retrieval import RobotRetriever
from indexes.specs import RetrievalMode, RetrievalSpec
from rag_app.db.models import Knowledge, RecallTest, Robot
from rag_app.db.models.recall_test import RecallTestStatus
from rag_app.domain.recall.metrics import evaluate, first_occurrences, ranx_version
from rag_app.domain.recall.schemas import RecallHit, RecallMetrics, RecallQueryResult
from rag_app.domain.recall.service import ACTIVE
from rag_app.errors import NotFound, RagAppError
from rag_app.indexing.access import spec_for
from rag_app.indexing.robots import retriever_for, robot_retriever, robot_spec

if TYPE_CHECKING:
    from rag_app.context import AppContext

logger = logging.getLogger("rag_app.recall")

CONCURRENCY = 2
HEARTBEAT_SECONDS = 1.0
STOPPED = "the test was interrupted: the server stopped; start it again"
UNEXPECTED = "the test failed unexpectedly; the error has been logged"


def metric_names(k: int) -> tuple[str, str, str]:
    return f"recall@{k}", f"mrr@{k}", f"ndcg@{k}"


@dataclass
class _Progress:
    done: int = 0


class RecallRunner:
    """The recall tests running in this process, as tracked asyncio tasks."""

    def __init__(self, ctx: AppContext, concurrency: int = CONCURRENCY) -> None:
        self.ctx = ctx
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def start(self, test_id: int) -> None:
        """Run the stored, queued test ``test_id`` in the background (call from the event loop)."""
        task = asyncio.create_task(self._run(test_id), name=f"recall-test-{test_id}")
        self._tasks[test_id] = task  # a reference, or the task could be garbage-collected
        task.add_done_callback(lambda _: self._tasks.pop(test_id, None))

    async def stop(self) -> None:
        """Cancel the running tests and mark them failed (the app is shutting down)."""
        tasks = dict(self._tasks)
        for task in tasks.values():
            task.cancel()
        for task in tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if tasks:
            async with self.ctx.sessionmaker() as session:
                await session.exec(
                    update(RecallTest)
                    .where(col(RecallTest.id).in_(list(tasks)), col(RecallTest.status).in_(ACTIVE))
                    .values(status=RecallTestStatus.failed, error_msg=STOPPED)
                )
                await session.commit()

    async def _run(self, test_id: int) -> None:
        progress = _Progress()
        heartbeat = asyncio.create_task(self._heartbeat(test_id, progress))
        try:
            async with self._slots:
                await RecallJob(self.ctx, test_id, progress).run()
        except Exception:  # RecallJob records its own failures; this is the last resort
            logger.exception("recall test %s crashed", test_id)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _heartbeat(self, test_id: int, progress: _Progress) -> None:
        """Write the progress every second; the write also refreshes ``updated_at``, which is
        how a test whose process died is told from a slow one."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                async with self.ctx.sessionmaker() as session:
                    statement = update(RecallTest).where(
                        col(RecallTest.id) == test_id, col(RecallTest.status).in_(ACTIVE)
                    )
                    await session.exec(statement.values(progress=progress.done))
                    await session.commit()
            except Exception:  # a missed beat is harmless; the next one retries
                logger.warning("recall test %s: progress not written", test_id, exc_info=True)


class RecallJob:
    """One run of one test: every query through the retriever, then the metrics."""

    def __init__(self, ctx: AppContext, test_id: int, progress: _Progress) -> None:
        self.ctx = ctx
        self.test_id = test_id
        self.progress = progress

    async def run(self) -> None:
        test = await self._claim()
        if test is None:
            logger.info("recall test %s is not queued; not run", self.test_id)
            return
        try:
            retriever = await self._retriever(test)
            mode: RetrievalMode = test.mode  # type: ignore[assignment]  # checked on create
            results = []
            for query in test.queries:
                found = await retriever.asearch(query["query"], top_k=test.top_k, mode=mode)
                ranking = first_occurrences(chunk.document_id for chunk in found.chunks)
                results.append((query, ranking, found.timings_ms.get("total", 0.0)))
                self.progress.done += 1
            rows, metrics = await asyncio.to_thread(_score, results, test.top_k)
        except (IndexesError, RagAppError) as exc:
            detail = str(exc) if isinstance(exc, IndexesError) else exc.detail
            logger.warning("recall test %s failed: %s", self.test_id, detail)
            await self._finish(RecallTestStatus.failed, error_msg=detail)
            return
        except Exception:
            logger.exception("recall test %s failed unexpectedly", self.test_id)
            await self._finish(RecallTestStatus.failed, error_msg=UNEXPECTED)
            return
        await self._finish(
            RecallTestStatus.completed,
            progress=len(results),
            results=[row.model_dump(mode="json") for row in rows],
            metrics=metrics.model_dump(mode="json"),
        )

    async def _claim(self) -> RecallTest | None:
        async with self.ctx.sessionmaker() as session:
            claimed = await session.exec(
                update(RecallTest)
                .where(
                    col(RecallTest.id) == self.test_id,
                    col(RecallTest.status) == RecallTestStatus.queued,
                )
                .values(status=RecallTestStatus.running)
            )
            await session.commit()
            if not claimed.rowcount:
                return None
            return await session.get(RecallTest, self.test_id)

    async def _retriever(self, test: RecallTest) -> RobotRetriever:
        async with self.ctx.sessionmaker() as session:
            if test.robot_id is not None:
                robot = await session.get(Robot, test.robot_id)
                if robot is None:
                    raise NotFound(f"robot {test.robot_id} was deleted")
                return await robot_retriever(self.ctx, await robot_spec(self.ctx, session, robot))
            specs = []
            for knowledge_id in test.knowledge_ids:
                knowledge = await session.get(Knowledge, knowledge_id)
                if knowledge is None:
                    raise NotFound(f"knowledge base {knowledge_id} was deleted")
                specs.append(await spec_for(self.ctx, session, knowledge))
        # As the knowledge bases' retrieval test: each leg looks at least 20 deep.
        retrieval = RetrievalSpec(top_k=test.top_k, candidate_k=max(20, test.top_k))
        return await retriever_for(self.ctx, retrieval, specs)

    async def _finish(self, status: RecallTestStatus, **values: Any) -> None:
        async with self.ctx.sessionmaker() as session:
            await session.exec(
                update(RecallTest)
                .where(col(RecallTest.id) == self.test_id)
                .values(status=status, **values)
            )
            await session.commit()


def _score(
    results: list[tuple[dict[str, Any], list[int], float]], k: int
) -> tuple[list[RecallQueryResult], RecallMetrics]:
    """Per-query rows and the means, with ranx (blocking: runs in a thread)."""
    recall, mrr, ndcg = metric_names(k)
    expected = {
        str(n): dict.fromkeys(map(str, q["expected_document_ids"]), 1)
        for n, (q, _, _) in enumerate(results)
    }
    rankings = {str(n): [str(i) for i in ranking] for n, (_, ranking, _) in enumerate(results)}
    evaluation = evaluate(expected, rankings, [recall, mrr, ndcg])
    rows = []
    for number, (query, ranking, latency) in enumerate(results):
        values = evaluation.per_query.get(str(number), {})
        rank_of = {document_id: rank for rank, document_id in enumerate(ranking, start=1)}
        rows.append(
            RecallQueryResult(
                query=query["query"],
                expected_document_ids=query["expected_document_ids"],
                retrieved_document_ids=ranking,
                hits=[
                    RecallHit(document_id=i, rank=rank_of.get(i))
                    for i in query["expected_document_ids"]
                ],
                recall=values.get(recall, 0.0),
                reciprocal_rank=values.get(mrr, 0.0),
                ndcg=values.get(ndcg, 0.0),
                latency_ms=round(latency, 2),
            )
        )
    latencies = [latency for _, _, latency in results]
    metrics = RecallMetrics(
        k=k,
        recall_at_k=evaluation.means[recall],
        mrr=evaluation.means[mrr],
        ndcg_at_k=evaluation.means[ndcg],
        queries=len(results),
        mean_latency_ms=round(sum(latencies) / len(latencies), 2) if latencies else 0.0,
        library=ranx_version(),
    )
    return rows, metrics
