from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream
from litestar.status_codes import HTTP_202_ACCEPTED
from sqlmodel.ext.asyncio.session import AsyncSession

from rag_app.api.pagination import Page, PageParams
from rag_app.context import AppContext
from rag_app.db.models import User
from rag_app.db.models.document import DocumentStatus
from rag_app.domain.documents.schemas import (
    ChunkRead,
    DocumentRead,
    DocumentStatusRead,
    ReindexRead,
    UploadRead,
)
from rag_app.domain.documents.service import DocumentService, download_name
from rag_app.domain.documents.upload import receive_files

MB = 1024 * 1024


def provide_document_service(
    db_session: NamedDependency[AsyncSession], ctx: NamedDependency[AppContext]
) -> DocumentService:
    return DocumentService(db_session, ctx)


class DocumentController(Controller):
    """Documents of a knowledge base: upload, processing state, chunks, originals."""

    path = "/"
    tags = ["documents"]
    dependencies = {"documents": Provide(provide_document_service, sync_to_thread=False)}

    @post(
        "/knowledge/{knowledge_id:int}/documents",
        status_code=HTTP_202_ACCEPTED,
        summary="Upload files (multipart field 'files', repeated); processing runs in background",
        # No overall cap: upload.py limits each part to uploads.max_file_mb and the number of
        # parts, which bounds the body, and rejects an oversized file while it arrives.
        request_max_body_size=None,
    )
    async def upload(
        self,
        request: Request[Any, Any, Any],
        knowledge_id: FromPath[int],
        documents: NamedDependency[DocumentService],
        current_user: NamedDependency[User],
        ctx: NamedDependency[AppContext],
        replace: Annotated[
            bool, QueryParameter(description="Replace a document that has the same content")
        ] = False,
    ) -> UploadRead:
        # Ownership before the body is read: nobody streams files into someone else's base.
        knowledge = await documents.knowledge(current_user, knowledge_id)
        await ctx.job_queue.check()  # refuse before receiving anything if jobs cannot run
        limits = ctx.settings.uploads
        received = await receive_files(
            request,
            tmp_dir=ctx.settings.tmp_dir,
            max_file_bytes=limits.max_file_mb * MB,
            max_files=limits.max_files_per_request,
        )
        try:
            stored = await documents.upload(knowledge, received.files, replace=replace)
        finally:
            received.close()
        return UploadRead(items=[DocumentRead.model_validate(d) for d in stored])

    @get("/knowledge/{knowledge_id:int}/documents", summary="Documents of a knowledge base")
    async def list_documents(
        self,
        knowledge_id: FromPath[int],
        documents: NamedDependency[DocumentService],
        current_user: NamedDependency[User],
        page_params: NamedDependency[PageParams],
        status: Annotated[
            DocumentStatus | None, QueryParameter(description="Only this status")
        ] = None,
        name: Annotated[str | None, QueryParameter(description="Part of the file name")] = None,
    ) -> Page[DocumentRead]:
        knowledge = await documents.knowledge(current_user, knowledge_id)
        return await documents.list(knowledge, page_params, status=status, name=name)

    @post(
        "/knowledge/{knowledge_id:int}/reindex",
        status_code=HTTP_202_ACCEPTED,
        summary="Process every document again (e.g. after changing chunking)",
    )
    async def reindex(
        self,
        knowledge_id: FromPath[int],
        documents: NamedDependency[DocumentService],
        current_user: NamedDependency[User],
    ) -> ReindexRead:
        return await documents.reindex(await documents.knowledge(current_user, knowledge_id))

    @get("/documents/{document_id:int}", summary="One document")
    async def get_document(
        self,
        document_id: FromPath[int],
        documents: NamedDependency[DocumentService],
        current_user: NamedDependency[User],
    ) -> DocumentRead:
        return DocumentRead.model_validate(await documents.get(current_user, document_id))

    @get("/documents/{document_id:int}/status", summary="Processing status and progress")
    async def document_status(
        self,
        document_id: FromPath[int],
        documents: NamedDependency[DocumentService],
        current_user: NamedDependency[User],
    ) -> DocumentStatusRead:
        return DocumentStatusRead.model_validate(await documents.get(current_user, document_id))

    @get("/documents/{document_id:int}/chunks", summary="The document's chunks, in order")
    async def document_chunks(
        self,
        document_id: FromPath[int],
        documents: NamedDependency[DocumentService],
        current_user: NamedDependency[User],
        page_params: NamedDependency[PageParams],
    ) -> Page[ChunkRead]:
        document = await documents.get(current_user, document_id)
        return await documents.chunks(document, page_params)

    @get("/documents/{document_id:int}/download", summary="The original file")
    async def download(
        self,
        document_id: FromPath[int],
        documents: NamedDependency[DocumentService],
        current_user: NamedDependency[User],
        ctx: NamedDependency[AppContext],
    ) -> Stream:
        document = await documents.get(current_user, document_id)
        name = download_name(document)
        ascii_name = name.encode("ascii", "replace").decode().replace("?", "_").replace('"', "")
        disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
        return Stream(
            ctx.object_store.open(document.file_path),
            media_type=document.mime_type or "application/octet-stream",
            headers={"Content-Disposition": disposition},
        )

    @post(
        "/documents/{document_id:int}/retry",
        status_code=HTTP_202_ACCEPTED,
        summary="Process a failed document again",
    )
    async def retry(
        self,
        document_id: FromPath[int],
        documents: NamedDependency[DocumentService],
        current_user: NamedDependency[User],
    ) -> DocumentStatusRead:
        document = await documents.retry(await documents.get(current_user, document_id))
        return DocumentStatusRead.model_validate(document)

    @delete("/documents/{document_id:int}", summary="Delete a document and its chunks everywhere")
    async def delete_document(
        self,
        document_id: FromPath[int],
        documents: NamedDependency[DocumentService],
        current_user: NamedDependency[User],
    ) -> None:
        await documents.delete(await documents.get(current_user, document_id))
