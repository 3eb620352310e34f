"""Chat turns keep unique, gap-free sequence numbers under concurrent writers."""

from __future__ import annotations

import asyncio

from sqlmodel import col, select

from rag_app.db.models import ChatHistory, ChatSession
from rag_app.db.models.chat_history import MessageRole
from rag_app.domain.chat.history import TurnStats, append_turn, recent_turns
from tests.conftest import Api


async def test_concurrent_turns_get_unique_sequences(api: Api) -> None:
    owner = await api.user()
    robot = await api.robot(owner)
    chat = await api.chat_session(owner, robot.id or 0)

    async def write(i: int) -> None:
        async with api.db() as db:
            role = MessageRole.user if i % 2 == 0 else MessageRole.assistant
            await append_turn(db, chat.session_id, role, f"第{i}条消息", TurnStats(prompt_tokens=i))

    await asyncio.gather(*(write(i) for i in range(20)))

    async def read(db: object) -> tuple[list[int], ChatSession]:
        rows = await db.exec(  # type: ignore[attr-defined]
            select(ChatHistory.sequence).where(col(ChatHistory.session_id) == chat.session_id)
        )
        stored = await db.get(ChatSession, chat.id)  # type: ignore[attr-defined]
        return sorted(rows.all()), stored

    sequences, stored = await api.run(read)
    assert sequences == list(range(1, 21))
    assert stored.message_count == 20
    assert stored.last_message_at is not None


async def test_title_comes_from_the_first_question_and_history_reads_in_order(api: Api) -> None:
    owner = await api.user()
    robot = await api.robot(owner)
    chat = await api.chat_session(owner, robot.id or 0, title=None)
    async with api.db() as db:
        first = await append_turn(
            db, chat.session_id, MessageRole.user, "  年假  有几天？\n请说明规定" + "。" * 80
        )
        await append_turn(
            db,
            chat.session_id,
            MessageRole.assistant,
            "十天。",
            TurnStats(prompt_tokens=7, completion_tokens=3, referenced_doc_ids=[4]),
        )
        turns = await recent_turns(db, chat.session_id, limit=10)
        stored = await db.get(ChatSession, chat.id)
    assert first.sequence == 1
    assert [t.content for t in turns] == [first.content, "十天。"]
    assert turns[1].total_tokens == 10
    assert turns[1].referenced_doc_ids == [4]
    assert stored is not None
    assert stored.title is not None
    assert stored.title.startswith("年假 有几天？ 请说明规定")
    assert len(stored.title) == 50
