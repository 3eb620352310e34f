"""`rag-app kb ingest` and `rag-app worker` from the shell's point of view: exit codes and what
they print. Each command runs its own event loop, in a thread, on a data directory of its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlmodel import col, select

from rag_app.cli import main
from rag_app.context import AppContext
from rag_app.db.models import Document
from rag_app.settings import Settings
from tests import fixtures_docs as docs
from tests.integration import test_cli
from tests.integration.test_jobs import counts_in, guide, seed_knowledge

env = test_cli.env  # the fixture, for pytest to find here


@pytest.fixture
def cli_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    # Without Redis: the command processes the documents itself.
    monkeypatch.delenv("RAG_REDIS__URL", raising=False)
    return env


async def invoke(*argv: str) -> Result:
    return await asyncio.to_thread(lambda: CliRunner().invoke(main, list(argv)))


async def knowledge_base() -> int:
    """A knowledge base in the database the command will use (the environment's)."""
    ctx = AppContext.create(Settings())
    try:
        await asyncio.to_thread(ctx.migrate)
        knowledge = await seed_knowledge(ctx, chunk_size=100, chunk_overlap=10)
        return knowledge.id or 0
    finally:
        await ctx.close()


async def documents_of(kb_id: int) -> list[Document]:
    ctx = AppContext.create(Settings())
    try:
        async with ctx.sessionmaker() as session:
            rows = await session.exec(
                select(Document)
                .where(col(Document.knowledge_id) == kb_id)
                .order_by(col(Document.file_name))
            )
            documents = list(rows.all())
        for document in documents:
            if document.status == "completed":
                counts = await counts_in(ctx, kb_id, document.id)
                assert counts == (document.chunk_count, document.chunk_count)
        return documents
    finally:
        await ctx.close()


async def test_ingest_a_folder(cli_env: dict[str, str], tmp_path: Path) -> None:
    kb_id = await knowledge_base()
    folder = tmp_path / "handbook"
    (folder / "chapter").mkdir(parents=True)
    (folder / "leave.md").write_bytes(guide("leave"))
    (folder / "chapter" / "travel.docx").write_bytes(docs.docx_bytes())

    result = await invoke("kb", "ingest", str(kb_id), str(folder))
    assert result.exit_code == 0, result.output
    assert f"knowledge base {kb_id}" in result.output  # the progress bar
    assert "2/2" in result.output
    assert "failed" not in result.output
    documents = await documents_of(kb_id)
    assert [d.file_name for d in documents] == ["leave.md", "travel.docx"]
    assert all(d.status == "completed" and d.chunk_count > 0 for d in documents)


async def test_a_file_that_fails_is_named_and_the_exit_code_is_1(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    kb_id = await knowledge_base()
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "notes.md").write_bytes(docs.markdown_bytes())
    (folder / "scan.pdf").write_bytes(docs.scanned_pdf())

    result = await invoke("kb", "ingest", str(kb_id), str(folder))
    assert result.exit_code == 1, result.output
    assert "failed: scan.pdf" in result.output
    assert "no text" in result.output.lower()
    assert "1 of 2 document(s) failed" in result.output
    assert "Traceback" not in result.output
    statuses = {d.file_name: d.status for d in await documents_of(kb_id)}
    assert statuses == {"notes.md": "completed", "scan.pdf": "failed"}


async def test_an_unknown_knowledge_base(cli_env: dict[str, str], tmp_path: Path) -> None:
    await knowledge_base()
    path = tmp_path / "a.md"
    path.write_bytes(docs.markdown_bytes())
    result = await invoke("kb", "ingest", "987654", str(path))
    assert result.exit_code == 1
    assert "knowledge base 987654 not found" in result.output
    assert "Traceback" not in result.output


async def test_worker_needs_redis(cli_env: dict[str, str]) -> None:
    result = await invoke("worker")
    assert result.exit_code == 1
    assert "RAG_REDIS__URL" in result.output
    assert "Traceback" not in result.output
