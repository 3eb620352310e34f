"""The demo knowledge base and robot, found again on every run rather than created twice.

Both belong to the first administrator and are recognised by name. The shipped documents
are added through the same upload path as the API (checks, object store, job queue); one
already there with the same content is left alone, one whose content changed (a newer
rag_app) is replaced, and a failed one is retried.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import col, select

from indexes.errors import IndexesError
from indexes.filetypes import safe_file_name
from rag_app.db.models import Document, Knowledge, Llm, Robot, User
from rag_app.db.models.document import DocumentStatus
from rag_app.db.models.llm import ModelType
from rag_app.demo import DEFAULT_QUESTIONS, KNOWLEDGE_NAME, ROBOT_NAME, shipped_documents
from rag_app.domain.common import ENABLED
from rag_app.domain.documents.service import DocumentService
from rag_app.domain.documents.upload import ReceivedFile, received_from_path
from rag_app.domain.knowledge.schemas import KnowledgeCreate
from rag_app.domain.knowledge.service import KnowledgeService
from rag_app.domain.robots.schemas import RobotCreate, RobotUpdate
from rag_app.domain.robots.service import RobotService
from rag_app.errors import ConfigurationError
from rag_app.indexing.access import open_index
from rag_app.indexing.specs import store_settings

if TYPE_CHECKING:
    from rag_app.context import AppContext

TERMINAL = (DocumentStatus.completed, DocumentStatus.failed)
POLL_SECONDS = 0.5


@dataclass
class Found:
    """An entity of the demo and whether this run created it."""

    id: int
    name: str
    created: bool


async def demo_owner(ctx: AppContext, admin_id: int | None) -> User:
    async with ctx.sessionmaker() as session:
        owner = await session.get(User, admin_id) if admin_id is not None else None
    if owner is None:
        raise ConfigurationError("there is no administrator to own the demo")
    return owner


async def ensure_knowledge(ctx: AppContext, owner: User, embed_llm_id: int) -> Found:
    async with ctx.sessionmaker() as session:
        statement = (
            select(Knowledge)
            .where(col(Knowledge.user_id) == owner.id, col(Knowledge.name) == KNOWLEDGE_NAME)
            .order_by(col(Knowledge.id))
        )
        existing = (await session.exec(statement)).first()
        if existing is not None:
            return Found(existing.id or 0, existing.name, created=False)
        created = await KnowledgeService(session, ctx).create(
            owner,
            KnowledgeCreate(
                name=KNOWLEDGE_NAME,
                description="Documents about rag_app shipped with it (English and Chinese), "
                "added by `rag-app demo`.",
                embed_llm_id=embed_llm_id,
            ),
        )
        return Found(created.id or 0, created.name, created=True)


async def open_demo_index(ctx: AppContext, knowledge_id: int) -> None:
    """Open the knowledge base's index before adding anything: Milvus Lite serves one process
    per data directory, and a server running on it is better named now than in every failed
    document later."""
    async with ctx.sessionmaker() as session:
        knowledge = await session.get(Knowledge, knowledge_id)
        if knowledge is None:
            raise ConfigurationError(f"knowledge base {knowledge_id} disappeared")
        try:
            await open_index(ctx, session, knowledge)
        except IndexesError as exc:
            from indexes.kb import milvus_lite_in_use

            stores = store_settings(ctx.settings)
            if await asyncio.to_thread(milvus_lite_in_use, stores):
                raise ConfigurationError(
                    f"the indexes in {stores.milvus_lite_path} are open in another process, "
                    "probably `rag-app serve` (Milvus Lite serves one process per data "
                    "directory): stop it, or run the demo with another RAG_DATA_DIR"
                ) from exc
            raise ConfigurationError(str(exc)) from exc


async def ensure_documents(ctx: AppContext, knowledge_id: int) -> list[int]:
    """Bring the shipped documents into the knowledge base; returns the ids of all of them
    (the caller waits for those still being processed)."""
    shipped = await asyncio.to_thread(_received, shipped_documents())
    async with ctx.sessionmaker() as session:
        documents = DocumentService(session, ctx)
        knowledge = await session.get(Knowledge, knowledge_id)
        if knowledge is None:
            raise ConfigurationError(f"knowledge base {knowledge_id} disappeared")
        rows = await session.exec(
            select(Document).where(col(Document.knowledge_id) == knowledge_id)
        )
        present = {document.file_name: document for document in rows.all()}
        ids: list[int] = []
        missing: list[ReceivedFile] = []
        for received in shipped:
            document = present.get(received.file_name)
            if document is None or document.content_hash != received.sha256:
                if document is not None:
                    await documents.delete(document)  # an older version of the file
                missing.append(received)
                continue
            if document.status == DocumentStatus.failed:
                await documents.retry(document)
            ids.append(document.id or 0)
        if missing:
            # replace=True: a shipped file present under another name is renamed, not refused.
            uploaded = await documents.upload(knowledge, missing, replace=True)
            ids += [document.id or 0 for document in uploaded]
    return ids


def _received(paths: list[Path]) -> list[ReceivedFile]:
    received = [received_from_path(path) for path in paths]
    for item in received:
        item.file_name = safe_file_name(item.file_name)  # as the upload will store it
    return received


async def wait_for_documents(
    ctx: AppContext,
    document_ids: list[int],
    *,
    within_seconds: float,
    on_finished: Callable[[Document], Any],
) -> list[Document]:
    """Wait until every document is completed or failed; returns the failed ones. Calls
    ``on_finished`` once per document as it finishes (at once for finished ones)."""
    pending, failed = set(document_ids), []
    deadline = time.monotonic() + within_seconds
    while pending:
        async with ctx.sessionmaker() as session:
            for document_id in sorted(pending):
                document = await session.get(Document, document_id)
                if document is None or document.status in TERMINAL:
                    pending.discard(document_id)
                    if document is not None:
                        on_finished(document)
                        if document.status == DocumentStatus.failed:
                            failed.append(document)
        if not pending:
            break
        if time.monotonic() > deadline:
            raise ConfigurationError(
                f"{len(pending)} demo document(s) were not processed within {within_seconds:.0f} s "
                "(with RAG_REDIS__URL set, a `rag-app worker` must be running)"
            )
        await asyncio.sleep(POLL_SECONDS)
    return failed


async def chosen_chat_model(
    ctx: AppContext, configured_id: int | None, *, retrieval_only: bool
) -> int | None:
    """The chat model for the demo robot: the one from RAG_CHAT_*, else the first enabled chat
    model registered, else none (retrieval-only answers)."""
    if retrieval_only:
        return None
    if configured_id is not None:
        return configured_id
    async with ctx.sessionmaker() as session:
        statement = (
            select(Llm.id)
            .where(col(Llm.model_type) == ModelType.chat, col(Llm.status) == ENABLED)
            .order_by(col(Llm.id))
        )
        return (await session.exec(statement)).first()


async def ensure_robot(
    ctx: AppContext, owner: User, knowledge_id: int, chat_llm_id: int | None
) -> Found:
    """The demo robot, bound to the demo knowledge base with ``chat_llm_id``; an existing one
    is changed only where it differs."""
    async with ctx.sessionmaker() as session:
        robots = RobotService(session)
        statement = (
            select(Robot)
            .where(col(Robot.user_id) == owner.id, col(Robot.name) == ROBOT_NAME)
            .order_by(col(Robot.id))
        )
        existing = (await session.exec(statement)).first()
        if existing is None:
            created = await robots.create(
                owner,
                RobotCreate(
                    name=ROBOT_NAME,
                    description="Answers questions about rag_app from the demo knowledge base.",
                    knowledge_ids=[knowledge_id],
                    chat_llm_id=chat_llm_id,
                    top_k=3,
                    welcome_msg="Ask me about rag_app: knowledge bases, robots, retrieval.",
                    suggested_questions=list(DEFAULT_QUESTIONS),
                ),
            )
            return Found(created.id or 0, created.name, created=True)
        changes: dict[str, Any] = {}
        bound = await robots.knowledge_ids(existing.id or 0)
        if knowledge_id not in bound:
            changes["knowledge_ids"] = [*bound, knowledge_id]
        if existing.chat_llm_id != chat_llm_id:
            changes["chat_llm_id"] = chat_llm_id
        if existing.status != ENABLED:
            changes["status"] = ENABLED
        if changes:
            await robots.update(owner, existing.id or 0, RobotUpdate(**changes))
        return Found(existing.id or 0, existing.name, created=False)
