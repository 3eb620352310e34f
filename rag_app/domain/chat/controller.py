"""POST /chat (JSON or Server-Sent Events) and feedback on answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Response, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_200_OK
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.context import AppContext
from rag_app.db.models import ChatHistory, User
from rag_app.db.models.chat_history import MessageRole
from rag_app.domain.chat.schemas import ChatReply, ChatRequest, FeedbackRequest
from rag_app.domain.chat.service import ChatEvent, ChatService, PreparedTurn
from rag_app.domain.common import invalid
from rag_app.domain.sessions.schemas import MessageRead
from rag_app.domain.sessions.service import SessionService
from rag_app.errors import NotFound, UpstreamError


async def _events(ctx: AppContext, prepared: PreparedTurn) -> AsyncIterator[ChatEvent]:
    # A session of its own: the request's session is closed once the handler returns, while
    # a stream goes on after that.
    async with ctx.sessionmaker() as db:
        async for event in ChatService(db, ctx).stream(prepared):
            yield event


async def _sse(ctx: AppContext, prepared: PreparedTurn) -> AsyncIterator[ServerSentEventMessage]:
    async for event in _events(ctx, prepared):
        yield ServerSentEventMessage(
            event=event.kind, data=json.dumps(event.data, ensure_ascii=False)
        )


class ChatController(Controller):
    path = "/"
    tags = ["chat"]

    @post(
        "/chat",
        status_code=HTTP_200_OK,
        summary="Ask a robot; answers as Server-Sent Events (stream=true) or JSON",
        response_description="SSE events: session, context, delta…, done | error",
    )
    async def chat(
        self,
        data: JSONBody[ChatRequest],
        db_session: NamedDependency[AsyncSession],
        ctx: NamedDependency[AppContext],
        current_user: NamedDependency[User],
    ) -> Response[Any]:
        # Response, not a union of models: Litestar would serialise the SSE response as JSON.
        prepared = await ChatService(db_session, ctx).prepare(
            current_user, data.robot_id, data.session_id, data.message
        )
        if data.stream:
            return ServerSentEvent(_sse(ctx, prepared))
        return Response((await _collect(ctx, prepared)).model_dump(mode="json"))

    @post(
        "/messages/{message_id:str}/feedback",
        status_code=HTTP_200_OK,
        summary="Rate an answer in one of your sessions",
    )
    async def feedback(
        self,
        message_id: FromPath[str],
        data: JSONBody[FeedbackRequest],
        db_session: NamedDependency[AsyncSession],
        current_user: NamedDependency[User],
    ) -> MessageRead:
        turn = (
            await db_session.exec(
                select(ChatHistory).where(col(ChatHistory.message_id) == message_id)
            )
        ).first()
        if turn is None:
            raise NotFound(f"message {message_id} not found")
        try:
            await SessionService(db_session).get(current_user, turn.session_id)
        except NotFound as exc:
            raise NotFound(f"message {message_id} not found") from exc
        if turn.role != MessageRole.assistant:
            # "field: message" like every 422 (rag_app.domain.common.invalid): the detail names
            # the field too, not only errors[].field.
            raise invalid(
                "message_id", f"message {message_id} is a question; feedback applies to answers"
            )
        turn.feedback = data.feedback
        turn.feedback_comment = data.comment
        db_session.add(turn)
        await db_session.commit()
        return MessageRead.model_validate(turn)


async def _collect(ctx: AppContext, prepared: PreparedTurn) -> ChatReply:
    parts: list[str] = []
    contexts: list[dict[str, Any]] = []
    start: dict[str, Any] = {}
    async for event in _events(ctx, prepared):
        if event.kind == "session":
            start = event.data
        elif event.kind == "context":
            contexts = event.data["items"]
        elif event.kind == "delta":
            parts.append(event.data["text"])
        elif event.kind == "error":
            raise UpstreamError(
                f"{event.data['message']} (your question was saved in session "
                f"{prepared.chat.session_id})",
                session_id=prepared.chat.session_id,
            )
        elif event.kind == "done":
            return ChatReply(
                session_id=prepared.chat.session_id,
                user_message_id=start["user_message_id"],
                message_id=event.data["message_id"],
                answer="".join(parts),
                contexts=contexts,
                usage=event.data["usage"],
                timings_ms=event.data["timings_ms"],
            )
    raise UpstreamError("the answer ended without completing")
