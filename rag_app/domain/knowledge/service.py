"""Knowledge bases: ownership, chunking rules, the embedding model, derived counts."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import anyio
from sqlalchemy import Update, func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from indexes.errors import ModelError
from indexes.models import embedding_dimension
from rag_app.api.pagination import Page, PageParams
from rag_app.db.models import Document, Knowledge, Llm, User
from rag_app.db.models.llm import ModelType
from rag_app.domain.common import (
    ensure_owner,
    invalid,
    like_pattern,
    owned_listing,
    paginate,
    reject_nulls,
)
from rag_app.domain.knowledge.schemas import KnowledgeCreate, KnowledgeRead, KnowledgeUpdate
from rag_app.domain.models.service import require_model, resolve_api_key
from rag_app.errors import Conflict, NotFound, UpstreamError, ValidationFailed
from rag_app.indexing.access import knowledge_prefix, purge_index
from rag_app.indexing.specs import model_spec

if TYPE_CHECKING:
    from rag_app.context import AppContext

# Re-exported for rag_app.domain.documents, which imports it from here.
__all__ = ["KnowledgeService", "check_chunking", "like_pattern", "new_collection_name"]

_NULLABLE = frozenset({"description", "avatar"})


def new_collection_name() -> str:
    # Milvus collection names: letters, digits and underscores, starting with a letter.
    return f"kb_{uuid.uuid4().hex}"


def check_chunking(chunk_size: int, chunk_overlap: int, field: str = "chunk_overlap") -> None:
    if chunk_overlap >= chunk_size:
        raise invalid(
            field, f"chunk_overlap ({chunk_overlap}) must be smaller than chunk_size ({chunk_size})"
        )


class KnowledgeService:
    """``ctx`` is needed by what touches the indexes (create, embedding changes, delete); counts
    and reads work from the session alone."""

    def __init__(self, session: AsyncSession, ctx: AppContext | None = None) -> None:
        self.session = session
        self._ctx = ctx

    @property
    def ctx(self) -> AppContext:
        if self._ctx is None:
            raise RuntimeError("this KnowledgeService operation needs the AppContext")
        return self._ctx

    async def create(self, user: User, data: KnowledgeCreate) -> Knowledge:
        check_chunking(data.chunk_size, data.chunk_overlap)
        llm = await require_model(
            self.session, data.embed_llm_id, ModelType.embedding, "embed_llm_id"
        )
        await self._check_dimension(llm)
        knowledge = Knowledge(
            **data.model_dump(mode="json"),
            user_id=user.id or 0,
            vector_collection_name=new_collection_name(),
        )
        self.session.add(knowledge)
        await self.session.commit()
        return knowledge

    async def get(self, user: User, knowledge_id: int) -> Knowledge:
        """The knowledge base if the user owns it or is an admin; NotFound otherwise."""
        knowledge = await self.session.get(Knowledge, knowledge_id)
        return ensure_owner(knowledge, user, f"knowledge base {knowledge_id}")

    async def list(
        self,
        user: User,
        params: PageParams,
        search: str | None = None,
        user_id: int | None = None,
    ) -> Page[KnowledgeRead]:
        statement = owned_listing(Knowledge, user, owner_id=user_id, search=search)
        return await paginate(self.session, statement, params, KnowledgeRead.model_validate)

    async def update(self, user: User, knowledge_id: int, data: KnowledgeUpdate) -> Knowledge:
        knowledge = await self.get(user, knowledge_id)
        changes = data.model_dump(exclude_unset=True, mode="json")
        reject_nulls(changes, _NULLABLE)
        check_chunking(
            changes.get("chunk_size", knowledge.chunk_size),
            changes.get("chunk_overlap", knowledge.chunk_overlap),
            field="chunk_overlap" if "chunk_overlap" in changes else "chunk_size",
        )
        embed_llm_id = changes.get("embed_llm_id", knowledge.embed_llm_id)
        if embed_llm_id != knowledge.embed_llm_id:
            await self._check_embedding_change(knowledge, embed_llm_id)
            # A new collection for the new model's vectors; the old, empty one goes.
            await purge_index(self.ctx, self.session, knowledge)
            changes["vector_collection_name"] = new_collection_name()
        backend = changes.get("keyword_backend", knowledge.keyword_backend)
        if backend != knowledge.keyword_backend:
            await self._check_backend_change(knowledge)
            await purge_index(self.ctx, self.session, knowledge)
        for field, value in changes.items():
            setattr(knowledge, field, value)
        self.session.add(knowledge)
        await self.session.commit()
        return knowledge

    async def _check_dimension(self, llm: Llm) -> None:
        """The registered dimension must be what the model really produces: the collection
        is created with it, and a wrong one would fail every document later."""
        api_key = await resolve_api_key(self.session, self.ctx.secret_box, llm.id or 0)
        try:
            actual = await anyio.to_thread.run_sync(embedding_dimension, model_spec(llm, api_key))
        except ModelError as exc:
            raise UpstreamError(
                f"embed_llm_id: the embedding model '{llm.name}' could not be used: {exc}"
            ) from exc
        if llm.dimension is not None and actual != llm.dimension:
            raise ValidationFailed(
                f"embed_llm_id: model '{llm.name}' produces {actual}-dimensional vectors but is "
                f"registered with dimension {llm.dimension}; correct the model's dimension",
                field="embed_llm_id",
            )

    async def _check_backend_change(self, knowledge: Knowledge) -> None:
        documents = await self._count_documents(knowledge.id or 0)
        if documents:
            raise Conflict(
                f"knowledge base {knowledge.id} has {documents} document(s) indexed with "
                f"'{knowledge.keyword_backend}'; its keyword backend can change only while it "
                "has no documents",
                field="keyword_backend",
            )

    async def _check_embedding_change(self, knowledge: Knowledge, embed_llm_id: int) -> None:
        llm = await require_model(self.session, embed_llm_id, ModelType.embedding, "embed_llm_id")
        await self._check_dimension(llm)
        # Vectors of two models cannot share a collection: a live count, not the derived one,
        # so a document still being ingested counts too.
        documents = await self._count_documents(knowledge.id or 0)
        if documents:
            raise Conflict(
                f"knowledge base {knowledge.id} has {documents} document(s) embedded with model "
                f"{knowledge.embed_llm_id}; its embedding model can change only while it has "
                "no documents (delete them, or create a new knowledge base)",
                field="embed_llm_id",
            )

    async def _count_documents(self, knowledge_id: int) -> int:
        statement = (
            select(func.count())
            .select_from(Document)
            .where(col(Document.knowledge_id) == knowledge_id)
        )
        return int((await self.session.exec(statement)).one())

    async def delete(self, user: User, knowledge_id: int) -> None:
        """The one place a knowledge base is removed. The database cascades its documents and
        robot links; cleanup of vectors, keyword indexes and stored originals belongs here too."""
        knowledge = await self.get(user, knowledge_id)
        # Stores first: if one is down the request fails (503) and the knowledge base stays,
        # so deleting again later finishes the job instead of leaving orphaned vectors.
        await purge_index(self.ctx, self.session, knowledge)
        await self.ctx.object_store.delete_prefix(knowledge_prefix(knowledge.id or 0))
        await self.session.delete(knowledge)
        await self.session.commit()

    async def recount(self, knowledge_id: int) -> Knowledge:
        """Set document_count and total_chunks from rag_document (``recount_statement``),
        commit, and return the knowledge base as it is now."""
        await self.session.exec(recount_statement(knowledge_id))
        await self.session.commit()
        knowledge = await self.session.get(Knowledge, knowledge_id, populate_existing=True)
        if knowledge is None:
            raise NotFound(f"knowledge base {knowledge_id} not found")
        return knowledge


def recount_statement(knowledge_id: int) -> Update:
    """Set document_count and total_chunks of the knowledge base from rag_document: one
    UPDATE with subqueries, so concurrent recounts cannot interleave a read and a write."""
    documents = (
        select(func.count())
        .select_from(Document)
        .where(col(Document.knowledge_id) == knowledge_id)
        .scalar_subquery()
    )
    chunks = (
        select(func.coalesce(func.sum(col(Document.chunk_count)), 0))
        .where(col(Document.knowledge_id) == knowledge_id)
        .scalar_subquery()
    )
    return (
        update(Knowledge)
        .where(col(Knowledge.id) == knowledge_id)
        .values(document_count=documents, total_chunks=chunks)
    )
