"""Batch recall tests: a query set with expected documents, run in the background, scored with
recall@k, MRR and nDCG@k."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.api.pagination import Page, PageParams
from rag_app.api.params import IdPath
from rag_app.context import AppContext
from rag_app.db.models import User
from rag_app.domain.recall.runner import RecallRunner
from rag_app.domain.recall.schemas import RecallTestCreate, RecallTestRead, RecallTestSummary
from rag_app.domain.recall.service import RecallTestService

RUNNER_STATE_KEY = "recall_runner"


def provide_recall_runner(state: State) -> RecallRunner:
    runner: RecallRunner = state[RUNNER_STATE_KEY]
    return runner


def provide_recall_service(
    db_session: NamedDependency[AsyncSession], ctx: NamedDependency[AppContext]
) -> RecallTestService:
    return RecallTestService(db_session, ctx)


class RecallTestController(Controller):
    path = "/recall/tests"
    tags = ["retrieval"]
    dependencies = {
        "recall_runner": Provide(provide_recall_runner, sync_to_thread=False),
        "recall_tests": Provide(provide_recall_service, sync_to_thread=False),
    }

    @post(
        "/",
        status_code=HTTP_202_ACCEPTED,
        summary="Start a batch recall test over your knowledge bases or robot",
        description="Runs in the background: poll GET /recall/tests/{id} for progress, "
        "per-query hits and the metrics (recall@k, MRR, nDCG@k, computed with ranx).",
    )
    async def create_test(
        self,
        data: JSONBody[RecallTestCreate],
        recall_tests: NamedDependency[RecallTestService],
        recall_runner: NamedDependency[RecallRunner],
        current_user: NamedDependency[User],
    ) -> RecallTestRead:
        test = await recall_tests.create(current_user, data)
        recall_runner.start(test.id or 0)
        return RecallTestRead.of(test)

    @get("/", summary="Your recall tests, newest first (without per-query results)")
    async def list_tests(
        self,
        recall_tests: NamedDependency[RecallTestService],
        current_user: NamedDependency[User],
        page_params: NamedDependency[PageParams],
    ) -> Page[RecallTestSummary]:
        return await recall_tests.list(current_user, page_params)

    @get("/{test_id:int}", summary="A recall test: status, progress, per-query hits, metrics")
    async def get_test(
        self,
        test_id: IdPath,
        recall_tests: NamedDependency[RecallTestService],
        current_user: NamedDependency[User],
    ) -> RecallTestRead:
        return RecallTestRead.of(await recall_tests.get(current_user, test_id))
