"""A knowledge base over a folder of files, for notebooks and scripts: no database, no server.

    from indexes import KnowledgeBase

    kb = KnowledgeBase.from_folder("handbook/", progress=True)
    result = kb.search("How many days of annual leave?")
    engine = kb.chat_engine(chat_model)  # a ModelSpec; without one, retrieval-only answers
    print(engine.chat("How many days of annual leave?"))

The same parts the app uses, wired by hand: :func:`indexes.readers.read_document`,
:func:`indexes.pipeline.embed_document`, :class:`indexes.knowledge_index.KnowledgeIndex` (Milvus
Lite + BM25 under ``index_dir``), :func:`indexes.retrieval.build_retriever` and
:func:`indexes.chat.build_chat_engine`.

**Stable and incremental.** A file's document id is a hash of its path relative to the folder,
so it is the same on every run, and writes replace a document's chunks by that id. A manifest
next to the index (``<index_dir>/<collection>.manifest.json``) records each file's content hash:
running ``from_folder`` again re-embeds only new and changed files, removes the chunks of files
that are gone, and never duplicates a chunk. Changing the embedding model or the keyword
backend rebuilds the index; changing the chunk size re-embeds every file.

**Where the index lives.** ``index_dir`` defaults to ``<folder>/.rag_index`` (hidden files and
folders are never read as documents). Milvus Lite serves one process per database: while one
program (a notebook kernel, ``rag-app serve``) has an index directory open, another process
cannot open it; in one process any number of knowledge bases share it.

The parts live in ``indexes.kb_ids`` (document ids and collection names),
``indexes.kb_resources`` (the shared embedding model, opening the stores),
``indexes.kb_manifest`` (the manifest) and ``indexes.kb_sync`` (one ``from_folder`` run); the
names in ``__all__`` are importable from here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from indexes.errors import IndexesError, StoreError
from indexes.kb_ids import collection_name, document_id_for, stable_int
from indexes.kb_manifest import DocumentRecord, Manifest, chunking, index_identity, manifest_path
from indexes.kb_resources import (
    milvus_lite_in_use,
    open_knowledge_index,
    packaged_embedding,
    probe_dimension,
    shared_model,
)
from indexes.kb_sync import FolderIngestion, FolderSync, reconcile
from indexes.specs import (
    KeywordBackend,
    KnowledgeSpec,
    ModelSpec,
    RetrievalMode,
    RetrievalSpec,
    RobotSpec,
    StoreSettings,
)

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.base.llms.types import ChatMessage
    from llama_index.core.chat_engine.types import BaseChatEngine

    from indexes.knowledge_index import KnowledgeIndex
    from indexes.retrieval import KnowledgeSource, RetrievalResult, RobotRetriever

__all__ = [
    "DEFAULT_INDEX_DIR",
    "DocumentRecord",
    "FolderSync",
    "KnowledgeBase",
    "document_id_for",
    "milvus_lite_in_use",
    "open_knowledge_index",
    "packaged_embedding",
]

DEFAULT_INDEX_DIR = ".rag_index"  # under the folder, unless index_dir= says otherwise

History = Sequence["ChatMessage | Mapping[str, str]"]


def _history(history: History) -> list[ChatMessage]:
    """The conversation as ChatMessage objects: a notebook may write it as plain dicts."""
    from llama_index.core.base.llms.types import ChatMessage, MessageRole

    messages = []
    for item in history:
        if isinstance(item, ChatMessage):
            messages.append(item)
        else:
            messages.append(ChatMessage(role=MessageRole(item["role"]), content=item["content"]))
    return messages


class KnowledgeBase:
    """The files of one folder, chunked, embedded and indexed (vector + keyword) on local disk.

    Build one with :meth:`from_folder`. ``documents`` maps each indexed file (path relative to
    the folder) to its document id, content hash and chunk count; ``last_sync`` says what the
    latest ``from_folder`` run added, updated, removed and skipped.
    """

    def __init__(
        self,
        *,
        name: str,
        folder: Path,
        spec: KnowledgeSpec,
        stores: StoreSettings,
        index: KnowledgeIndex,
        embed_model: BaseEmbedding,
        documents: Mapping[str, DocumentRecord],
        last_sync: FolderSync | None = None,
        retrieval: RetrievalSpec | None = None,
    ) -> None:
        self.name = name
        self.folder = folder
        self.spec = spec
        self.stores = stores
        self.index = index
        self.embed_model = embed_model
        self.documents = dict(documents)
        self.last_sync = last_sync or FolderSync()
        self.retrieval = retrieval or RetrievalSpec()

    # --- building -----------------------------------------------------------------------------

    @classmethod
    def from_folder(
        cls,
        path: str | os.PathLike[str],
        *,
        index_dir: str | os.PathLike[str] | None = None,
        embedding: ModelSpec | None = None,
        chunk_size: int = 500,
        chunk_overlap: int = 50,
        keyword_backend: KeywordBackend = "bm25",
        name: str | None = None,
        stores: StoreSettings | None = None,
        rebuild: bool = False,
        progress: bool = False,
        workers: int = 4,
    ) -> KnowledgeBase:
        """Index every supported file under ``path`` (recursively) and return the knowledge base.

        ``index_dir``: where the Milvus Lite database, the BM25 indexes and the manifest live
        (default ``<path>/.rag_index``); ``stores`` instead, to use a Milvus server or
        Elasticsearch. ``embedding``: default the packaged all-MiniLM-L6-v2 (English; Chinese
        is found by the keyword leg). ``chunk_size``/``chunk_overlap`` in tokens (a local
        model caps the size at what it reads, 254 tokens for the packaged one). ``name``:
        default the folder's name; two folders indexed into one ``index_dir`` need different
        names. ``rebuild``: re-embed every file even if unchanged. ``progress``: a tqdm bar.
        ``workers``: files processed at once (their chunks share embedding batches).

        Files that cannot be read (unsupported, corrupt, no text) are skipped and listed in
        ``last_sync.skipped``; a model or store failure stops the run with
        ``ModelError``/``StoreError`` (what was done until then is kept and not redone).
        """
        started = time.perf_counter()
        folder = Path(path).expanduser().resolve()
        if not folder.is_dir():
            raise IndexesError(f"{folder} is not a folder.")
        if workers < 1:
            raise IndexesError(f"workers must be at least 1, not {workers}.")
        if stores is not None and index_dir is not None:
            raise IndexesError("Pass index_dir= or stores=, not both.")
        if stores is None:
            directory = Path(index_dir).expanduser() if index_dir else folder / DEFAULT_INDEX_DIR
            stores = StoreSettings(index_dir=directory.resolve())
        try:
            stores.index_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"Cannot create the index directory {stores.index_dir} ({exc}): pass "
                "index_dir= a writable folder."
            ) from exc
        name = name or folder.name or "knowledge"
        embedding = embedding or packaged_embedding()
        spec = KnowledgeSpec(
            knowledge_id=stable_int(name, 31),
            collection_name=collection_name(name),
            embedding=embedding,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            keyword_backend=keyword_backend,
        )
        dimension = embedding.dimension
        if dimension is None:
            dimension = probe_dimension(shared_model(embedding)[0], embedding)

        manifest = Manifest(manifest_path(stores.index_dir, spec))
        if manifest.load():
            rebuild = reconcile(manifest, spec, stores, dimension, folder, name) or rebuild
        manifest.data = {
            "name": name,
            "folder": str(folder),
            "index": index_identity(spec, dimension),
            "chunking": chunking(spec),
        }
        index = open_knowledge_index(spec, stores, dimension)
        # Loaded once the stores are open: an index held by another process fails at once.
        embed_model, tokenizer = shared_model(embedding)
        kb = cls(
            name=name,
            folder=folder,
            spec=spec,
            stores=stores,
            index=index,
            embed_model=embed_model,
            documents=manifest.documents,
        )
        try:
            kb.last_sync = FolderIngestion(
                folder=folder,
                index_dir=stores.index_dir,
                spec=spec,
                index=index,
                embed_model=embed_model,
                tokenizer=tokenizer,
                manifest=manifest,
            ).sync(rebuild=rebuild, progress=progress, workers=workers)
        finally:
            manifest.save()
            kb.documents = dict(manifest.documents)
        kb.last_sync.seconds = time.perf_counter() - started
        return kb

    # --- using ---------------------------------------------------------------------------------

    @property
    def source(self) -> KnowledgeSource:
        """This knowledge base as a retrieval source: ``build_retriever(spec, [kb1.source,
        kb2.source])`` searches several at once."""
        from indexes.retrieval import KnowledgeSource

        return KnowledgeSource(self.spec, self.index, self.embed_model)

    def retriever(
        self, retrieval: RetrievalSpec | None = None, rerank_model: ModelSpec | None = None
    ) -> RobotRetriever:
        """A LlamaIndex retriever (``retrieve``/``aretrieve``, and ``search`` with every score)."""
        from indexes.retrieval import build_retriever

        retrieval = retrieval or self.retrieval
        reranker = None
        if rerank_model is not None:
            from indexes.rerank import build_reranker

            reranker = build_reranker(rerank_model, retrieval.top_k)
        return build_retriever(retrieval, [self.source], reranker=reranker)

    def search(self, query: str, top_k: int = 5, mode: RetrievalMode = "hybrid") -> RetrievalResult:
        """The best ``top_k`` chunks for ``query`` with every leg's rank and score and timings
        (``mode``: "vector", "keyword" or "hybrid")."""
        return self.retriever().search(query, top_k=top_k, mode=mode)

    async def asearch(
        self, query: str, top_k: int = 5, mode: RetrievalMode = "hybrid"
    ) -> RetrievalResult:
        return await self.retriever().asearch(query, top_k=top_k, mode=mode)

    def chat_engine(
        self,
        chat_model: ModelSpec | None = None,
        *,
        system_prompt: str | None = None,
        history: History = (),
        retrieval: RetrievalSpec | None = None,
        rerank_model: ModelSpec | None = None,
        temperature: float = 0.7,
        max_tokens: int = 2000,
    ) -> BaseChatEngine:
        """A LlamaIndex chat engine over this knowledge base, as a robot's in the app: the
        question condensed with the conversation, answers citing numbered passages [n]. Without
        ``chat_model``: retrieval-only answers (the passages themselves). ``history``:
        ``ChatMessage`` objects or ``{"role": "user", "content": "..."}`` dicts."""
        from indexes.chat import build_chat_engine, build_robot_llm

        retrieval = retrieval or self.retrieval
        robot = RobotSpec(
            name=self.name,
            knowledge=(self.spec,),
            retrieval=retrieval,
            chat_model=chat_model,
            rerank_model=rerank_model,
            system_prompt=system_prompt,
            temperature=temperature,
            max_tokens=max_tokens,
        )
        return build_chat_engine(
            robot,
            self.retriever(retrieval, rerank_model),
            llm=build_robot_llm(robot),
            history=_history(history),
        )

    def count(self, file: str | None = None) -> int:
        """Chunks in the knowledge base, or of one file (path relative to the folder)."""
        if file is None:
            return self.index.count()
        record = self.documents.get(file)
        return 0 if record is None else self.index.count(record.document_id)

    def file_of(self, document_id: int) -> str | None:
        """The file (relative path) a document id stands for."""
        return next((p for p, r in self.documents.items() if r.document_id == document_id), None)

    def drop(self) -> None:
        """Delete the index: vectors, keyword index and manifest (the files stay)."""
        self.index.drop()
        manifest_path(self.stores.index_dir, self.spec).unlink(missing_ok=True)
        self.documents = {}

    def __repr__(self) -> str:
        chunks = sum(r.chunks for r in self.documents.values())
        return (
            f"KnowledgeBase(name={self.name!r}, folder='{self.folder}', "
            f"documents={len(self.documents)}, chunks={chunks}, "
            f"index_dir='{self.stores.index_dir}')"
        )
