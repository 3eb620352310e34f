"""Retrieval tests: the robot's (or a knowledge base's) retrieval without any LLM, with every
leg's rank and score, the fused and rerank scores, and per-stage timings."""

from __future__ import annotations

from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK
from sqlmodel.ext.asyncio.session import AsyncSession

from indexes.specs import RetrievalSpec
from rag_app.api.params import IdPath
from rag_app.context import AppContext
from rag_app.db.models import User
from rag_app.domain.knowledge.service import KnowledgeService
from rag_app.domain.retrieval.schemas import RetrievalTestRead, RetrievalTestRequest
from rag_app.domain.robots.service import RobotService
from rag_app.indexing.robots import knowledge_retriever, robot_retriever, robot_spec


class RetrievalTestController(Controller):
    path = "/"
    tags = ["retrieval"]

    @post(
        "/robots/{robot_id:int}/retrieval-test",
        status_code=HTTP_200_OK,
        summary="Search as the robot would, without generating an answer",
    )
    async def robot_test(
        self,
        robot_id: IdPath,
        data: JSONBody[RetrievalTestRequest],
        db_session: NamedDependency[AsyncSession],
        ctx: NamedDependency[AppContext],
        current_user: NamedDependency[User],
    ) -> RetrievalTestRead:
        robot = await RobotService(db_session).get(current_user, robot_id)
        retriever = await robot_retriever(ctx, await robot_spec(ctx, db_session, robot))
        result = await retriever.asearch(data.query, top_k=data.top_k, mode=data.mode)
        return RetrievalTestRead.of(result)

    @post(
        "/knowledge/{knowledge_id:int}/retrieval-test",
        status_code=HTTP_200_OK,
        summary="Search one knowledge base (vector, keyword or hybrid)",
    )
    async def knowledge_test(
        self,
        knowledge_id: IdPath,
        data: JSONBody[RetrievalTestRequest],
        db_session: NamedDependency[AsyncSession],
        ctx: NamedDependency[AppContext],
        current_user: NamedDependency[User],
    ) -> RetrievalTestRead:
        knowledge = await KnowledgeService(db_session, ctx).get(current_user, knowledge_id)
        top_k = data.top_k or 5
        retrieval = RetrievalSpec(top_k=top_k, candidate_k=max(20, top_k))
        retriever = await knowledge_retriever(ctx, db_session, knowledge, retrieval)
        return RetrievalTestRead.of(await retriever.asearch(data.query, mode=data.mode))
