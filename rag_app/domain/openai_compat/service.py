"""Who calls (a robot access token), which robot answers, and where the turns are stored.

Each token has one chat session, owned by the user who created the token and titled
"API: <token name>", so the owner sees every API conversation in their session list. The client
sends the whole conversation with every request (OpenAI's protocol is stateless): the robot
answers from that history, not from the stored session, which is an audit log of the questions
and answers that went through the token.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.db.models import ChatSession, Robot, User
from rag_app.db.models.chat_history import MessageRole as TurnRole
from rag_app.db.models.session import SessionStatus
from rag_app.domain.chat.history import TurnStats, append_turn
from rag_app.domain.chat.service import HISTORY_TURNS, PreparedTurn
from rag_app.domain.common import invalid
from rag_app.domain.openai_compat.schemas import (
    ChatCompletionMessage,
    ChatCompletionRequest,
    model_id,
)
from rag_app.domain.robots.tokens import RobotTokenService
from rag_app.errors import AuthenticationFailed, NotFound

# The longest question, as for POST /chat.
MAX_QUESTION_LENGTH = 8000
SESSION_TITLE_PREFIX = "API: "
# Session ids of token sessions are derived from the token's hash: found again without a lookup
# column, and, like random ids, they reveal nothing.
_SESSION_NAMESPACE = uuid.UUID("6f1c9a52-3d0e-4b8e-9a51-2c7d0f4e8b13")
_HISTORY_ROLES = ("user", "assistant")


@dataclass(frozen=True)
class RobotAccess:
    """What a valid token opens: plain values, usable after the guard's session is closed."""

    robot_id: int
    robot_name: str
    robot_created_at: datetime
    token_id: int
    token_name: str
    token_hash: str
    user_id: int

    @property
    def model(self) -> str:
        return model_id(self.robot_id)

    def check_model(self, requested: str) -> str:
        """The canonical model id if ``requested`` names this token's robot (``robot-<id>``
        or the robot's exact name); any other model reads as missing, existing or not."""
        if requested.strip() in (self.model, self.robot_name):
            return self.model
        raise NotFound(
            f"The model '{requested}' does not exist or you do not have access to it; "
            f"this token opens '{self.model}' (GET /v1/models).",
            openai_code="model_not_found",
            openai_param="model",
        )


def _invalid_token(reason: str) -> AuthenticationFailed:
    return AuthenticationFailed(
        f"{reason}: send a robot access token (POST /api/v1/robots/{{id}}/tokens) as "
        "'Authorization: Bearer <token>'",
        openai_code="invalid_api_key",
    )


async def authenticate(db: AsyncSession, authorization: str | None) -> RobotAccess:
    """The robot a bearer token opens. A missing, unknown or revoked token, a disabled robot,
    and a token whose creator is disabled or no longer manages the robot are all refused."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _invalid_token("missing API key")
    try:
        robot, row = await RobotTokenService(db).authenticate(token.strip())
    except AuthenticationFailed:
        raise _invalid_token("invalid API key") from None
    creator = await db.get(User, row.user_id)
    if (
        creator is None
        or not creator.is_active
        or not (creator.is_admin or creator.id == robot.user_id)
    ):
        raise _invalid_token("the account that created this API key can no longer use the robot")
    return RobotAccess(
        robot_id=robot.id or 0,
        robot_name=robot.name,
        robot_created_at=robot.created_at,
        token_id=row.id or 0,
        token_name=row.name,
        token_hash=row.token_hash,
        user_id=row.user_id,
    )


def session_id_for(access: RobotAccess) -> str:
    return uuid.uuid5(_SESSION_NAMESPACE, access.token_hash).hex


def split_messages(messages: list[ChatCompletionMessage]) -> tuple[str, list[ChatMessage]]:
    """The question (the last message, which must be the user's) and the conversation before
    it: its exchanges, a user message answered by an assistant message. System and developer
    messages are ignored (the robot's own system prompt governs its answers); tool messages,
    assistant tool calls without text and unanswered questions are left out, as POST /chat
    leaves them out, because chat templates that require alternating roles reject them."""
    turns = [m for m in messages if m.role not in ("system", "developer")]
    if not turns or turns[-1].role != "user":
        raise invalid("messages", "the last message must be the user's question (role 'user')")
    question = turns[-1].text.strip()
    if not question:
        raise invalid("messages", "the question has no text")
    if len(question) > MAX_QUESTION_LENGTH:
        raise invalid("messages", f"the question is longer than {MAX_QUESTION_LENGTH} characters")
    said = [m for m in turns[:-1] if m.role in _HISTORY_ROLES and m.text.strip()]
    history: list[ChatMessage] = []
    for asked, reply in pairwise(said):
        if asked.role == "user" and reply.role == "assistant":
            history += [
                ChatMessage(role=MessageRole.USER, content=asked.text),
                ChatMessage(role=MessageRole.ASSISTANT, content=reply.text),
            ]
    return question, history[-HISTORY_TURNS:]


class OpenAIChatService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def prepare(self, access: RobotAccess, data: ChatCompletionRequest) -> PreparedTurn:
        """Check the request, find or create the token's session and store the user's turn;
        the answer is then produced by ``ChatService.stream`` like for POST /chat."""
        access.check_model(data.model)
        question, history = split_messages(data.messages)
        # The session first: its creation may roll back, which would expire a loaded robot.
        chat, created = await self._token_session(access)
        robot = await self.session.get(Robot, access.robot_id)
        if robot is None:  # deleted since the guard looked
            raise _invalid_token("invalid API key")
        turn = await append_turn(
            self.session,
            chat.session_id,
            TurnRole.user,
            question,
            TurnStats(
                meta={
                    "via": "openai-compatible",
                    "robot_token_id": access.token_id,
                    "history_messages": len(history),
                }
            ),
        )
        return PreparedTurn(robot, chat, question, turn.message_id, history, created)

    async def _token_session(self, access: RobotAccess) -> tuple[ChatSession, bool]:
        session_id = session_id_for(access)
        chat = await self._find(session_id)
        if chat is not None:
            if chat.status == SessionStatus.deleted:
                # The token is still in use: its audit trail becomes visible again.
                chat.status = SessionStatus.active
                self.session.add(chat)
                await self.session.commit()
            return chat, False
        chat = ChatSession(
            session_id=session_id,
            user_id=access.user_id,
            robot_id=access.robot_id,
            title=f"{SESSION_TITLE_PREFIX}{access.token_name}",
            meta_data={"via": "openai-compatible", "robot_token_id": access.token_id},
        )
        self.session.add(chat)
        try:
            await self.session.commit()
        except IntegrityError:
            # Two first requests of a token at once: the other one created it.
            await self.session.rollback()
            existing = await self._find(session_id)
            if existing is None:
                raise
            return existing, False
        return chat, True

    async def _find(self, session_id: str) -> ChatSession | None:
        statement = select(ChatSession).where(col(ChatSession.session_id) == session_id)
        return (await self.session.exec(statement)).first()
