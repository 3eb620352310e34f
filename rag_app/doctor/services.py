"""Redis and the object store (local folder or S3)."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis
from minio.error import S3Error
from redis.exceptions import AuthenticationError, ResponseError
from urllib3.exceptions import HTTPError as Urllib3Error

from rag_app.doctor.common import (
    CheckResult,
    hide_password,
    ok,
    problem,
    run_coroutine,
    skipped,
    unwritable_reason,
)
from rag_app.errors import BackendUnavailable, ConfigurationError
from rag_app.settings import Settings
from rag_app.storage.factory import build_object_store
from rag_app.storage.s3 import CREDENTIAL_ERRORS, S3ObjectStore


def check_redis(settings: Settings, timeout: float) -> CheckResult:
    url = settings.redis.url
    if not url:
        return skipped(
            "redis", "not configured: caches, chat memory and the job queue stay in process"
        )
    shown = hide_password(url)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    except ValueError as exc:
        return problem(
            "redis",
            f"redis.url {shown} is not usable: {exc}",
            "set RAG_REDIS__URL to redis://host:6379/0",
        )
    try:
        client.ping()
    except (AuthenticationError, ResponseError) as exc:
        # ResponseError: "NOAUTH Authentication required" when no password was sent.
        return problem(
            "redis",
            f"Redis at {shown} refused the credentials: {exc}",
            "check the password in RAG_REDIS__URL (redis://:password@host:6379/0)",
        )
    except redis.RedisError as exc:
        parts = urlsplit(url)
        return problem(
            "redis",
            f"Redis at {shown} is not reachable: {exc}",
            f"start Redis on {parts.hostname}:{parts.port or 6379}, or correct RAG_REDIS__URL "
            "(unset it to keep queues and caches in process)",
        )
    finally:
        client.close()
    return ok("redis", f"Redis at {shown} answers PING")


def check_object_store(settings: Settings, timeout: float) -> CheckResult:
    if settings.storage.backend == "local":
        folder = settings.files_dir
        reason = unwritable_reason(folder)
        if reason:
            return problem(
                "object store",
                f"uploaded files cannot be stored under {folder}: {reason}",
                "make the folder writable for this user, or set RAG_DATA_DIR to a writable folder",
            )
        return ok("object store", f"local folder {folder} is writable")
    return _check_s3(settings, timeout)


def _check_s3(settings: Settings, timeout: float) -> CheckResult:
    storage = settings.storage
    try:
        configured = build_object_store(settings)  # validates the settings, names what is missing
    except ConfigurationError as exc:
        return problem(
            "object store", exc.detail, "set the RAG_STORAGE__* variables named (see .env.example)"
        )
    assert isinstance(configured, S3ObjectStore)  # the factory's only other store is local
    # The same store with the doctor's timeouts: the app's own (15 s reads, one retry) would
    # let a silent listener stall the doctor for half a minute.
    store = S3ObjectStore(
        configured.endpoint,
        storage.s3_access_key.get_secret_value() if storage.s3_access_key else "",
        storage.s3_secret_key.get_secret_value() if storage.s3_secret_key else "",
        configured.bucket,
        secure=storage.s3_secure,
        region=storage.s3_region,
        connect_timeout=timeout,
        read_timeout=timeout,
    )
    where = f"the S3 server at {store.endpoint}"
    try:
        # Creates the bucket when missing, as the app does at its first upload.
        run_coroutine(store.check)
    except BackendUnavailable as exc:
        return problem("object store", exc.detail, _s3_fix(exc, store.endpoint))
    return ok("object store", f"{where}: bucket {store.bucket} is usable, credentials accepted")


def _s3_fix(exc: BackendUnavailable, endpoint: str) -> str:
    cause = exc.__cause__
    if isinstance(cause, S3Error) and cause.code in CREDENTIAL_ERRORS:
        return (
            "check RAG_STORAGE__S3_ACCESS_KEY and RAG_STORAGE__S3_SECRET_KEY, and that this "
            "identity may read and write the bucket"
        )
    if isinstance(cause, S3Error):
        return "check RAG_STORAGE__S3_BUCKET and the permissions of the S3 identity"
    if isinstance(cause, Urllib3Error | OSError):
        return (
            f"start the S3 server (MinIO) at {endpoint}, or correct RAG_STORAGE__S3_ENDPOINT "
            "(host:port) and RAG_STORAGE__S3_SECURE"
        )
    return "check the RAG_STORAGE__S3_* settings"
