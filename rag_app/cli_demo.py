"""`rag-app demo`: a knowledge base about rag_app, a robot bound to it, and an answer with its
sources, in one command, in process (no server), offline unless a remote chat model is used."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import click

from rag_app.errors import RagAppError
from rag_app.settings import Settings

if TYPE_CHECKING:
    from rag_app.context import AppContext
    from rag_app.db.models import Document, User
    from rag_app.demo.setup import Found

SNIPPET_CHARS = 160
DEFAULT_TIMEOUT_SECONDS = 600


@click.command("demo")
@click.option(
    "--question",
    "-q",
    "questions",
    multiple=True,
    help="Ask this instead of the default questions (one in English, one in Chinese); "
    "repeat to ask several.",
)
@click.option(
    "--retrieval-only",
    is_flag=True,
    help="Answer with the best passages even when a chat model is registered.",
)
@click.option(
    "--timeout",
    default=DEFAULT_TIMEOUT_SECONDS,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds to wait for the documents to be processed.",
)
def demo(questions: tuple[str, ...], retrieval_only: bool, timeout: float) -> None:
    """Build the demo knowledge base from documents shipped with rag_app (English and
    Chinese), bind a robot to it and ask it a question, printing the answer and its sources.
    Runs the first-start set-up of `rag-app serve` first; a second run reuses everything.
    The robot uses the chat model from RAG_CHAT_* (or the first one registered); without one
    it answers in retrieval-only mode."""
    from rag_app.cli import cli_settings
    from rag_app.cli_chat import MAX_MESSAGE_CHARS
    from rag_app.demo import DEFAULT_QUESTIONS

    if any(not q.strip() or len(q) > MAX_MESSAGE_CHARS for q in questions):
        raise click.BadParameter(
            f"a question has 1 to {MAX_MESSAGE_CHARS} characters", param_hint="--question"
        )
    settings = cli_settings()
    try:
        ok = asyncio.run(_demo(settings, questions or DEFAULT_QUESTIONS, retrieval_only, timeout))
    except RagAppError as exc:
        raise click.ClickException(exc.detail) from exc
    if not ok:
        raise click.ClickException("the demo did not complete; see the messages above")


async def _demo(
    settings: Settings, questions: tuple[str, ...], retrieval_only: bool, wait_seconds: float
) -> bool:
    from rag_app.bootstrap import bootstrap, prepare_schema
    from rag_app.context import AppContext
    from rag_app.demo import setup

    _quiet_model_loading()
    ctx = AppContext.create(settings)
    try:
        await prepare_schema(ctx)
        report = await bootstrap(ctx)
        for line in report.lines():
            click.echo(line)
        if report.embedding_model_id is None:
            raise click.ClickException("the packaged embedding model is not available")
        await ctx.start_jobs()
        owner = await setup.demo_owner(ctx, report.admin_id)
        knowledge = await setup.ensure_knowledge(ctx, owner, report.embedding_model_id)
        _said(knowledge, "knowledge base")
        await setup.open_demo_index(ctx, knowledge.id)
        document_ids = await setup.ensure_documents(ctx, knowledge.id)
        failed = await setup.wait_for_documents(
            ctx, document_ids, within_seconds=wait_seconds, on_finished=_print_document
        )
        chat_llm_id = await setup.chosen_chat_model(
            ctx, report.chat_model_id, retrieval_only=retrieval_only
        )
        robot = await setup.ensure_robot(ctx, owner, knowledge.id, chat_llm_id)
        _said(robot, "robot")
        mode = "retrieval only" if chat_llm_id is None else f"chat model {chat_llm_id}"
        click.echo(f"Asking robot {robot.id} as '{owner.username}' ({mode}).")
        with_model = chat_llm_id is not None
        answered = [
            await _ask(ctx, owner, robot.id, question, with_model=with_model)
            for question in questions
        ]
        return not failed and all(answered)
    finally:
        await ctx.close()


def _quiet_model_loading() -> None:
    """Loading the embedding model draws a progress bar, in the middle of an answer."""
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()


def _said(found: Found, kind: str) -> None:
    verb = "Created" if found.created else "Using"
    click.echo(f"{verb} {kind} '{found.name}' (id {found.id}).")


def _print_document(document: Document) -> None:
    if document.status == "completed":
        click.echo(f"  {document.file_name}: {document.chunk_count} chunks")
    else:
        click.echo(f"  {document.file_name}: failed: {document.error_msg}", err=True)


async def _ask(
    ctx: AppContext, owner: User, robot_id: int, question: str, *, with_model: bool
) -> bool:
    """One question in a new chat session of the owner, through the chat service (the turns
    are stored, as with POST /chat). Returns whether an answer came."""
    from rag_app.cli_chat import stream_answer
    from rag_app.domain.chat.service import ChatService

    click.echo("")
    click.echo(f"Question: {question}")
    async with ctx.sessionmaker() as session:
        prepared = await ChatService(session, ctx).prepare(owner, robot_id, None, question)
    click.echo("Answer:")
    answer = await stream_answer(ctx, prepared)
    if answer is None:
        return False
    contexts, _ = answer
    # A retrieval-only answer is made of the passages themselves: no snippets again.
    _print_sources(contexts, snippets=with_model)
    return True


def _print_sources(contexts: list[dict[str, Any]], *, snippets: bool) -> None:
    click.echo("Sources:" if contexts else "Sources: none")
    for item in contexts:
        where = item.get("file_name") or f"document {item.get('document_id')}"
        if item.get("page") is not None:
            where += f", page {item['page']}"
        if item.get("heading_path"):
            where += f", {item['heading_path']}"
        click.echo(f"  [{item['n']}] {where}")
        if snippets:
            click.echo(f"      {snippet(item.get('text') or '')}")


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The start of a passage on one line."""
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"
