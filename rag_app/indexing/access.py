"""Open the index of a knowledge base from its entities (async callers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from sqlmodel.ext.asyncio.session import AsyncSession

from indexes.specs import KnowledgeSpec
from rag_app.db.models import Knowledge, Llm
from rag_app.domain.models.service import resolve_api_key
from rag_app.errors import NotFound
from rag_app.indexing.specs import knowledge_spec, model_spec

if TYPE_CHECKING:
    from indexes.knowledge_index import KnowledgeIndex
    from rag_app.context import AppContext


async def spec_for(ctx: AppContext, session: AsyncSession, knowledge: Knowledge) -> KnowledgeSpec:
    llm = await session.get(Llm, knowledge.embed_llm_id)
    if llm is None:  # the foreign key forbids it; a clear error all the same
        raise NotFound(f"the embedding model of knowledge base {knowledge.id} is missing")
    api_key = await resolve_api_key(session, ctx.secret_box, llm.id or 0)
    return knowledge_spec(knowledge, model_spec(llm, api_key))


def open_index_sync(ctx: AppContext, spec: KnowledgeSpec) -> KnowledgeIndex:
    from indexes.models import embedding_dimension

    dimension = spec.embedding.dimension or embedding_dimension(spec.embedding)
    return ctx.index_registry.get(spec, dimension)


def knowledge_prefix(knowledge_id: int) -> str:
    """Where a knowledge base's originals live in the object store."""
    return f"kb/{knowledge_id}/"


async def purge_index(ctx: AppContext, session: AsyncSession, knowledge: Knowledge) -> None:
    """Remove the knowledge base's collection, keyword index and files (blocking work in a
    thread). Nothing to do when it was never created."""
    spec = await spec_for(ctx, session, knowledge)
    await anyio.to_thread.run_sync(drop_index_sync, ctx, spec)


def drop_index_sync(ctx: AppContext, spec: KnowledgeSpec) -> None:
    """Drop the stores of ``spec``'s knowledge base and forget its open index (blocking)."""
    open_index_sync(ctx, spec).drop()
    ctx.index_registry.forget(spec.knowledge_id)


async def open_index(
    ctx: AppContext, session: AsyncSession, knowledge: Knowledge
) -> KnowledgeIndex:
    spec = await spec_for(ctx, session, knowledge)
    return await anyio.to_thread.run_sync(open_index_sync, ctx, spec)
