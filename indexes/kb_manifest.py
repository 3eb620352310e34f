"""The manifest next to a folder knowledge base's index
(``<index_dir>/<collection>.manifest.json``): each indexed file's document id, content hash and
chunk count, and what the index was built from, so that a later run redoes only what changed."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexes.specs import KnowledgeSpec

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1
_MANIFEST_SAVE_SECONDS = 2.0  # at most this often while ingesting, and always at the end


@dataclass(frozen=True)
class DocumentRecord:
    document_id: int
    sha256: str
    chunks: int


def manifest_path(index_dir: Path, spec: KnowledgeSpec) -> Path:
    """Next to the index, one per collection: knowledge bases can share an index directory."""
    return index_dir / f"{spec.collection_name}.manifest.json"


def index_identity(spec: KnowledgeSpec, dimension: int) -> dict[str, Any]:
    """What the stores are built from: a change means a new index."""
    model = spec.embedding
    return {
        "embedding": [model.provider, model.model_name, model.base_url],
        "dimension": dimension,
        "keyword_backend": spec.keyword_backend,
    }


def chunking(spec: KnowledgeSpec) -> list[int]:
    """How files are chunked: a change means every file is re-embedded."""
    return [spec.chunk_size, spec.chunk_overlap]


class Manifest:
    """The manifest file: ``data`` says what the index was built from, ``documents`` holds the
    record of each indexed file by path relative to the folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        self.documents: dict[str, DocumentRecord] = {}
        self._saved_at = 0.0

    def load(self) -> bool:
        """Read the file; False, with nothing loaded, when it is missing, unreadable or of
        another version."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            documents = {
                path: DocumentRecord(int(r["document_id"]), str(r["sha256"]), int(r["chunks"]))
                for path, r in data["documents"].items()
            }
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("Ignoring the unreadable manifest %s: %s", self.path, exc)
            return False
        if data.get("version") != MANIFEST_VERSION:
            return False
        self.data, self.documents = data, documents
        return True

    def save(self, *, force: bool = True) -> None:
        """Write the file through a temporary one, so a crash never leaves half a manifest;
        ``force=False`` skips it when the last save is recent."""
        now = time.monotonic()
        if not force and now - self._saved_at < _MANIFEST_SAVE_SECONDS:
            return
        self._saved_at = now
        data = {
            **self.data,
            "version": MANIFEST_VERSION,
            "documents": {
                path: {"document_id": r.document_id, "sha256": r.sha256, "chunks": r.chunks}
                for path, r in sorted(self.documents.items())
            },
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        tmp.replace(self.path)
