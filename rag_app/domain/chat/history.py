"""Storing chat turns: sequence numbers that stay right under concurrent requests, and the
session's message_count, last_message_at and title kept in step."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.db.models import ChatHistory, ChatSession
from rag_app.db.models.chat_history import MessageRole
from rag_app.db.types import utcnow

TITLE_LENGTH = 50


@dataclass
class TurnStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retrieval_time_ms: int = 0
    generation_time_ms: int = 0
    total_time_ms: int = 0
    retrieved_contexts: list[dict[str, Any]] = field(default_factory=list)
    referenced_doc_ids: list[int] = field(default_factory=list)
    meta: dict[str, Any] | None = None


def new_message_id() -> str:
    return uuid.uuid4().hex


async def append_turn(
    db: AsyncSession,
    session_id: str,
    role: MessageRole,
    content: str,
    stats: TurnStats | None = None,
    message_id: str | None = None,
) -> ChatHistory:
    """Store one turn and commit. The sequence number comes from an atomic increment of the
    session's message_count: the UPDATE locks the session row (MySQL) or the database (SQLite)
    until commit, so two concurrent requests can never take the same number."""
    stats = stats or TurnStats()
    now = utcnow()
    await db.exec(
        update(ChatSession)
        .where(col(ChatSession.session_id) == session_id)
        .values(message_count=col(ChatSession.message_count) + 1, last_message_at=now)
    )
    sequence = (
        await db.exec(
            select(ChatSession.message_count).where(col(ChatSession.session_id) == session_id)
        )
    ).one()
    if role == MessageRole.user and sequence == 1:
        title = " ".join(content.split())[:TITLE_LENGTH]
        await db.exec(
            update(ChatSession)
            .where(col(ChatSession.session_id) == session_id, col(ChatSession.title).is_(None))
            .values(title=title or None)
        )
    turn = ChatHistory(
        session_id=session_id,
        message_id=message_id or new_message_id(),
        role=role,
        content=content,
        sequence=sequence,
        retrieved_contexts=stats.retrieved_contexts or None,
        referenced_doc_ids=stats.referenced_doc_ids or None,
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        total_tokens=stats.prompt_tokens + stats.completion_tokens,
        retrieval_time_ms=stats.retrieval_time_ms,
        generation_time_ms=stats.generation_time_ms,
        total_time_ms=stats.total_time_ms,
        meta_data=stats.meta,
    )
    db.add(turn)
    await db.commit()
    return turn


async def recent_turns(db: AsyncSession, session_id: str, limit: int) -> list[ChatHistory]:
    """The last ``limit`` turns in order, for the chat engine's memory."""
    rows = await db.exec(
        select(ChatHistory)
        .where(col(ChatHistory.session_id) == session_id)
        .order_by(col(ChatHistory.sequence).desc())
        .limit(limit)
    )
    return list(reversed(rows.all()))
