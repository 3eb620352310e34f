"""Uploaded originals in an S3-compatible bucket (MinIO, SeaweedFS, AWS ...) via ``minio``.

The minio client is synchronous, so every call runs in a worker thread. Uploads stream: minio
pulls parts from a file-like adapter that fetches chunks from the caller's async iterator on the
event loop, so at most one part (``part_size``) of an upload is held in memory.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO, TypeVar, cast

import anyio
import anyio.from_thread
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import MaxRetryError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from rag_app.errors import BackendUnavailable, NotFound, RagAppError
from rag_app.storage.base import (
    READ_CHUNK_BYTES,
    Digest,
    Source,
    StoredObject,
    iterate_source,
    validate_key,
    validate_prefix,
)

T = TypeVar("T")

# S3's smallest multipart part is 5 MiB and a multipart upload has at most 10,000 parts: 8 MiB
# parts allow objects up to ~78 GiB while keeping one upload's memory at one part.
DEFAULT_PART_SIZE = 8 * 1024 * 1024
# minio's own default is 5 minutes per socket operation and 5 retries: a dead endpoint would
# hang a request (and the readiness probe) for minutes. Connecting to a live host on a LAN takes
# milliseconds; a server that accepted the connection answers within seconds.
DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_READ_TIMEOUT = 15.0

# Codes meaning "who you are" was refused, as opposed to "what you asked for" failed. minio
# reports a bodiless 403 (HEAD requests) as AccessDenied.
CREDENTIAL_ERRORS = frozenset(
    {
        "AccessDenied",
        "AuthorizationHeaderMalformed",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
    }
)
MISSING_ERRORS = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject"})


class _UploadAborted(Exception):
    """Raised into minio when the upload's source was cancelled, so that minio (which only
    catches ``Exception``) still aborts its multipart upload."""


class S3ObjectStore:
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        region: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
    ) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self._region = region
        self._part_size = part_size
        http_client = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            # One retry covers a pooled keep-alive connection the server closed meanwhile;
            # more would multiply the time a dead endpoint takes to fail.
            retries=urllib3.Retry(total=1, connect=1, read=1, redirect=0, backoff_factor=0.2),
            maxsize=16,
        )
        # Raises ValueError on a malformed endpoint (scheme, path); the factory reports it.
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http_client,
        )
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    # -- the protocol ---------------------------------------------------------------------

    async def put(
        self,
        key: str,
        source: Source,
        *,
        size: int | None = None,
        content_type: str | None = None,
    ) -> StoredObject:
        validate_key(key)
        reader = _AsyncSourceReader(iterate_source(source), Digest(size), key)
        try:
            await anyio.to_thread.run_sync(self._put_blocking, key, reader, content_type)
        except Exception as exc:
            if reader.error is not None:
                # The caller's stream failed (or was too long/short): its error, not ours.
                raise reader.error from None
            error = self._translate(exc)
            if error is None:
                raise
            raise error from exc
        finally:
            with anyio.CancelScope(shield=True):
                await reader.aclose()
        assert reader.stored is not None  # minio returns only after reading to the end
        return reader.stored

    def open(self, key: str) -> AsyncIterator[bytes]:
        validate_key(key)
        return self._stream(key)

    async def get_bytes(self, key: str) -> bytes:
        validate_key(key)
        return await self._run(self._get_bytes_blocking, key)

    async def exists(self, key: str) -> bool:
        validate_key(key)
        return await self._run(self._exists_blocking, key)

    async def delete(self, key: str) -> None:
        validate_key(key)
        await self._run(self._delete_blocking, key)

    async def delete_prefix(self, prefix: str) -> None:
        folder = validate_prefix(prefix)
        await self._run(self._delete_prefix_blocking, folder + "/")

    async def check(self) -> None:
        await self._run(self._check_blocking)

    # -- blocking halves, run in worker threads -------------------------------------------

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if self._bucket_ready:
                return
            if not self._client.bucket_exists(self.bucket):
                try:
                    self._client.make_bucket(self.bucket, location=self._region)
                except S3Error as exc:
                    # Another process (a second API server, a worker) won the race.
                    if exc.code != "BucketAlreadyOwnedByYou":
                        raise
            self._bucket_ready = True

    def _check_blocking(self) -> None:
        # Always one request: readiness must notice a server that went away since start-up.
        if self._client.bucket_exists(self.bucket):
            self._bucket_ready = True
        else:
            self._bucket_ready = False
            self._ensure_bucket()

    def _put_blocking(self, key: str, reader: _AsyncSourceReader, content_type: str | None) -> None:
        self._ensure_bucket()
        # length=-1 even when the size is known: minio then reads until end of stream, so the
        # Digest sees every byte and can reject a stream longer than declared before minio
        # completes the upload. minio aborts the multipart upload when read() raises.
        self._client.put_object(
            self.bucket,
            key,
            cast(BinaryIO, reader),
            length=-1,
            part_size=self._part_size,
            content_type=content_type or "application/octet-stream",
            num_parallel_uploads=1,
        )

    def _get_blocking(self, key: str) -> urllib3.BaseHTTPResponse:
        self._ensure_bucket()
        try:
            return self._client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in MISSING_ERRORS:
                raise NotFound(f"object {key} does not exist") from None
            raise

    def _get_bytes_blocking(self, key: str) -> bytes:
        response = self._get_blocking(key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def _exists_blocking(self, key: str) -> bool:
        self._ensure_bucket()
        try:
            self._client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in MISSING_ERRORS:
                return False
            raise
        return True

    def _delete_blocking(self, key: str) -> None:
        self._ensure_bucket()
        self._client.remove_object(self.bucket, key)

    def _delete_prefix_blocking(self, prefix: str) -> None:
        self._ensure_bucket()
        listing = self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
        doomed = (DeleteObject(item.object_name) for item in listing if item.object_name)
        # remove_objects is lazy: nothing is deleted until its error iterator is consumed.
        failures = list(self._client.remove_objects(self.bucket, doomed))
        if failures:
            codes = sorted({failure.code or "unknown" for failure in failures})
            raise BackendUnavailable(
                f"the object store at {self.endpoint} refused to delete {len(failures)} "
                f"objects under {prefix} ({', '.join(codes)})"
            )

    # -- plumbing -------------------------------------------------------------------------

    async def _run(self, func: Callable[..., T], *args: object) -> T:
        try:
            return await anyio.to_thread.run_sync(func, *args)
        except RagAppError:
            raise
        except Exception as exc:
            error = self._translate(exc)
            if error is None:
                raise
            raise error from exc

    async def _stream(self, key: str) -> AsyncIterator[bytes]:
        response = await self._run(self._get_blocking, key)
        try:
            while chunk := await self._run(response.read, READ_CHUNK_BYTES):
                yield chunk
        finally:
            # Closing drops the connection instead of draining an unread body into the pool.
            response.close()
            response.release_conn()

    def _translate(self, exc: Exception) -> BackendUnavailable | None:
        """Turn a transport or S3 failure into a BackendUnavailable a person can act on.

        Messages name the endpoint and the bucket, never the keys: the secret must not reach a
        response body or a log line, and the access key is half of the credential.
        """
        where = f"the object store at {self.endpoint}"
        if isinstance(exc, S3Error):
            if exc.code in CREDENTIAL_ERRORS:
                return BackendUnavailable(
                    f"{where} rejected the credentials (storage.s3_access_key / "
                    f"storage.s3_secret_key) for bucket {self.bucket}"
                )
            if exc.code == "NoSuchBucket":
                self._bucket_ready = False  # deleted behind our back: recreate on next use
                return BackendUnavailable(f"{where} has no bucket {self.bucket}")
            return BackendUnavailable(f"{where} failed the request: {exc.code}")
        if isinstance(exc, ServerError):
            return BackendUnavailable(f"{where} answered HTTP {exc.status_code}")
        if isinstance(exc, InvalidResponseError):
            return BackendUnavailable(f"{where} does not answer like an S3 server")
        if isinstance(exc, MaxRetryError) and isinstance(exc.reason, SSLError):
            return BackendUnavailable(f"{where} failed the TLS handshake (check storage.s3_secure)")
        if isinstance(exc, MaxRetryError) and isinstance(exc.reason, Urllib3Timeout):
            return BackendUnavailable(f"{where} is not reachable (timed out)")
        if isinstance(exc, Urllib3Error | OSError):
            return BackendUnavailable(f"{where} is not reachable")
        return None


class _AsyncSourceReader:
    """A blocking ``read()`` over an async iterator, for minio running in a worker thread.

    Each ``read(n)`` makes one trip to the event loop that gathers chunks until ``n`` bytes are
    buffered (minio asks for whole parts), hashing them on the way in.
    """

    def __init__(self, chunks: AsyncIterator[bytes], digest: Digest, key: str) -> None:
        self._chunks = chunks
        self._digest = digest
        self._key = key
        self._buffer = bytearray()
        self._eof = False
        self.error: BaseException | None = None
        self.stored: StoredObject | None = None

    def read(self, size: int = -1) -> bytes:
        if self.error is not None:
            raise _UploadAborted("the upload source already failed")
        if not self._eof and (size < 0 or len(self._buffer) < size):
            try:
                anyio.from_thread.run(self._fill, size)
            except Exception as exc:
                self.error = exc
                raise
            except BaseException as exc:
                self.error = exc
                raise _UploadAborted("the upload was cancelled") from exc
        if size < 0 or size >= len(self._buffer):
            data = bytes(self._buffer)
            self._buffer.clear()
        else:
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
        return data

    async def _fill(self, size: int) -> None:
        while size < 0 or len(self._buffer) < size:
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self._eof = True
                self.stored = self._digest.finish(self._key)
                return
            self._digest.update(chunk)
            self._buffer += chunk

    async def aclose(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()
