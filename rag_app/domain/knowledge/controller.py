from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, QueryParameter
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.api.pagination import Page, PageParams
from rag_app.api.params import IdPath, id_query
from rag_app.context import AppContext
from rag_app.db.models import User
from rag_app.domain.knowledge.schemas import KnowledgeCreate, KnowledgeRead, KnowledgeUpdate
from rag_app.domain.knowledge.service import KnowledgeService


def provide_knowledge_service(
    db_session: NamedDependency[AsyncSession], ctx: NamedDependency[AppContext]
) -> KnowledgeService:
    return KnowledgeService(db_session, ctx)


class KnowledgeController(Controller):
    """Knowledge bases; each user manages their own, administrators everyone's."""

    path = "/knowledge"
    tags = ["knowledge"]
    dependencies = {"knowledge_bases": Provide(provide_knowledge_service, sync_to_thread=False)}

    @post("/", summary="Create a knowledge base")
    async def create_knowledge(
        self,
        data: JSONBody[KnowledgeCreate],
        knowledge_bases: NamedDependency[KnowledgeService],
        current_user: NamedDependency[User],
    ) -> KnowledgeRead:
        return KnowledgeRead.model_validate(await knowledge_bases.create(current_user, data))

    @get("/", summary="List knowledge bases (your own; administrators see all)")
    async def list_knowledge(
        self,
        knowledge_bases: NamedDependency[KnowledgeService],
        current_user: NamedDependency[User],
        page_params: NamedDependency[PageParams],
        search: Annotated[str | None, QueryParameter(description="Part of the name")] = None,
        user_id: Annotated[
            int | None, id_query("Only this owner's (useful to administrators)")
        ] = None,
    ) -> Page[KnowledgeRead]:
        return await knowledge_bases.list(current_user, page_params, search=search, user_id=user_id)

    @get("/{knowledge_id:int}", summary="One knowledge base")
    async def get_knowledge(
        self,
        knowledge_id: IdPath,
        knowledge_bases: NamedDependency[KnowledgeService],
        current_user: NamedDependency[User],
    ) -> KnowledgeRead:
        return KnowledgeRead.model_validate(await knowledge_bases.get(current_user, knowledge_id))

    @patch("/{knowledge_id:int}", summary="Change settings (embedding model only while empty)")
    async def update_knowledge(
        self,
        knowledge_id: IdPath,
        data: JSONBody[KnowledgeUpdate],
        knowledge_bases: NamedDependency[KnowledgeService],
        current_user: NamedDependency[User],
    ) -> KnowledgeRead:
        knowledge = await knowledge_bases.update(current_user, knowledge_id, data)
        return KnowledgeRead.model_validate(knowledge)

    @delete("/{knowledge_id:int}", summary="Delete a knowledge base with its documents")
    async def delete_knowledge(
        self,
        knowledge_id: IdPath,
        knowledge_bases: NamedDependency[KnowledgeService],
        current_user: NamedDependency[User],
    ) -> None:
        await knowledge_bases.delete(current_user, knowledge_id)
