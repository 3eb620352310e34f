"""`rag-app chat`: talk to a robot from a terminal, as its owner (an operator's tool)."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

import click

from rag_app.errors import RagAppError
from rag_app.settings import Settings

if TYPE_CHECKING:
    from rag_app.context import AppContext
    from rag_app.db.models import User
    from rag_app.domain.chat.service import PreparedTurn

EXIT_COMMANDS = {"/exit", "/quit"}
# As POST /chat (rag_app.domain.chat.schemas.ChatRequest.message).
MAX_MESSAGE_CHARS = 8000


@click.command("chat")
@click.argument("robot_id", type=int)
@click.option(
    "--session",
    "session_id",
    default=None,
    help="Continue this chat session (one of the robot owner's with this robot).",
)
def chat(robot_id: int, session_id: str | None) -> None:
    """Chat with robot ROBOT_ID as its owner: one question per line of standard input, until
    its end or /exit. Answers are printed as they stream, then their sources; both turns are
    stored in the session, as with POST /chat."""
    from rag_app.cli import cli_settings

    settings = cli_settings()
    try:
        asyncio.run(_chat(settings, robot_id, session_id))
    except RagAppError as exc:
        raise click.ClickException(exc.detail) from exc


async def _chat(settings: Settings, robot_id: int, session_id: str | None) -> None:
    from rag_app.context import AppContext

    ctx = AppContext.create(settings)
    try:
        await asyncio.to_thread(ctx.migrate)
        owner = await _owner(ctx, robot_id)
        stdin = sys.stdin  # CliRunner's input in tests
        interactive = stdin.isatty()
        while True:
            if interactive:
                click.echo("> ", nl=False)
            line: str = await asyncio.to_thread(stdin.readline)
            if not line:
                break  # end of input
            question = line.strip()
            if question in EXIT_COMMANDS:
                break
            if not question:
                continue
            if len(question) > MAX_MESSAGE_CHARS:
                click.echo(
                    f"error: a question has at most {MAX_MESSAGE_CHARS} characters", err=True
                )
                continue
            session_id = await _turn(ctx, owner, robot_id, session_id, question)
    finally:
        await ctx.close()


async def _owner(ctx: AppContext, robot_id: int) -> User:
    from rag_app.db.models import Robot, User
    from rag_app.errors import NotFound

    async with ctx.sessionmaker() as session:
        robot = await session.get(Robot, robot_id)
        owner = await session.get(User, robot.user_id) if robot is not None else None
        if robot is None or owner is None:
            raise NotFound(f"robot {robot_id} not found")
        mode = "retrieval only" if robot.chat_llm_id is None else "with a chat model"
        click.echo(
            f"robot {robot_id} '{robot.name}' ({mode}), as {owner.username}; "
            "end with /exit or end of input"
        )
        return owner


async def _turn(
    ctx: AppContext, owner: User, robot_id: int, session_id: str | None, question: str
) -> str:
    """Ask one question; returns the session id (new if there was none)."""
    from rag_app.domain.chat.service import ChatService

    async with ctx.sessionmaker() as session:
        prepared = await ChatService(session, ctx).prepare(owner, robot_id, session_id, question)
    if prepared.created_session:
        click.echo(f"session {prepared.chat.session_id}")
    answer = await stream_answer(ctx, prepared)
    if answer is not None:
        _print_sources(*answer)
    return prepared.chat.session_id


async def stream_answer(
    ctx: AppContext, prepared: PreparedTurn
) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """Print the answer as it streams; return its passages and the ``done`` event's data, or
    None after an error (printed)."""
    from rag_app.domain.chat.service import ChatService

    contexts: list[dict[str, Any]] = []
    # A session of its own for the answer, as POST /chat streams it.
    async with ctx.sessionmaker() as session:
        async for event in ChatService(session, ctx).stream(prepared):
            if event.kind == "context":
                contexts = event.data["items"]
            elif event.kind == "delta":
                click.echo(event.data["text"], nl=False)
            elif event.kind == "error":
                click.echo("")
                click.echo(f"error: {event.data['message']}", err=True)
                return None
            elif event.kind == "done":
                click.echo("")
                return contexts, event.data
    click.echo("")
    return contexts, {}


def _print_sources(contexts: list[dict[str, Any]], done: dict[str, Any]) -> None:
    if contexts:
        click.echo("sources:")
    for item in contexts:
        where = item.get("file_name") or f"document {item.get('document_id')}"
        if item.get("page") is not None:
            where += f", page {item['page']}"
        if item.get("heading_path"):
            where += f", {item['heading_path']}"
        click.echo(
            f"  [{item['n']}] {where} (document {item.get('document_id')}, knowledge base "
            f"{item.get('knowledge_id')}, score {float(item.get('score') or 0):.3f})"
        )
    total = (done.get("timings_ms") or {}).get("total")
    if total is not None:
        click.echo(f"({total} ms, message {done.get('message_id')})")
    click.echo("")
