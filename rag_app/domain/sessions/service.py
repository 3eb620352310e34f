"""Chat sessions: a user's conversations with a robot, and the messages stored in them.

Sessions are private to their owner. Unlike other resources, administrators do not get to read
them either: a conversation is personal, so every lookup filters by the caller alone.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.api.pagination import Page, PageParams
from rag_app.db.models import ChatHistory, ChatSession, User
from rag_app.db.models.session import SessionStatus
from rag_app.domain.common import paginate, reject_nulls
from rag_app.domain.robots.service import RobotService
from rag_app.domain.sessions.schemas import (
    EditableStatus,
    MessageRead,
    SessionCreate,
    SessionRead,
    SessionUpdate,
)
from rag_app.errors import NotFound

_NULLABLE = frozenset({"title"})


def new_session_id() -> str:
    return uuid.uuid4().hex


class SessionService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, user: User, data: SessionCreate) -> ChatSession:
        # A disabled robot takes no new sessions, not even from its owner.
        await RobotService(self.session).get_usable(user, data.robot_id, enabled_only=True)
        chat = ChatSession(
            session_id=new_session_id(),
            # A signed-in user is always a stored row, so its id is set.
            user_id=user.id or 0,
            robot_id=data.robot_id,
            title=data.title,
        )
        self.session.add(chat)
        await self.session.commit()
        return chat

    async def get(self, user: User, session_id: str) -> ChatSession:
        """The caller's own, not deleted, session; anything else is 404 (admins included)."""
        statement = select(ChatSession).where(
            col(ChatSession.session_id) == session_id,
            col(ChatSession.user_id) == user.id,
            col(ChatSession.status) != SessionStatus.deleted,
        )
        chat = (await self.session.exec(statement)).first()
        if chat is None:
            raise NotFound(f"session {session_id} not found")
        return chat

    async def list(
        self,
        user: User,
        params: PageParams,
        robot_id: int | None = None,
        status: EditableStatus = "active",
    ) -> Page[SessionRead]:
        # COALESCE rather than "NULLS LAST": SQLite sorts NULL first on DESC and MySQL last,
        # and a session without messages should rank by when it was opened.
        activity = func.coalesce(col(ChatSession.last_message_at), col(ChatSession.created_at))
        statement = (
            select(ChatSession)
            .where(col(ChatSession.user_id) == user.id, col(ChatSession.status) == status)
            .order_by(
                col(ChatSession.is_pinned).desc(), activity.desc(), col(ChatSession.id).desc()
            )
        )
        if robot_id is not None:
            statement = statement.where(col(ChatSession.robot_id) == robot_id)
        return await paginate(self.session, statement, params, SessionRead.model_validate)

    async def update(self, user: User, session_id: str, data: SessionUpdate) -> ChatSession:
        chat = await self.get(user, session_id)
        changes = data.model_dump(exclude_unset=True)
        reject_nulls(changes, _NULLABLE)
        for field, value in changes.items():
            setattr(chat, field, value)
        self.session.add(chat)
        await self.session.commit()
        return chat

    async def delete(self, user: User, session_id: str) -> None:
        """Soft delete: the session disappears for its owner, its messages stay for audits and
        usage statistics."""
        chat = await self.get(user, session_id)
        chat.status = SessionStatus.deleted
        self.session.add(chat)
        await self.session.commit()

    async def messages(self, user: User, session_id: str, params: PageParams) -> Page[MessageRead]:
        chat = await self.get(user, session_id)
        statement = (
            select(ChatHistory)
            .where(col(ChatHistory.session_id) == chat.session_id)
            .order_by(col(ChatHistory.sequence), col(ChatHistory.id))
        )
        return await paginate(self.session, statement, params, MessageRead.model_validate)
