"""Evaluating a knowledge base on a BEIR query set, per retrieval mode: each query is searched
as a robot would, documents are ranked by their best chunk, and ranx scores the rankings."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlmodel import col, select

from indexes.retrieval import MODES, RobotRetriever
from indexes.specs import KnowledgeSpec, ModelSpec, RetrievalSpec
from rag_app.db.models import Robot, RobotKnowledge
from rag_app.domain.recall.beir import BeirDataset
from rag_app.domain.recall.corpus import CorpusIndex
from rag_app.domain.recall.metrics import evaluate, first_occurrences
from rag_app.errors import NotFound
from rag_app.indexing.access import spec_for
from rag_app.indexing.robots import retriever_for, robot_spec

if TYPE_CHECKING:
    from rag_app.context import AppContext

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
LABELS = {"ndcg@10": "nDCG@10", "recall@10": "Recall@10", "recall@100": "Recall@100",
          "mrr@10": "MRR@10"}  # fmt: skip
DEPTH_DOCUMENTS = 100
# Chunks retrieved per query (and candidates per leg): enough for 100 distinct documents when
# documents have a few chunks each.
DEPTH_CHUNKS = 300
RERANKED = "hybrid+rerank"
QueryProgress = Callable[[str], None]  # called with the mode after each query


@dataclass
class ModeResult:
    mode: str
    metrics: dict[str, float]
    mean_latency_ms: float


@dataclass
class EvalSettings:
    """Where the retrieval settings and the reranker come from."""

    retrieval: RetrievalSpec
    rerank_model: ModelSpec | None
    source: str  # a sentence for the report
    rerank_note: str | None = None  # why there is no reranked row


@dataclass
class EvalReport:
    dataset: str
    queries: int
    documents: int
    knowledge_id: int
    settings: EvalSettings
    results: list[ModeResult] = field(default_factory=list)
    missing_relevant: int = 0  # relevant corpus ids the knowledge base does not hold
    knowledge_note: str = ""


async def eval_settings(ctx: AppContext, knowledge_id: int, robot_id: int | None) -> EvalSettings:
    """A given robot's settings and reranker; else those of a robot bound to the knowledge base
    with rerank enabled; else the defaults, without a reranker."""
    async with ctx.sessionmaker() as session:
        robot: Robot | None = None
        if robot_id is not None:
            robot = await session.get(Robot, robot_id)
            if robot is None:
                raise NotFound(f"robot {robot_id} not found")
        else:
            statement = (
                select(Robot)
                .join(RobotKnowledge, col(RobotKnowledge.robot_id) == col(Robot.id))
                .where(
                    col(RobotKnowledge.knowledge_id) == knowledge_id,
                    col(Robot.enable_rerank).is_(True),
                    col(Robot.rerank_llm_id).is_not(None),
                )
                .order_by(col(Robot.id))
            )
            robot = (await session.exec(statement)).first()
        if robot is None:
            return EvalSettings(
                RetrievalSpec(),
                None,
                "default retrieval settings",
                f"no reranker: knowledge base {knowledge_id} is bound to no robot with rerank "
                "enabled, and a bare knowledge base has none (pass --robot ID to use one's)",
            )
        spec = await robot_spec(ctx, session, robot)
    note = None
    if spec.rerank_model is None:
        note = f"no reranker: robot {robot.id} has rerank off or its rerank model disabled"
    return EvalSettings(
        spec.retrieval, spec.rerank_model, f"settings of robot {robot.id} '{robot.name}'", note
    )


async def evaluate_knowledge(
    ctx: AppContext,
    corpus: CorpusIndex,
    dataset: BeirDataset,
    settings: EvalSettings,
    progress: QueryProgress,
) -> EvalReport:
    async with ctx.sessionmaker() as session:
        spec = await spec_for(ctx, session, corpus.knowledge)
    held = set(corpus.corpus_ids.values())
    report = EvalReport(
        dataset=str(dataset.path),
        queries=len(dataset.queries),
        documents=len(corpus.corpus_ids),
        knowledge_id=corpus.knowledge.id or 0,
        settings=settings,
        missing_relevant=len(dataset.relevant_ids - held),
        knowledge_note=knowledge_spec_note(spec),
    )
    runs: list[tuple[str, ModelSpec | None]] = [(mode, None) for mode in MODES]
    if settings.rerank_model is not None:
        runs.append((RERANKED, settings.rerank_model))
    for label, rerank_model in runs:
        mode = "hybrid" if label == RERANKED else label
        retrieval = settings.retrieval.model_copy(
            update={"mode": mode, "top_k": DEPTH_CHUNKS, "candidate_k": DEPTH_CHUNKS}
        )
        retriever = await retriever_for(ctx, retrieval, [spec], rerank_model)
        rankings, latencies = await asyncio.to_thread(
            _search_all, retriever, dataset, corpus, functools.partial(progress, label)
        )
        evaluation = await asyncio.to_thread(evaluate, dataset.qrels, rankings, METRICS)
        report.results.append(
            ModeResult(label, evaluation.means, sum(latencies) / max(len(latencies), 1))
        )
    return report


def _search_all(
    retriever: RobotRetriever,
    dataset: BeirDataset,
    corpus: CorpusIndex,
    after_each: Callable[[], None],
) -> tuple[dict[str, list[str]], list[float]]:
    rankings: dict[str, list[str]] = {}
    latencies: list[float] = []
    retriever.search(next(iter(dataset.queries.values())))  # warm-up: not timed
    for query_id, text in dataset.queries.items():
        started = time.perf_counter()
        result = retriever.search(text)
        latencies.append((time.perf_counter() - started) * 1000)
        ids = (
            corpus.corpus_ids.get(chunk.document_id) if chunk.document_id is not None else None
            for chunk in result.chunks
        )
        rankings[query_id] = first_occurrences(ids, DEPTH_DOCUMENTS)
        after_each()
    return rankings, latencies


def knowledge_spec_note(spec: KnowledgeSpec) -> str:
    return (
        f"chunks of {spec.chunk_size} tokens (overlap {spec.chunk_overlap}), embedding "
        f"{spec.embedding.model_name}, keyword index {spec.keyword_backend}"
    )


def describe_retrieval(retrieval: RetrievalSpec) -> str:
    fusion = (
        f"rrf k={retrieval.rrf_k}"
        if retrieval.fusion == "rrf"
        else f"weighted {retrieval.vector_weight}/{retrieval.keyword_weight}"
    )
    return f"fusion {fusion}, similarity threshold {retrieval.similarity_threshold}"


def as_rows(results: Sequence[ModeResult]) -> list[list[str]]:
    return [
        [r.mode, *(f"{r.metrics[m]:.4f}" for m in METRICS), f"{r.mean_latency_ms:.1f}"]
        for r in results
    ]
