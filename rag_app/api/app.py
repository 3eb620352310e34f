"""The Litestar application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

import anyio
from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin

from rag_app.api.dependencies import DEPENDENCIES
from rag_app.api.health import HealthController
from rag_app.api.problems import EXCEPTION_HANDLERS
from rag_app.api.security import build_jwt_auth
from rag_app.context import AppContext
from rag_app.domain.auth.controller import AuthController
from rag_app.domain.chat.controller import ChatController
from rag_app.domain.documents.controller import DocumentController
from rag_app.domain.knowledge.controller import KnowledgeController
from rag_app.domain.models.controller import ApiKeyController, LlmController
from rag_app.domain.openai_compat.controller import build_openai_router
from rag_app.domain.recall.controller import RUNNER_STATE_KEY, RecallTestController
from rag_app.domain.recall.runner import RecallRunner
from rag_app.domain.retrieval.controller import RetrievalTestController
from rag_app.domain.robots.controller import RobotController, RobotTokenController
from rag_app.domain.sessions.controller import SessionController
from rag_app.domain.users.controller import UsersController
from rag_app.settings import Settings

API_PREFIX = "/api/v1"
DOCS_PATH = "/docs"


def create_app(settings: Settings | None = None, ctx: AppContext | None = None) -> Litestar:
    settings = settings or (ctx.settings if ctx else Settings())
    logging.basicConfig(level=settings.log_level)
    ctx = ctx or AppContext.create(settings)
    recall_runner = RecallRunner(ctx)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None, None]:
        if settings.database.auto_migrate:
            await anyio.to_thread.run_sync(ctx.migrate)
        await ctx.start_jobs()
        try:
            yield
        finally:
            await recall_runner.stop()
            await ctx.close()

    api = Router(
        path=API_PREFIX,
        route_handlers=[
            AuthController,
            UsersController,
            LlmController,
            ApiKeyController,
            KnowledgeController,
            DocumentController,
            RobotController,
            RobotTokenController,
            RetrievalTestController,
            RecallTestController,
            SessionController,
            ChatController,
        ],
    )
    cors = (
        CORSConfig(allow_origins=settings.server.cors_origins)
        if settings.server.cors_origins
        else None
    )
    return Litestar(
        route_handlers=[HealthController, api, build_openai_router()],
        dependencies=DEPENDENCIES,
        exception_handlers=EXCEPTION_HANDLERS,
        on_app_init=[build_jwt_auth(ctx).on_app_init],
        lifespan=[lifespan],
        cors_config=cors,
        state=State({"ctx": ctx, RUNNER_STATE_KEY: recall_runner}),
        openapi_config=OpenAPIConfig(
            title="rag_app",
            version="0.1.0",
            description="Knowledge bases, robots and chat. Sign in at POST /api/v1/auth/login "
            "and send the access token as 'Authorization: Bearer <token>'.",
            path=DOCS_PATH,
            render_plugins=[SwaggerRenderPlugin(path="/"), ScalarRenderPlugin(path="/scalar")],
        ),
        debug=False,
    )
