"""Uploaded originals in a local folder (the embedded default)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import anyio

from rag_app.errors import BackendUnavailable, NotFound
from rag_app.storage.base import (
    READ_CHUNK_BYTES,
    Digest,
    Source,
    StoredObject,
    iterate_source,
    validate_key,
    validate_prefix,
)

# Upload chunks are gathered up to this size before a write, so a stream of small network
# chunks costs one thread hop per MiB rather than one per chunk.
WRITE_BUFFER_BYTES = 1024 * 1024
TEMP_SUFFIX = ".partial"


class LocalObjectStore:
    """Objects are files under ``root``; the key is the relative path."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = self.root / validate_key(key)
        # validate_key already rules out "..": this catches a symlink inside the folder that
        # points out of it. resolve() is a few metadata syscalls, cheap enough for the loop.
        if not path.resolve().is_relative_to(self.root):
            raise ValueError(f"object key resolves outside the store: {key!r}")
        return path

    async def put(
        self,
        key: str,
        source: Source,
        *,
        size: int | None = None,
        content_type: str | None = None,  # a file system keeps no content type
    ) -> StoredObject:
        path = self._path(key)
        digest = Digest(size)
        # Same directory as the target, so the final rename is atomic (same file system) and a
        # reader never sees half a file; the random part keeps concurrent uploads apart.
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
        committed = False
        try:
            await anyio.to_thread.run_sync(_make_parent, path)
            async with await anyio.open_file(temp, "xb") as file:
                buffer = bytearray()
                async for chunk in iterate_source(source):
                    digest.update(chunk)
                    buffer += chunk
                    if len(buffer) >= WRITE_BUFFER_BYTES:
                        await file.write(bytes(buffer))
                        buffer.clear()
                if buffer:
                    await file.write(bytes(buffer))
                stored = digest.finish(key)
                await anyio.to_thread.run_sync(_flush_to_disk, file.wrapped)
            await anyio.to_thread.run_sync(os.replace, temp, path)
            committed = True
            return stored
        finally:
            if not committed:
                # Shielded: a cancelled upload (client gone) must still remove its temp file.
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_unlink_quietly, temp)

    def open(self, key: str) -> AsyncIterator[bytes]:
        return _read_chunks(self._path(key), key)

    async def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await anyio.Path(path).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"object {key} does not exist") from None

    async def exists(self, key: str) -> bool:
        return await anyio.Path(self._path(key)).is_file()

    async def delete(self, key: str) -> None:
        await anyio.to_thread.run_sync(_unlink_quietly, self._path(key))

    async def delete_prefix(self, prefix: str) -> None:
        folder = self._path(validate_prefix(prefix))
        await anyio.to_thread.run_sync(_remove_tree, folder)

    async def check(self) -> None:
        await anyio.to_thread.run_sync(self._check_blocking)

    def _check_blocking(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendUnavailable(
                f"the file store folder {self.root} cannot be created ({exc.strerror})"
            ) from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise BackendUnavailable(f"the file store folder {self.root} is not writable")


async def _read_chunks(path: Path, key: str) -> AsyncIterator[bytes]:
    try:
        file = await anyio.open_file(path, "rb")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise NotFound(f"object {key} does not exist") from None
    async with file:
        while chunk := await file.read(READ_CHUNK_BYTES):
            yield chunk


def _make_parent(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)


def _flush_to_disk(file: IO[bytes]) -> None:
    # Without fsync a crash right after the rename can leave an empty file under the final name.
    file.flush()
    os.fsync(file.fileno())


def _unlink_quietly(path: Path) -> None:
    # A directory under the key means no object there (S3 semantics): nothing to delete.
    if path.is_file() or path.is_symlink():
        path.unlink(missing_ok=True)


def _remove_tree(folder: Path) -> None:
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder, ignore_errors=False)
