"""Documents: upload checks, storage, processing state, chunks, deletion everywhere."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import anyio
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from indexes.errors import UnsupportedFileType
from indexes.filetypes import detect_file_type, safe_file_name
from rag_app.api.pagination import Page, PageParams
from rag_app.db.models import Document, Knowledge, User
from rag_app.db.models.document import IN_PROGRESS, DocumentStatus
from rag_app.domain.common import paginate
from rag_app.domain.documents.schemas import ChunkRead, DocumentRead, ReindexRead
from rag_app.domain.documents.upload import ReceivedFile
from rag_app.domain.knowledge.service import KnowledgeService, like_pattern
from rag_app.errors import Conflict, NotFound, UnsupportedMediaType, ValidationFailed
from rag_app.indexing.access import open_index

if TYPE_CHECKING:
    from rag_app.context import AppContext

logger = logging.getLogger("rag_app.documents")


def original_key(knowledge_id: int, document_id: int, file_name: str) -> str:
    return f"kb/{knowledge_id}/doc/{document_id}/{file_name}"


class DocumentService:
    def __init__(self, session: AsyncSession, ctx: AppContext) -> None:
        self.session = session
        self.ctx = ctx

    async def knowledge(self, user: User, knowledge_id: int) -> Knowledge:
        return await KnowledgeService(self.session).get(user, knowledge_id)

    async def get(self, user: User, document_id: int) -> Document:
        document = await self.session.get(Document, document_id)
        if document is not None:
            try:
                await self.knowledge(user, document.knowledge_id)
                return document
            except NotFound:
                pass
        raise NotFound(f"document {document_id} not found")

    async def upload(
        self, knowledge: Knowledge, files: Sequence[ReceivedFile], *, replace: bool
    ) -> list[Document]:
        """Check every file first; only then store originals and rows, all or nothing."""
        checked = [self._check(received) for received in files]
        self._reject_duplicates_within(checked)
        existing = await self._existing_by_hash(knowledge.id or 0, [c.sha256 for c, _ in checked])
        if existing and not replace:
            names = "; ".join(
                f"'{received.file_name}' has the same content as document {doc.id} "
                f"('{doc.file_name}')"
                for received, _ in checked
                if (doc := existing.get(received.sha256)) is not None
            )
            raise Conflict(
                f"{names}. Upload with ?replace=true to replace it.",
                existing_document_ids=sorted(d.id for d in existing.values() if d.id),
            )
        stored_keys: list[str] = []
        replaced_keys: list[str] = []  # originals of replaced documents, dropped on success
        documents: list[Document] = []
        try:
            for received, extension in checked:
                document = existing.get(received.sha256)
                if document is None:
                    document = Document(
                        knowledge_id=knowledge.id or 0,
                        file_name=received.file_name,
                        file_extension=extension,
                        file_path="",
                    )
                elif document.file_path:
                    replaced_keys.append(document.file_path)
                self._describe(document, received, extension)
                self.session.add(document)
                documents.append(document)
            # One flush for all: assigns the ids the storage keys need (one INSERT for the new
            # rows), and the keys go out in one UPDATE at commit.
            await self.session.flush()
            for document, (received, _) in zip(documents, checked, strict=True):
                document.file_path = original_key(
                    document.knowledge_id, document.id or 0, received.file_name
                )
                await self._store(received, document.file_path)
                stored_keys.append(document.file_path)
            await self.session.commit()
        except BaseException:
            await self.session.rollback()
            for key in stored_keys:
                await self._delete_original(key)
            raise
        for key in set(replaced_keys) - set(stored_keys):
            await self._delete_original(key)
        await KnowledgeService(self.session).recount(knowledge.id or 0)
        await self._enqueue([document.id or 0 for document in documents])
        return documents

    async def _enqueue(self, document_ids: list[int]) -> None:
        """Queue saved documents. A queue that fails now (checked just before) leaves them in
        ``uploading``, where the stale-job sweep finds and queues them again: nothing is lost."""
        try:
            await self.ctx.job_queue.enqueue(document_ids)
        except Exception:
            logger.exception("documents %s saved but not queued; the sweep will", document_ids)

    @staticmethod
    def _describe(document: Document, received: ReceivedFile, extension: str) -> None:
        document.file_name = received.file_name
        document.file_extension = extension
        document.file_size = received.size
        document.mime_type = received.content_type
        document.content_hash = received.sha256
        document.status = DocumentStatus.uploading
        document.progress = 0
        document.chunk_count = 0
        document.error_msg = None
        document.job_id = None

    def _check(self, received: ReceivedFile) -> tuple[ReceivedFile, str]:
        received.file_name = safe_file_name(received.file_name)
        if received.size == 0:
            raise ValidationFailed(f"'{received.file_name}' is empty", field="files")
        try:
            file_type = detect_file_type(received.head, received.file_name)
        except UnsupportedFileType as exc:
            raise UnsupportedMediaType(f"'{received.file_name}': {exc}") from exc
        received.content_type = file_type.mime_type
        return received, file_type.extension

    @staticmethod
    def _reject_duplicates_within(checked: Sequence[tuple[ReceivedFile, str]]) -> None:
        seen: dict[str, str] = {}
        for received, _ in checked:
            if received.sha256 in seen:
                raise ValidationFailed(
                    f"'{received.file_name}' and '{seen[received.sha256]}' have the same "
                    "content; upload it once",
                    field="files",
                )
            seen[received.sha256] = received.file_name

    async def _existing_by_hash(self, knowledge_id: int, hashes: list[str]) -> dict[str, Document]:
        rows = await self.session.exec(
            select(Document).where(
                col(Document.knowledge_id) == knowledge_id, col(Document.content_hash).in_(hashes)
            )
        )
        return {doc.content_hash: doc for doc in rows.all() if doc.content_hash}

    async def _store(self, received: ReceivedFile, key: str) -> None:
        async def chunks():  # type: ignore[no-untyped-def]
            async with await anyio.open_file(received.path, "rb") as handle:
                while chunk := await handle.read(1024 * 1024):
                    yield chunk

        await self.ctx.object_store.put(
            key, chunks(), size=received.size, content_type=received.content_type
        )

    async def _delete_original(self, key: str) -> None:
        try:
            await self.ctx.object_store.delete(key)
        except Exception:  # best effort: an orphaned original is harmless, a lost row is not
            logger.exception("could not delete stored original %s", key)

    async def list(
        self,
        knowledge: Knowledge,
        params: PageParams,
        status: DocumentStatus | None = None,
        name: str | None = None,
    ) -> Page[DocumentRead]:
        statement = (
            select(Document)
            .where(col(Document.knowledge_id) == knowledge.id)
            .order_by(col(Document.id).desc())
        )
        if status is not None:
            statement = statement.where(col(Document.status) == status)
        if name:
            statement = statement.where(col(Document.file_name).like(like_pattern(name)))
        return await paginate(self.session, statement, params, DocumentRead.model_validate)

    async def chunks(self, document: Document, params: PageParams) -> Page[ChunkRead]:
        knowledge = await self.session.get(Knowledge, document.knowledge_id)
        if knowledge is None:
            raise NotFound(f"document {document.id} not found")
        index = await open_index(self.ctx, self.session, knowledge)
        chunks, total = await anyio.to_thread.run_sync(
            index.list_chunks, document.id or 0, params.offset, params.page_size
        )
        return Page[ChunkRead](
            items=[
                ChunkRead(
                    id=chunk.node_id,
                    position=chunk.position,
                    text=chunk.text,
                    metadata=chunk.metadata,
                )
                for chunk in chunks
            ],
            total=total,
            page=params.page,
            page_size=params.page_size,
        )

    async def retry(self, document: Document) -> Document:
        if document.status != DocumentStatus.failed:
            raise Conflict(
                f"document {document.id} is {document.status}; only a failed document can be "
                "retried"
            )
        await self.ctx.job_queue.check()
        await self._queue_again(document)
        await self.session.commit()
        await self._enqueue([document.id or 0])
        return document

    async def _queue_again(self, document: Document) -> None:
        document.status = DocumentStatus.uploading
        document.progress = 0
        document.error_msg = None
        document.job_id = None
        self.session.add(document)

    async def reindex(self, knowledge: Knowledge) -> ReindexRead:
        await self.ctx.job_queue.check()
        rows = await self.session.exec(
            select(Document).where(col(Document.knowledge_id) == knowledge.id)
        )
        queued: list[int] = []
        busy = 0
        for document in rows.all():
            if document.status in IN_PROGRESS:
                busy += 1
                continue
            await self._queue_again(document)
            queued.append(document.id or 0)
        await self.session.commit()
        await self._enqueue(queued)
        return ReindexRead(queued=len(queued), skipped_in_progress=busy)

    async def delete(self, document: Document) -> None:
        """Chunks first, then the original, then the row: if a store is down the request fails
        (503) with the document intact, and deleting again later finishes the job."""
        knowledge = await self.session.get(Knowledge, document.knowledge_id)
        if knowledge is not None:
            index = await open_index(self.ctx, self.session, knowledge)
            await anyio.to_thread.run_sync(index.delete_document, document.id or 0)
        if document.file_path:
            await self.ctx.object_store.delete(document.file_path)
        await self.session.delete(document)
        await self.session.commit()
        await KnowledgeService(self.session).recount(document.knowledge_id)


def download_name(document: Document) -> str:
    return PurePosixPath(document.file_name).name or f"document-{document.id}"
