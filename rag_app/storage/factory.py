"""Build the configured object store. No network here: the first use, or ``check()`` at
start-up, creates the bucket, so a down S3 server surfaces as a readable 503, not a crash."""

from __future__ import annotations

from minio.helpers import check_bucket_name

from rag_app.errors import ConfigurationError
from rag_app.settings import Settings
from rag_app.storage.base import ObjectStore
from rag_app.storage.local import LocalObjectStore
from rag_app.storage.s3 import S3ObjectStore


def build_object_store(settings: Settings) -> ObjectStore:
    storage = settings.storage
    if storage.backend == "local":
        return LocalObjectStore(settings.files_dir)

    endpoint = (storage.s3_endpoint or "").strip()
    access_key = storage.s3_access_key.get_secret_value() if storage.s3_access_key else ""
    secret_key = storage.s3_secret_key.get_secret_value() if storage.s3_secret_key else ""
    missing = [
        f"storage.{name} (RAG_STORAGE__{name.upper()})"
        for name, value in (
            ("s3_endpoint", endpoint),
            ("s3_access_key", access_key),
            ("s3_secret_key", secret_key),
        )
        if not value
    ]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigurationError(
            f"storage.backend is s3 but {', '.join(missing)} {verb} not set", missing=missing
        )
    if "://" in endpoint or "/" in endpoint:
        raise ConfigurationError(
            f"storage.s3_endpoint must be host:port without scheme or path, got {endpoint!r}; "
            "use storage.s3_secure for HTTPS"
        )
    try:
        check_bucket_name(storage.s3_bucket, strict=True)
    except ValueError as exc:
        raise ConfigurationError(f"storage.s3_bucket is not a valid bucket name: {exc}") from None
    try:
        return S3ObjectStore(
            endpoint,
            access_key,
            secret_key,
            storage.s3_bucket,
            secure=storage.s3_secure,
            region=storage.s3_region,
        )
    except ValueError as exc:
        # minio's endpoint parsing; its message names the endpoint only, never the keys.
        raise ConfigurationError(f"storage.s3_endpoint is not usable: {exc}") from None
