"""A BEIR corpus as a knowledge base: every record one document, ingested through the real path
(DocumentService.upload → job queue → parse → split → embed → vector and keyword stores), with
corpus ids and document ids mapped through file names (``<corpus id>.txt``)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from sqlalchemy import func
from sqlmodel import col, select

from indexes.specs import PACKAGED_EMBEDDING
from rag_app.db.models import Document, Knowledge, Llm, User
from rag_app.db.models.document import DocumentStatus
from rag_app.db.models.llm import ModelType
from rag_app.domain.common import ENABLED
from rag_app.domain.documents.service import DocumentService
from rag_app.domain.documents.upload import ReceivedFile, received_from_path
from rag_app.domain.knowledge.schemas import KnowledgeCreate
from rag_app.domain.knowledge.service import KnowledgeService
from rag_app.domain.recall.beir import CorpusRecord
from rag_app.errors import NotFound

if TYPE_CHECKING:
    from rag_app.context import AppContext

# Owner of the knowledge bases `rag-app eval` creates: a disabled account nobody can sign in
# with (its password hash is no valid hash).
EVAL_USERNAME = "rag-eval"
# all-MiniLM-L6-v2 reads at most 256 tokens: longer chunks would be embedded truncated.
EVAL_CHUNK_SIZE = 256
EVAL_CHUNK_OVERLAP = 32
POLL_SECONDS = 0.5
Progress = Callable[[int, int], None]  # (documents done, documents in all)


@dataclass
class CorpusIndex:
    """A knowledge base holding a corpus: which document is which corpus record."""

    knowledge: Knowledge
    corpus_ids: dict[int, str]  # document id -> corpus id
    notes: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


async def _eval_owner(ctx: AppContext) -> User:
    async with ctx.sessionmaker() as session:
        user = (await session.exec(select(User).where(col(User.username) == EVAL_USERNAME))).first()
        if user is None:
            user = User(
                username=EVAL_USERNAME,
                email=f"{EVAL_USERNAME}@localhost.invalid",
                password_hash="!",  # noqa: S106  (no valid hash: no sign-in)
                status=0,
            )
            session.add(user)
            await session.commit()
            await session.refresh(user)
        return user


async def _packaged_embedding(ctx: AppContext) -> Llm:
    """The embedded default's embedding model, registered once."""
    async with ctx.sessionmaker() as session:
        statement = select(Llm).where(
            col(Llm.provider) == "local",
            col(Llm.model_name) == PACKAGED_EMBEDDING,
            col(Llm.model_type) == ModelType.embedding,
            col(Llm.status) == ENABLED,
        )
        llm = (await session.exec(statement.order_by(col(Llm.id)))).first()
        if llm is None:
            llm = Llm(
                name=f"{PACKAGED_EMBEDDING} (packaged)",
                model_type=ModelType.embedding,
                provider="local",
                model_name=PACKAGED_EMBEDDING,
                dimension=384,
            )
            session.add(llm)
            await session.commit()
            await session.refresh(llm)
        return llm


async def create_eval_knowledge(ctx: AppContext, name: str) -> Knowledge:
    """A new knowledge base of the embedded default (packaged embedding model, BM25 keyword
    index), owned by the eval account."""
    owner = await _eval_owner(ctx)
    llm = await _packaged_embedding(ctx)
    async with ctx.sessionmaker() as session:
        data = KnowledgeCreate(
            name=name[:100],
            description="Created by `rag-app eval`",
            embed_llm_id=llm.id or 0,
            chunk_size=EVAL_CHUNK_SIZE,
            chunk_overlap=EVAL_CHUNK_OVERLAP,
        )
        return await KnowledgeService(session, ctx).create(owner, data)


def _file_stem(corpus_id: str, used: set[str]) -> str:
    stem = re.sub(r"[\\/\x00-\x1f]", "_", corpus_id).lstrip(". ") or "record"
    unique, number = stem, 1
    while unique in used:
        number += 1
        unique = f"{stem}~{number}"
    used.add(unique)
    return unique


async def ingest_corpus(
    ctx: AppContext,
    knowledge: Knowledge,
    records: Iterable[CorpusRecord],
    progress: Progress,
) -> CorpusIndex:
    """Upload every record as ``<corpus id>.txt`` and wait until all are processed. Empty
    records and repeated texts (a knowledge base refuses the same content twice) are skipped
    and noted."""
    index = CorpusIndex(knowledge, {})
    batch_size = ctx.settings.uploads.max_files_per_request
    with tempfile.TemporaryDirectory(prefix="eval-", dir=ctx.settings.tmp_dir) as tmp:
        paths, corpus_ids = await asyncio.to_thread(_write_records, records, Path(tmp), index)
        total = len(paths)
        progress(0, total)
        for start in range(0, total, batch_size):
            batch = paths[start : start + batch_size]
            received = await asyncio.to_thread(_received, batch)
            async with ctx.sessionmaker() as session:
                stored = await DocumentService(session, ctx).upload(
                    knowledge, received, replace=False
                )
            for document, corpus_id in zip(
                stored, corpus_ids[start : start + batch_size], strict=True
            ):
                index.corpus_ids[document.id or 0] = corpus_id
    await _wait(ctx, knowledge.id or 0, total, progress)
    index.failed = await _failures(ctx, knowledge.id or 0)
    return index


def _received(paths: list[Path]) -> list[ReceivedFile]:
    return [received_from_path(path) for path in paths]


def _write_records(
    records: Iterable[CorpusRecord], folder: Path, index: CorpusIndex
) -> tuple[list[Path], list[str]]:
    paths: list[Path] = []
    corpus_ids: list[str] = []
    seen: dict[str, str] = {}
    used: set[str] = set()
    empty: list[str] = []
    repeated: list[str] = []
    for record in records:
        data = record.text.encode("utf-8")
        if not record.text.strip():
            empty.append(record.corpus_id)
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            repeated.append(f"{record.corpus_id} (= {seen[digest]})")
            continue
        seen[digest] = record.corpus_id
        path = folder / f"{_file_stem(record.corpus_id, used)}.txt"
        path.write_bytes(data)
        paths.append(path)
        corpus_ids.append(record.corpus_id)
    if empty:
        index.notes.append(f"{len(empty)} empty record(s) skipped: {', '.join(empty[:5])}")
    if repeated:
        index.notes.append(
            f"{len(repeated)} record(s) repeating an earlier text skipped: "
            + ", ".join(repeated[:5])
        )
    return paths, corpus_ids


async def _wait(ctx: AppContext, knowledge_id: int, total: int, progress: Progress) -> None:
    terminal = (DocumentStatus.completed, DocumentStatus.failed)
    done = -1
    while done < total:
        async with ctx.sessionmaker() as session:
            statement = select(func.count()).where(
                col(Document.knowledge_id) == knowledge_id, col(Document.status).in_(terminal)
            )
            now = int((await session.exec(statement)).one())
        if now != done:
            done = now
            progress(done, total)
        if done < total:
            await asyncio.sleep(POLL_SECONDS)


async def _failures(ctx: AppContext, knowledge_id: int) -> list[str]:
    async with ctx.sessionmaker() as session:
        rows = await session.exec(
            select(Document.file_name, Document.error_msg).where(
                col(Document.knowledge_id) == knowledge_id,
                col(Document.status) == DocumentStatus.failed,
            )
        )
        return [f"{name}: {error}" for name, error in rows.all()]


async def existing_corpus(ctx: AppContext, knowledge_id: int, known_ids: set[str]) -> CorpusIndex:
    """A knowledge base whose documents are named after corpus ids (``<id>`` or ``<id>.<ext>``):
    its processed documents, mapped. ``known_ids``: the dataset's ids, to tell an id holding a
    dot from an extension."""
    async with ctx.sessionmaker() as session:
        knowledge = await session.get(Knowledge, knowledge_id)
        if knowledge is None:
            raise NotFound(f"knowledge base {knowledge_id} not found")
        rows = (
            await session.exec(
                select(Document.id, Document.file_name, Document.status).where(
                    col(Document.knowledge_id) == knowledge_id
                )
            )
        ).all()
    index = CorpusIndex(knowledge, {})
    unfinished = 0
    for document_id, file_name, status in rows:
        if status != DocumentStatus.completed:
            unfinished += 1
            continue
        stem = PurePath(file_name).stem
        corpus_id = file_name if file_name in known_ids and stem not in known_ids else stem
        index.corpus_ids[document_id or 0] = corpus_id
    if unfinished:
        index.notes.append(f"{unfinished} document(s) not completed (left out)")
    if not index.corpus_ids:
        raise NotFound(f"knowledge base {knowledge_id} has no processed documents")
    return index
