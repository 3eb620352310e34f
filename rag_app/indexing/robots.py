"""A robot's retrieval and chat components, assembled from its entities.

Heavy parts are shared per process (open indexes in IndexRegistry, loaded embedding models in
EmbeddingRegistry); what is built here per request is cheap. Every build starts from the rows
as they are now, so a change to the robot, its models, keys or knowledge bases takes effect on
the next request without any cache to invalidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio
from sqlmodel.ext.asyncio.session import AsyncSession

from indexes.retrieval import KnowledgeSource, RobotRetriever, build_retriever
from indexes.specs import KnowledgeSpec, ModelSpec, RetrievalSpec, RobotSpec
from rag_app.db.models import Knowledge, Llm, Robot
from rag_app.domain.models.service import resolve_api_key
from rag_app.domain.robots.service import RobotService
from rag_app.indexing.access import open_index_sync, spec_for
from rag_app.indexing.specs import model_spec

if TYPE_CHECKING:
    from rag_app.context import AppContext


async def _model(ctx: AppContext, session: AsyncSession, llm_id: int | None) -> ModelSpec | None:
    if llm_id is None:
        return None
    llm = await session.get(Llm, llm_id)
    if llm is None or llm.status != 1:
        return None
    return model_spec(llm, await resolve_api_key(session, ctx.secret_box, llm_id))


def retrieval_spec(robot: Robot) -> RetrievalSpec:
    config = robot.retrieval_config or {}
    return RetrievalSpec(
        **config, top_k=robot.top_k, similarity_threshold=robot.similarity_threshold
    )


async def robot_spec(ctx: AppContext, session: AsyncSession, robot: Robot) -> RobotSpec:
    knowledge = await RobotService(session).knowledge_bases(robot.id or 0)
    return RobotSpec(
        robot_id=robot.id,
        name=robot.name,
        knowledge=tuple([await spec_for(ctx, session, kb) for kb in knowledge]),
        retrieval=retrieval_spec(robot),
        chat_model=await _model(ctx, session, robot.chat_llm_id),
        rerank_model=(
            await _model(ctx, session, robot.rerank_llm_id) if robot.enable_rerank else None
        ),
        system_prompt=robot.system_prompt,
        temperature=robot.temperature,
        max_tokens=robot.max_tokens,
    )


def _sources(ctx: AppContext, specs: Sequence[KnowledgeSpec]) -> list[KnowledgeSource]:
    sources = []
    for spec in specs:
        embed_model, _ = ctx.embeddings.get(spec.embedding)
        sources.append(KnowledgeSource(spec, open_index_sync(ctx, spec), embed_model))
    return sources


async def retriever_for(
    ctx: AppContext,
    retrieval: RetrievalSpec,
    knowledge: Sequence[KnowledgeSpec],
    rerank_model: ModelSpec | None = None,
) -> RobotRetriever:
    from indexes.rerank import build_reranker

    sources = await anyio.to_thread.run_sync(_sources, ctx, knowledge)
    # A local cross-encoder loads for seconds the first time: off the event loop.
    reranker = (
        await anyio.to_thread.run_sync(build_reranker, rerank_model, retrieval.top_k)
        if rerank_model
        else None
    )
    return build_retriever(retrieval, sources, reranker=reranker)


async def robot_retriever(ctx: AppContext, spec: RobotSpec) -> RobotRetriever:
    return await retriever_for(ctx, spec.retrieval, spec.knowledge, spec.rerank_model)


async def knowledge_retriever(
    ctx: AppContext, session: AsyncSession, knowledge: Knowledge, retrieval: RetrievalSpec
) -> RobotRetriever:
    return await retriever_for(ctx, retrieval, [await spec_for(ctx, session, knowledge)])
