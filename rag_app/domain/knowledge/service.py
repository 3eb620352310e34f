"""Knowledge bases: ownership, chunking rules, the embedding model, derived counts."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import Any

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.api.pagination import Page, PageParams
from rag_app.db.models import Document, Knowledge, Llm, User
from rag_app.db.models.llm import ModelType
from rag_app.domain.common import ensure_owner, paginate
from rag_app.domain.knowledge.schemas import KnowledgeCreate, KnowledgeRead, KnowledgeUpdate
from rag_app.errors import Conflict, NotFound, ValidationFailed

_NULLABLE = frozenset({"description", "avatar"})


async def require_model(
    session: AsyncSession, llm_id: int, model_type: ModelType, field: str
) -> Llm:
    """The model a knowledge base or robot refers to: it must exist, have the right type and be
    enabled. Errors name the request field, since the model id came from the request body."""
    llm = await session.get(Llm, llm_id)
    if llm is None:
        raise ValidationFailed(f"{field}: model {llm_id} does not exist", field=field)
    if llm.model_type != model_type:
        raise ValidationFailed(
            f"{field}: model {llm_id} ('{llm.name}') is a {llm.model_type} model, "
            f"this needs a {model_type} model",
            field=field,
        )
    if llm.status != 1:
        raise ValidationFailed(
            f"{field}: model {llm_id} ('{llm.name}') is disabled; enable it or choose another",
            field=field,
        )
    return llm


def reject_nulls(changes: dict[str, Any], nullable: Collection[str]) -> None:
    """PATCH bodies may send null only to clear an optional field, never a required one."""
    for field, value in changes.items():
        if value is None and field not in nullable:
            raise ValidationFailed(f"{field} cannot be null", field=field)


def like_pattern(search: str) -> str:
    # Escape LIKE wildcards so that a search for "50%" or "a_b" means exactly that.
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def new_collection_name() -> str:
    # Milvus collection names: letters, digits and underscores, starting with a letter.
    return f"kb_{uuid.uuid4().hex}"


def check_chunking(chunk_size: int, chunk_overlap: int, field: str = "chunk_overlap") -> None:
    if chunk_overlap >= chunk_size:
        raise ValidationFailed(
            f"chunk_overlap ({chunk_overlap}) must be smaller than chunk_size ({chunk_size})",
            field=field,
        )


class KnowledgeService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, user: User, data: KnowledgeCreate) -> Knowledge:
        check_chunking(data.chunk_size, data.chunk_overlap)
        await require_model(self.session, data.embed_llm_id, ModelType.embedding, "embed_llm_id")
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
        ensure_owner(knowledge, user, f"knowledge base {knowledge_id}")
        assert knowledge is not None  # ensure_owner raised otherwise
        return knowledge

    async def list(
        self,
        user: User,
        params: PageParams,
        search: str | None = None,
        user_id: int | None = None,
    ) -> Page[KnowledgeRead]:
        """Newest first. Users see their own; admins see everyone's, or one user's by user_id."""
        statement = select(Knowledge).order_by(col(Knowledge.id).desc())
        if not user.is_admin:
            statement = statement.where(col(Knowledge.user_id) == user.id)
        if user_id is not None:
            statement = statement.where(col(Knowledge.user_id) == user_id)
        if search:
            statement = statement.where(col(Knowledge.name).like(like_pattern(search), escape="\\"))
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
        for field, value in changes.items():
            setattr(knowledge, field, value)
        self.session.add(knowledge)
        await self.session.commit()
        return knowledge

    async def _check_embedding_change(self, knowledge: Knowledge, embed_llm_id: int) -> None:
        await require_model(self.session, embed_llm_id, ModelType.embedding, "embed_llm_id")
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
        await self.session.delete(knowledge)
        await self.session.commit()

    async def recount(self, knowledge_id: int) -> Knowledge:
        """Set document_count and total_chunks from rag_document. One UPDATE with subqueries,
        so concurrent recounts cannot interleave a read and a write."""
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
        statement = (
            update(Knowledge)
            .where(col(Knowledge.id) == knowledge_id)
            .values(document_count=documents, total_chunks=chunks)
        )
        await self.session.exec(statement)
        await self.session.commit()
        knowledge = await self.session.get(Knowledge, knowledge_id, populate_existing=True)
        if knowledge is None:
            raise NotFound(f"knowledge base {knowledge_id} not found")
        return knowledge
