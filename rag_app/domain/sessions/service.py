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
from rag_app.db.models import ChatHistory, ChatSession, Robot, User
from rag_app.db.models.session import SessionStatus
from rag_app.domain.common import paginate
from rag_app.domain.sessions.schemas import (
    EditableStatus,
    MessageRead,
    SessionCreate,
    SessionRead,
    SessionUpdate,
)
from rag_app.errors import NotFound

ROBOT_ENABLED = 1


async def get_usable_robot(session: AsyncSession, robot_id: int, user: User) -> Robot:
    """The robot if ``user`` may chat with it: enabled, and owned, public, or the user is an admin.

    Every refusal reads like a missing robot so that private robots' ids are not revealed.
    (The robots service grows an equivalent ``get_usable``; the two can be merged.)
    """
    robot = await session.get(Robot, robot_id)
    if (
        robot is None
        or robot.status != ROBOT_ENABLED
        or not (robot.user_id == user.id or robot.is_public or user.is_admin)
    ):
        raise NotFound(f"robot {robot_id} not found")
    return robot


def new_session_id() -> str:
    return uuid.uuid4().hex


class SessionService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, user: User, data: SessionCreate) -> ChatSession:
        await get_usable_robot(self.session, data.robot_id, user)
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

    async def get_owned(self, session_id: str, user: User) -> ChatSession:
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

    async def update(self, session_id: str, user: User, data: SessionUpdate) -> ChatSession:
        chat = await self.get_owned(session_id, user)
        for field, value in data.model_dump(exclude_unset=True).items():
            setattr(chat, field, value)
        self.session.add(chat)
        await self.session.commit()
        return chat

    async def delete(self, session_id: str, user: User) -> None:
        """Soft delete: the session disappears for its owner, its messages stay for audits and
        usage statistics."""
        chat = await self.get_owned(session_id, user)
        chat.status = SessionStatus.deleted
        self.session.add(chat)
        await self.session.commit()

    async def messages(self, session_id: str, user: User, params: PageParams) -> Page[MessageRead]:
        chat = await self.get_owned(session_id, user)
        statement = (
            select(ChatHistory)
            .where(col(ChatHistory.session_id) == chat.session_id)
            .order_by(col(ChatHistory.sequence), col(ChatHistory.id))
        )
        return await paginate(self.session, statement, params, MessageRead.model_validate)
