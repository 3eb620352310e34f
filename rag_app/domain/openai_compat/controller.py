"""``/v1/models`` and ``/v1/chat/completions`` for OpenAI clients, answered by the robot of the
bearer token through the same pipeline as POST /api/v1/chat."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, cast

from litestar import Controller, Request, Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, JSONBody
from litestar.response import Stream
from litestar.status_codes import HTTP_200_OK
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.context import AppContext
from rag_app.domain.chat.service import ChatEvent, ChatService, PreparedTurn
from rag_app.domain.openai_compat.errors import OPENAI_EXCEPTION_HANDLERS
from rag_app.domain.openai_compat.schemas import (
    ChatCompletionRequest,
    chunk_object,
    completion_object,
    error_object,
    model_object,
    usage_object,
)
from rag_app.domain.openai_compat.service import OpenAIChatService, RobotAccess, authenticate
from rag_app.errors import UpstreamError

logger = logging.getLogger("rag_app.openai_compat")

OPENAI_PREFIX = "/v1"
_STATE_KEY = "robot_access"
_INCOMPLETE = "the answer could not be completed; the error has been logged"
# Token holders are often third parties (a website, a partner's app): what failed behind the
# robot (a provider's address, a model name, a store) is for the server log, where the chat
# service writes it, not for them.
UPSTREAM_FAILED = (
    "the robot could not answer: its model provider or search backend failed (the details "
    "are in the server log); the question was recorded"
)


async def robot_token_guard(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Authenticate before the body is read, so an unauthenticated caller learns nothing about
    its request but that the key is wrong."""
    ctx: AppContext = connection.app.state.ctx
    async with ctx.sessionmaker() as db:
        access = await authenticate(db, connection.headers.get("authorization"))
    connection.state[_STATE_KEY] = access


def provide_robot_access(request: Request[Any, Any, Any]) -> RobotAccess:
    access: RobotAccess = request.state[_STATE_KEY]
    return access


async def _events(ctx: AppContext, prepared: PreparedTurn) -> AsyncGenerator[ChatEvent, None]:
    # A session of its own: a stream goes on after the request's session is closed.
    async with ctx.sessionmaker() as db:
        stream = cast(AsyncGenerator[ChatEvent, None], ChatService(db, ctx).stream(prepared))
        async with aclosing(stream) as events:
            async for event in events:
                yield event


def _completion_id(event: ChatEvent) -> str:
    # The stored answer's message id: the robot's owner finds the API call in the session.
    return f"chatcmpl-{event.data['message_id']}"


async def _complete(ctx: AppContext, prepared: PreparedTurn, model: str) -> dict[str, Any]:
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    parts: list[str] = []
    sources: list[dict[str, Any]] = []
    failed = False
    async with aclosing(_events(ctx, prepared)) as events:
        async for event in events:
            if event.kind == "session":
                completion_id = _completion_id(event)
            elif event.kind == "context":
                sources = event.data["items"]
            elif event.kind == "delta":
                parts.append(event.data["text"])
            elif event.kind == "error":
                failed = True
            elif event.kind == "done":
                return completion_object(
                    completion_id, model, "".join(parts), event.data["usage"], sources
                )
    raise UpstreamError(UPSTREAM_FAILED if failed else "the answer ended without completing")


def _sse(payload: dict[str, Any] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


async def _chunks(
    ctx: AppContext, prepared: PreparedTurn, model: str, include_usage: bool
) -> AsyncIterator[bytes]:
    """role chunk, content chunks, a ``finish_reason: "stop"`` chunk carrying ``rag_sources``,
    the usage chunk when asked for, ``[DONE]``; on failure an error chunk, then ``[DONE]``."""
    created = int(time.time())
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    sources: list[dict[str, Any]] = []

    def chunk(delta: dict[str, Any] | None, **extra: Any) -> bytes:
        return _sse(
            chunk_object(
                completion_id, model, created, delta, with_usage_field=include_usage, **extra
            )
        )

    try:
        async with aclosing(_events(ctx, prepared)) as events:
            async for event in events:
                if event.kind == "session":
                    completion_id = _completion_id(event)
                    yield chunk({"role": "assistant", "content": ""})
                elif event.kind == "context":
                    sources = event.data["items"]
                elif event.kind == "delta" and event.data["text"]:
                    yield chunk({"content": event.data["text"]})
                elif event.kind == "error":
                    yield _sse(error_object(UPSTREAM_FAILED, "server_error", "upstream_error"))
                elif event.kind == "done":
                    yield chunk({}, finish_reason="stop", rag_sources=sources)
                    if include_usage:
                        yield chunk(None, usage=usage_object(event.data["usage"]))
    except Exception:
        logger.exception("OpenAI-compatible stream failed")
        yield _sse(error_object(_INCOMPLETE, "server_error"))
    yield _sse("[DONE]")


class OpenAICompatController(Controller):
    path = "/"
    tags = ["openai-compatible"]

    @get("/models", summary="The robot of the token, as the one model (OpenAI's list shape)")
    async def list_models(self, robot_access: NamedDependency[RobotAccess]) -> dict[str, Any]:
        created = int(robot_access.robot_created_at.timestamp())
        return {"object": "list", "data": [model_object(robot_access.robot_id, created)]}

    @get("/models/{model:str}", summary="One model: the token's robot, or 404")
    async def get_model(
        self, model: FromPath[str], robot_access: NamedDependency[RobotAccess]
    ) -> dict[str, Any]:
        robot_access.check_model(model)
        return model_object(robot_access.robot_id, int(robot_access.robot_created_at.timestamp()))

    @post(
        "/chat/completions",
        status_code=HTTP_200_OK,
        summary="Ask the token's robot, OpenAI style (JSON or SSE chunks with stream=true)",
    )
    async def chat_completions(
        self,
        data: JSONBody[ChatCompletionRequest],
        db_session: NamedDependency[AsyncSession],
        ctx: NamedDependency[AppContext],
        robot_access: NamedDependency[RobotAccess],
    ) -> Response[Any]:
        prepared = await OpenAIChatService(db_session).prepare(robot_access, data)
        if data.stream:
            return Stream(
                _chunks(ctx, prepared, robot_access.model, data.include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return Response(await _complete(ctx, prepared, robot_access.model))


def build_openai_router() -> Router:
    """The ``/v1`` router: robot tokens instead of user sign-in (excluded from the JWT
    middleware in ``rag_app.api.security``) and errors in OpenAI's shape."""
    return Router(
        path=OPENAI_PREFIX,
        route_handlers=[OpenAICompatController],
        guards=[robot_token_guard],
        dependencies={"robot_access": Provide(provide_robot_access, sync_to_thread=False)},
        exception_handlers=OPENAI_EXCEPTION_HANDLERS,
    )
