"""Receive multipart uploads as a stream, one temporary file per part.

Litestar's own multipart parsing reads each file completely before the handler runs; here the
same parser library (``multipart``) is driven from the request stream so the per-file size
limit stops an oversized upload as soon as it is exceeded, and nothing reaches the object
store or the database before every file of the request has passed its checks.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
from litestar import Request
from litestar._multipart import parse_content_header
from multipart import (
    MultipartSegment,
    ParserError,
    ParserLimitReached,
    PushMultipartParser,
)

from indexes.filetypes import HEAD_BYTES
from rag_app.errors import PayloadTooLarge, ValidationFailed

FILES_FIELD = "files"


@dataclass
class ReceivedFile:
    file_name: str
    path: Path
    content_type: str | None
    size: int = 0
    head: bytes = b""
    _hash: Any = field(default_factory=hashlib.sha256)

    @property
    def sha256(self) -> str:
        return str(self._hash.hexdigest())

    def _take(self, handle: IO[bytes], chunk: bytes) -> None:
        handle.write(chunk)
        self._count(chunk)

    def _count(self, chunk: bytes) -> None:
        """Hash, size and the head that file-type sniffing reads, as the bytes go by."""
        self._hash.update(chunk)
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[: HEAD_BYTES - len(self.head)]
        self.size += len(chunk)


class ReceivedFiles:
    """The files of one request; ``close()`` removes the temporary files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files: list[ReceivedFile] = []

    def close(self) -> None:
        for received in self.files:
            received.path.unlink(missing_ok=True)


async def receive_files(
    request: Request[Any, Any, Any], *, tmp_dir: Path, max_file_bytes: int, max_files: int
) -> ReceivedFiles:
    content_type, options = parse_content_header(request.headers.get("content-type", ""))
    boundary = options.get("boundary")
    if content_type != "multipart/form-data" or not boundary:
        raise ValidationFailed(
            "send the files as multipart/form-data in the form field 'files'", field="files"
        )
    received = ReceivedFiles(tmp_dir)
    try:
        await _parse(request.stream(), boundary.encode(), received, max_file_bytes, max_files)
    except BaseException:
        received.close()
        raise
    if not received.files:
        received.close()
        raise ValidationFailed("no file was sent in the form field 'files'", field="files")
    return received


async def _parse(
    stream: AsyncIterator[bytes],
    boundary: bytes,
    received: ReceivedFiles,
    max_file_bytes: int,
    max_files: int,
) -> None:
    current: ReceivedFile | None = None
    handle: IO[bytes] | None = None
    limit_mb = max_file_bytes // (1024 * 1024)
    try:
        with PushMultipartParser(
            boundary, max_segment_size=max_file_bytes, max_segment_count=max_files + 20
        ) as parser:
            chunks = _with_end_marker(stream)
            while not parser.closed:
                chunk = await anext(chunks)
                for part in parser.parse(chunk):
                    if isinstance(part, MultipartSegment):
                        current, handle = _start_part(part, received, max_files)
                    elif part and current is not None and handle is not None:
                        await anyio.to_thread.run_sync(current._take, handle, part)
                    elif not part and handle is not None:
                        handle.close()
                        current, handle = None, None
    except ParserLimitReached as exc:
        name = f"'{current.file_name}' " if current else ""
        raise PayloadTooLarge(
            f"the file {name}is larger than the limit of {limit_mb} MB", limit_mb=limit_mb
        ) from exc
    except ParserError as exc:
        raise ValidationFailed(f"the multipart body is malformed: {exc}", field="files") from exc
    finally:
        if handle is not None:
            handle.close()


async def _with_end_marker(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The body's chunks, then empty chunks: the parser takes b"" as end of input."""
    async for chunk in stream:
        if chunk:
            yield chunk
    while True:
        yield b""


def _start_part(
    part: MultipartSegment, received: ReceivedFiles, max_files: int
) -> tuple[ReceivedFile | None, IO[bytes] | None]:
    if part.name != FILES_FIELD or part.filename is None:
        return None, None  # other form fields are ignored; options travel in the query
    if len(received.files) >= max_files:
        raise PayloadTooLarge(f"at most {max_files} files can be uploaded in one request")
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115  (closed at the end of the part)
        dir=received.directory, prefix="upload-", delete=False
    )
    received_file = ReceivedFile(
        file_name=part.filename, path=Path(handle.name), content_type=part.content_type
    )
    received.files.append(received_file)
    return received_file, handle


def received_from_path(path: Path) -> ReceivedFile:
    """A local file presented like an uploaded one (the CLI ingests through the same checks)."""
    received = ReceivedFile(file_name=path.name, path=path, content_type=None)
    with path.open("rb") as source:
        while chunk := source.read(1024 * 1024):
            received._count(chunk)
    return received
