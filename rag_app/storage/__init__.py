"""Object storage for uploaded originals: a local folder or an S3-compatible bucket."""

from rag_app.storage.base import ObjectStore, StoredObject, validate_key, validate_prefix
from rag_app.storage.factory import build_object_store
from rag_app.storage.local import LocalObjectStore
from rag_app.storage.s3 import S3ObjectStore

__all__ = [
    "LocalObjectStore",
    "ObjectStore",
    "S3ObjectStore",
    "StoredObject",
    "build_object_store",
    "validate_key",
    "validate_prefix",
]
