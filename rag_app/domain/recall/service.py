"""Batch recall tests: who may run what (checked before anything runs), the stored tests, and
tests whose runner went away."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.api.pagination import Page, PageParams
from rag_app.db.models import Document, RecallTest, User
from rag_app.db.models.recall_test import RecallTestStatus
from rag_app.db.types import utcnow
from rag_app.domain.common import ensure_owner, invalid, owned_listing, paginate
from rag_app.domain.knowledge.service import KnowledgeService
from rag_app.domain.recall.schemas import RecallTestCreate, RecallTestSummary
from rag_app.domain.robots.service import RobotService

if TYPE_CHECKING:
    from rag_app.context import AppContext

ACTIVE = (RecallTestStatus.queued, RecallTestStatus.running)
INTERRUPTED = "the test was interrupted (the server running it stopped); start it again"
# Ids per IN (...) clause when checking the expected documents.
_ID_BATCH = 1000


class RecallTestService:
    def __init__(self, session: AsyncSession, ctx: AppContext) -> None:
        self.session = session
        self.ctx = ctx

    async def create(self, user: User, data: RecallTestCreate) -> RecallTest:
        """Check the request completely (ownership of every knowledge base and robot named, the
        expected documents), then store the test as queued. Running it is the caller's part."""
        if (data.knowledge_ids is None) == (data.robot_id is None):
            raise invalid("knowledge_ids", "give either knowledge_ids or robot_id (exactly one)")
        mode = data.mode
        if data.robot_id is not None:
            robots = RobotService(self.session)
            robot = await robots.get(user, data.robot_id)
            knowledge_ids = await robots.knowledge_ids(data.robot_id)
            if not knowledge_ids:
                raise invalid("robot_id", f"robot {data.robot_id} has no knowledge bases to search")
            mode = mode or (robot.retrieval_config or {}).get("mode") or "hybrid"
        else:
            knowledge_ids = list(data.knowledge_ids or [])
            service = KnowledgeService(self.session)
            for knowledge_id in knowledge_ids:
                await service.get(user, knowledge_id)
        await self._check_expected(data, knowledge_ids)
        test = RecallTest(
            user_id=user.id or 0,
            robot_id=data.robot_id,
            knowledge_ids=sorted(knowledge_ids),
            top_k=data.top_k,
            mode=mode or "hybrid",
            status=RecallTestStatus.queued,
            progress=0,
            total_queries=len(data.queries),
            queries=[query.model_dump() for query in data.queries],
        )
        self.session.add(test)
        await self.session.commit()
        await self.session.refresh(test)
        return test

    async def _check_expected(self, data: RecallTestCreate, knowledge_ids: Sequence[int]) -> None:
        """Every expected document is one of the searched knowledge bases': another id could
        never be found, and the test would only measure the mistake."""
        wanted = sorted({i for query in data.queries for i in query.expected_document_ids})
        known: set[int] = set()
        for start in range(0, len(wanted), _ID_BATCH):
            rows = await self.session.exec(
                select(Document.id).where(
                    col(Document.id).in_(wanted[start : start + _ID_BATCH]),
                    col(Document.knowledge_id).in_(knowledge_ids),
                )
            )
            known.update(i for i in rows.all() if i is not None)
        for number, query in enumerate(data.queries):
            unknown = [i for i in query.expected_document_ids if i not in known]
            if unknown:
                listed = ", ".join(map(str, unknown))
                raise invalid(
                    f"queries.{number}.expected_document_ids",
                    f"document(s) {listed} are not in the searched knowledge bases",
                )

    async def get(self, user: User, test_id: int) -> RecallTest:
        test = ensure_owner(
            await self.session.get(RecallTest, test_id), user, f"recall test {test_id}"
        )
        if test.status in ACTIVE and test.updated_at < self._cutoff():
            await self._expire([test.id or 0])
            await self.session.refresh(test)
        return test

    async def list(self, user: User, params: PageParams) -> Page[RecallTestSummary]:
        """The user's tests (an administrator's: everyone's), newest first."""
        statement = owned_listing(RecallTest, user)
        stale = await self.session.exec(
            statement.where(
                col(RecallTest.status).in_(ACTIVE), col(RecallTest.updated_at) < self._cutoff()
            )
        )
        await self._expire([test.id for test in stale.all() if test.id is not None])
        return await paginate(self.session, statement, params, RecallTestSummary.of)

    def _cutoff(self) -> datetime:
        """A running test reports progress every second (a queued one at least as often): one
        silent for ``jobs.stale_after_seconds`` lost its process. It is marked failed, so a
        client polling it gets an answer rather than 'running' forever."""
        return utcnow() - timedelta(seconds=self.ctx.settings.jobs.stale_after_seconds)

    async def _expire(self, test_ids: Sequence[int]) -> None:
        if not test_ids:
            return
        await self.session.exec(
            update(RecallTest)
            .where(
                col(RecallTest.id).in_(test_ids),
                col(RecallTest.status).in_(ACTIVE),
                col(RecallTest.updated_at) < self._cutoff(),
            )
            .values(status=RecallTestStatus.failed, error_msg=INTERRUPTED)
        )
        await self.session.commit()
