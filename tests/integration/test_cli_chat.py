"""`rag-app chat`: questions from standard input to a retrieval-only robot (no LLM), the
answer and its sources printed, both turns stored, a session continued with --session."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlmodel import col, select

from rag_app.cli import main
from rag_app.context import AppContext
from rag_app.db.models import ChatHistory, ChatSession, Knowledge, Robot, RobotKnowledge
from rag_app.settings import Settings
from tests.integration import test_cli
from tests.integration.test_cli_ingest import invoke, knowledge_base
from tests.integration.test_retrieval_api import CHINESE, ENGLISH

env = test_cli.env  # the fixture, for pytest to find here


@pytest.fixture
def cli_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.delenv("RAG_REDIS__URL", raising=False)
    return env


async def chat(*argv: str, stdin: str) -> Result:
    # Its own event loop, in a thread, as from a shell; stdin fed by the runner.
    return await asyncio.to_thread(lambda: CliRunner().invoke(main, ["chat", *argv], input=stdin))


async def retrieval_only_robot(tmp_path: Path) -> int:
    """A knowledge base with an English and a Chinese document (ingested by `rag-app kb
    ingest`) and a robot without a chat model bound to it."""
    kb_id = await knowledge_base()
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "handbook.md").write_text(ENGLISH, encoding="utf-8")
    (folder / "银行业务.txt").write_text(CHINESE, encoding="utf-8")
    ingested = await invoke("kb", "ingest", str(kb_id), str(folder))
    assert ingested.exit_code == 0, ingested.output
    ctx = AppContext.create(Settings())
    try:
        async with ctx.sessionmaker() as session:
            knowledge = await session.get(Knowledge, kb_id)
            assert knowledge is not None
            robot = Robot(user_id=knowledge.user_id, name="helper", top_k=2)
            session.add(robot)
            await session.flush()
            session.add(RobotKnowledge(robot_id=robot.id or 0, knowledge_id=kb_id))
            await session.commit()
            return robot.id or 0
    finally:
        await ctx.close()


async def stored_turns() -> dict[str, list[tuple[str, str]]]:
    """Every session's turns: (role, content) in order."""
    ctx = AppContext.create(Settings())
    try:
        async with ctx.sessionmaker() as session:
            rows = await session.exec(
                select(ChatHistory).order_by(col(ChatHistory.session_id), col(ChatHistory.sequence))
            )
            turns: dict[str, list[tuple[str, str]]] = {}
            for row in rows.all():
                turns.setdefault(row.session_id, []).append((row.role, row.content))
            assert all(
                turn.retrieved_contexts
                for turn in (await session.exec(select(ChatHistory))).all()
                if turn.role == "assistant"
            )
            return turns
    finally:
        await ctx.close()


async def test_questions_from_stdin_are_answered_with_sources(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    robot_id = await retrieval_only_robot(tmp_path)
    questions = "How many vacation days do staff get?\n\n活期存款的利率是多少？\n/exit\nnot asked\n"
    result = await chat(str(robot_id), stdin=questions)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"robot {robot_id} 'helper' (retrieval only)" in out
    assert "No chat model is configured for this robot; the most relevant passages are:" in out
    assert "twenty days of paid annual leave" in out
    assert "该机器人未配置对话模型，以下是最相关的段落：" in out
    assert "年利率为百分之零点二五" in out
    assert out.count("sources:") == 2
    assert "  [1] handbook.md, Leave policy (document " in out
    assert "  [1] 银行业务.txt (document " in out
    assert "not asked" not in out
    (session_line,) = [line for line in out.splitlines() if line.startswith("session ")]
    session_id = session_line.split()[1]

    turns = await stored_turns()
    assert list(turns) == [session_id]
    roles = [role for role, _ in turns[session_id]]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert turns[session_id][0][1] == "How many vacation days do staff get?"
    assert "twenty days of paid annual leave" in turns[session_id][1][1]

    # Continuing the session: no new one, the turns appended (end of input ends the chat).
    again = await chat(str(robot_id), "--session", session_id, stdin="信用卡年费怎么免\n")
    assert again.exit_code == 0, again.output
    assert "session " not in again.stdout
    assert "年费" in again.stdout
    turns = await stored_turns()
    assert list(turns) == [session_id]
    assert [role for role, _ in turns[session_id]] == ["user", "assistant"] * 3


async def test_unknown_robot_or_session(cli_env: dict[str, str], tmp_path: Path) -> None:
    robot_id = await retrieval_only_robot(tmp_path)
    missing = await chat("987654", stdin="hello\n")
    assert missing.exit_code == 1
    assert "robot 987654 not found" in missing.output
    assert "Traceback" not in missing.output

    unknown_session = await chat(str(robot_id), "--session", "nope", stdin="hello\n")
    assert unknown_session.exit_code == 1
    assert "session nope not found" in unknown_session.output

    ctx = AppContext.create(Settings())
    try:
        async with ctx.sessionmaker() as session:
            assert (await session.exec(select(ChatSession))).all() == []
    finally:
        await ctx.close()
