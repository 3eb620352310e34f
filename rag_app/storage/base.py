"""The object store protocol for uploaded originals, and the rules both implementations share.

Keys are relative paths produced by the caller ("kb/12/doc/34/original.pdf"). They are validated
here, not trusted: the local store turns them into file paths, so a key is the one place a path
traversal could slip in.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

# What put() accepts: the whole body, or chunks as the upload handler receives them.
Source = AsyncIterator[bytes] | bytes

# S3 caps keys at 1024 bytes; common file systems cap one path segment at 255 bytes. Enforcing
# both everywhere keeps a key valid whichever backend a deployment switches to.
MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255

# Size of the chunks handed out by open(): large enough to keep per-chunk overhead (one thread
# hop each) small, small enough to keep a download's memory flat.
READ_CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str  # hex digest of the stored bytes, computed while they streamed through


@runtime_checkable
class ObjectStore(Protocol):
    """Where uploaded originals live: a local folder or an S3-compatible bucket.

    Every method validates its key (``ValueError`` on an unsafe one) and raises
    ``rag_app.errors.BackendUnavailable`` when the backend cannot be reached.
    """

    async def put(
        self,
        key: str,
        source: Source,
        *,
        size: int | None = None,
        content_type: str | None = None,
    ) -> StoredObject:
        """Store ``source`` under ``key``, replacing any object there.

        All or nothing: if ``source`` raises, or delivers a different number of bytes than a
        declared ``size`` (``ValueError``), no object is left behind and an existing one stays.
        """
        ...

    def open(self, key: str) -> AsyncIterator[bytes]:
        """A streamed read: ``async for chunk in store.open(key)``.

        Lazy, so that it can be handed straight to a streaming response: the key is validated
        at once, but ``NotFound`` for a missing object surfaces at the first iteration. A
        handler that must answer 404 rather than break off a started 200 checks
        ``exists()`` (or its own database row) first.
        """
        ...

    async def get_bytes(self, key: str) -> bytes:
        """The whole object (``NotFound`` when missing)."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove one object; a missing object is not an error."""
        ...

    async def delete_prefix(self, prefix: str) -> None:
        """Remove every object whose key lies under the folder ``prefix`` ("kb/12" or "kb/12/").

        Folder semantics on every backend: "kb/1" never touches "kb/12/...".
        """
        ...

    async def check(self) -> None:
        """Readiness: raise ``BackendUnavailable`` with a reason a person can act on."""
        ...


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise ``ValueError``."""
    if not isinstance(key, str) or not key:
        raise ValueError("object key must be a non-empty string")
    if "\\" in key:
        raise ValueError(f"object key must not contain backslashes: {key!r}")
    if key.startswith("/"):
        raise ValueError(f"object key must be relative, not start with '/': {key!r}")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in key):
        raise ValueError(f"object key must not contain control characters: {key!r}")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ValueError(f"object key is longer than {MAX_KEY_BYTES} bytes")
    for segment in key.split("/"):
        # Empty segments ("a//b", a trailing "/") name directories, not objects, and map to
        # different objects on S3 than on a file system.
        if segment in ("", ".", ".."):
            raise ValueError(f"object key has an empty, '.' or '..' segment: {key!r}")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise ValueError(f"object key has a segment longer than {MAX_SEGMENT_BYTES} bytes")
    return key


def validate_prefix(prefix: str) -> str:
    """Normalise a folder prefix to "a/b" (no trailing slash), validated like a key.

    An empty prefix is refused: "delete everything" is never what a caller computing
    "kb/<id>" meant.
    """
    if not isinstance(prefix, str):
        raise ValueError("object prefix must be a string")
    return validate_key(prefix[:-1] if prefix.endswith("/") else prefix)


class Digest:
    """Counts and hashes bytes as they stream through, and enforces a declared size."""

    def __init__(self, expected_size: int | None) -> None:
        if expected_size is not None and expected_size < 0:
            raise ValueError("size must not be negative")
        self.expected_size = expected_size
        self.size = 0
        self._sha256 = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.expected_size is not None and self.size > self.expected_size:
            raise ValueError(f"the stream is longer than the declared {self.expected_size} bytes")
        self._sha256.update(chunk)

    def finish(self, key: str) -> StoredObject:
        """Call at end of stream; raises when fewer bytes arrived than declared."""
        if self.expected_size is not None and self.size != self.expected_size:
            raise ValueError(
                f"the stream ended after {self.size} of the declared {self.expected_size} bytes"
            )
        return StoredObject(key=key, size=self.size, sha256=self._sha256.hexdigest())


async def iterate_source(source: Source) -> AsyncIterator[bytes]:
    """One async iteration for both kinds of source."""
    if isinstance(source, bytes | bytearray | memoryview):
        if source:
            yield bytes(source)
        return
    async for chunk in source:
        if chunk:
            yield chunk
