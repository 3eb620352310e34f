"""`rag-app kb ...`: knowledge-base operations from the shell."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from rag_app.errors import RagAppError
from rag_app.settings import Settings

TERMINAL = {"completed", "failed"}


@click.group()
def kb() -> None:
    """Knowledge-base operations."""


@kb.command("ingest")
@click.argument("knowledge_id", type=int)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--replace", is_flag=True, help="Replace documents with the same content.")
def ingest(knowledge_id: int, paths: tuple[Path, ...], replace: bool) -> None:
    """Add files (or every file in folders) to knowledge base KNOWLEDGE_ID and wait until they
    are processed, with a progress bar."""
    files = sorted(
        {f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()}
    )
    if not files:
        raise click.ClickException("no files found")
    from rag_app.cli import cli_settings

    settings = cli_settings()
    try:
        failed = asyncio.run(_ingest(settings, knowledge_id, files, replace))
    except RagAppError as exc:
        raise click.ClickException(exc.detail) from exc
    if failed:
        raise click.ClickException(f"{failed} of {len(files)} document(s) failed")


async def _ingest(settings: Settings, knowledge_id: int, files: list[Path], replace: bool) -> int:
    from tqdm import tqdm

    from rag_app.context import AppContext
    from rag_app.db.models import Document, Knowledge, User
    from rag_app.domain.documents.service import DocumentService
    from rag_app.domain.documents.upload import received_from_path
    from rag_app.errors import NotFound

    ctx = AppContext.create(settings)
    try:
        await asyncio.to_thread(ctx.migrate)
        await ctx.start_jobs()
        async with ctx.sessionmaker() as session:
            knowledge = await session.get(Knowledge, knowledge_id)
            owner = await session.get(User, knowledge.user_id) if knowledge else None
            if knowledge is None or owner is None:
                raise NotFound(f"knowledge base {knowledge_id} not found")
            received = await asyncio.to_thread(lambda: [received_from_path(f) for f in files])
            documents = await DocumentService(session, ctx).upload(
                knowledge, received, replace=replace
            )
            ids = [d.id for d in documents]
        failures: list[str] = []
        with tqdm(total=len(ids), unit="doc", desc=f"knowledge base {knowledge_id}") as bar:
            pending = set(ids)
            while pending:
                await asyncio.sleep(0.5)
                async with ctx.sessionmaker() as session:
                    for document_id in list(pending):
                        document = await session.get(Document, document_id)
                        if document is None or document.status in TERMINAL:
                            pending.discard(document_id)
                            bar.update(1)
                            if document is not None and document.status == "failed":
                                failures.append(f"{document.file_name}: {document.error_msg}")
                        elif document is not None:
                            bar.set_postfix_str(f"{document.file_name}: {document.status}")
        for failure in failures:
            click.echo(f"failed: {failure}", err=True)
        return len(failures)
    finally:
        await ctx.close()
