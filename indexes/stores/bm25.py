"""BM25 keyword store on local files: bm25s over jieba tokens, one directory per knowledge base.

bm25s indexes are immutable (no add/delete), so the chunks live in a small SQLite file
(``corpus.sqlite``, WAL) and the bm25s index is derived from it: every write bumps a version
in the same transaction, and the next search rebuilds the index if its version is stale. A
built index is saved next to the corpus under its ``(generation, version)`` so a restarted
process loads it instead of rebuilding. Writes therefore cost O(chunks written), not
O(corpus); the O(corpus) rebuild happens at most once per batch of writes, on first search.

SQLite is the source of truth, so several processes (API server and workers) can share a
knowledge base: a reader always compares the on-disk version with its cached one.

llama-index-retrievers-bm25 is not used for indexing: it ignores ``tokenizer=`` and scores
Chinese as 0 (see RUNTIME-NOTES); we build ``bm25s.BM25`` from our own jieba tokens.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import bm25s
import numpy as np
from llama_index.core.schema import BaseNode, MetadataMode

from indexes.errors import StoreError
from indexes.stores.base import KeywordHit, node_document_id, node_position
from indexes.tokenize import tokenize

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunk (
    node_id TEXT PRIMARY KEY,
    document_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    tokens TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunk_document ON chunk (document_id, position);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

IndexSource = Literal["empty", "memory", "disk", "built"]


class _Shared:
    """Per knowledge-base directory, for the whole process: one lock and one connection.

    The lock serialises writes and index (re)builds of one knowledge base. The connection
    stays open because closing the last connection of a WAL database checkpoints and
    fsyncs (~5 ms): once per call that dominated the cost of a write.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.conn: sqlite3.Connection | None = None


_shared: dict[Path, _Shared] = {}
_shared_guard = threading.Lock()


def _shared_for(directory: Path) -> _Shared:
    with _shared_guard:
        return _shared.setdefault(directory, _Shared())


@dataclass(frozen=True)
class _Built:
    key: tuple[str, int]  # (generation, version) of the corpus it was built from
    bm25: bm25s.BM25 | None  # None: the corpus has no tokens at all
    node_ids: list[str]
    document_ids: np.ndarray


class BM25KeywordStore:
    """bm25s + SQLite keyword store of one knowledge base under ``directory``."""

    def __init__(self, directory: Path, stopwords: Collection[str] | None = None) -> None:
        self.directory = directory.resolve()
        self.stopwords = stopwords
        self._shared = _shared_for(self.directory)
        self._lock = self._shared.lock
        self._built: _Built | None = None
        # Where the index used by the latest search came from; lets tests and logs tell a
        # reload from a rebuild.
        self.last_index_source: IndexSource | None = None

    @classmethod
    def open(
        cls, bm25_dir: Path, collection_name: str, stopwords: Collection[str] | None = None
    ) -> BM25KeywordStore:
        return cls(bm25_dir / collection_name, stopwords)

    @property
    def _db_path(self) -> Path:
        return self.directory / "corpus.sqlite"

    @property
    def _index_root(self) -> Path:
        return self.directory / "index"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """The shared connection, held under the knowledge base's lock."""
        with self._lock:
            try:
                if self._shared.conn is None:
                    self._shared.conn = self._open()
                conn = self._shared.conn
                try:
                    yield conn
                finally:
                    # A failure between BEGIN and COMMIT must not leave the shared
                    # connection inside a transaction for the next caller.
                    if conn.in_transaction:
                        conn.rollback()
            except sqlite3.Error as exc:
                raise StoreError(f"The BM25 index at {self.directory} failed: {exc}") from exc

    def _open(self) -> sqlite3.Connection:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE for writes). Shared
            # across threads, always under the lock.
            conn = sqlite3.connect(
                self._db_path, timeout=30, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"Cannot open the BM25 index at {self.directory}: {exc}") from exc
        # WAL + NORMAL: a crash may lose the last commits but never corrupts the file; a lost
        # write is redone by re-ingesting the document.
        conn.execute("PRAGMA synchronous=NORMAL")
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'state'").fetchone():
            self._create_schema(conn)
        return conn

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")  # persistent: set once per file
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        # generation: a dropped and re-created knowledge base never matches an old index.
        conn.execute(
            "INSERT OR IGNORE INTO state (key, value) VALUES ('generation', ?), ('version', '0')",
            (uuid.uuid4().hex,),
        )
        conn.execute("COMMIT")

    @staticmethod
    def _bump(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE state SET value = CAST(value AS INTEGER) + 1 WHERE key = 'version'")

    @staticmethod
    def _key(conn: sqlite3.Connection) -> tuple[str, int]:
        rows = dict(conn.execute("SELECT key, value FROM state").fetchall())
        return str(rows["generation"]), int(rows["version"])

    def add(self, nodes: Sequence[BaseNode]) -> None:
        # Tokenise before taking the lock: jieba is the slow part and needs no lock.
        rows = [self._row(node) for node in nodes]
        if not rows:
            return
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR REPLACE INTO chunk VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._bump(conn)
            conn.execute("COMMIT")

    def _row(self, node: BaseNode) -> tuple[str, int, int, str, str, str]:
        text = node.get_content(metadata_mode=MetadataMode.NONE)
        return (
            node.node_id,
            node_document_id(node),
            node_position(node),
            text,
            json.dumps(node.metadata, ensure_ascii=False, default=str),
            json.dumps(tokenize(text, self.stopwords), ensure_ascii=False),
        )

    def delete_documents(self, document_ids: Collection[int]) -> None:
        if not document_ids:
            return
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            deleted = conn.executemany(
                "DELETE FROM chunk WHERE document_id = ?", [(i,) for i in document_ids]
            ).rowcount
            if deleted:
                self._bump(conn)
            conn.execute("COMMIT")

    def drop(self) -> None:
        with self._lock:
            self._built = None
            if self._shared.conn is not None:
                self._shared.conn.close()
                self._shared.conn = None
            try:
                shutil.rmtree(self.directory, ignore_errors=False)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StoreError(
                    f"Cannot remove the BM25 index at {self.directory}: {exc}"
                ) from exc

    def count(self, document_id: int | None = None) -> int:
        with self._connect() as conn:
            if document_id is None:
                row = conn.execute("SELECT COUNT(*) FROM chunk").fetchone()
            else:
                row = conn.execute(
                    "SELECT COUNT(*) FROM chunk WHERE document_id = ?", (document_id,)
                ).fetchone()
        return int(row[0])

    def search(
        self, query: str, top_k: int, document_ids: Collection[int] | None = None
    ) -> list[KeywordHit]:
        tokens = tokenize(query, self.stopwords)
        built = self._current_index()
        if built.bm25 is None or top_k <= 0 or not tokens:
            return []
        known = [t for t in tokens if t in built.bm25.vocab_dict]
        if not known:
            return []
        mask = None
        if document_ids is not None:
            mask = np.isin(built.document_ids, list(document_ids)).astype(np.float32)
        scores = np.asarray(built.bm25.get_scores(known, weight_mask=mask))
        candidates = np.flatnonzero(scores > 0)
        if len(candidates) > top_k:
            candidates = candidates[np.argpartition(-scores[candidates], top_k - 1)[:top_k]]
        ranked = sorted(candidates.tolist(), key=lambda i: (-float(scores[i]), i))
        return self._hits([(built.node_ids[i], float(scores[i])) for i in ranked])

    def _hits(self, scored: list[tuple[str, float]]) -> list[KeywordHit]:
        if not scored:
            return []
        ids = [node_id for node_id, _ in scored]
        marks = ",".join("?" * len(ids))
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT node_id, text, metadata FROM chunk WHERE node_id IN ({marks})",  # noqa: S608
                ids,
            ).fetchall()
        found = {node_id: (text, json.loads(meta)) for node_id, text, meta in rows}
        # A chunk deleted since the index was built is skipped, not returned stale.
        return [
            KeywordHit(node_id, score, *found[node_id])
            for node_id, score in scored
            if node_id in found
        ]

    def _current_index(self) -> _Built:
        with self._lock:
            with self._connect() as conn:
                key = self._key(conn)
            if self._built is not None and self._built.key == key:
                self.last_index_source = "memory"
                return self._built
            built = self._load(key)
            if built is None:
                built = self._rebuild()
            self._built = built
            return built

    def _index_dir(self, key: tuple[str, int]) -> Path:
        return self._index_root / f"{key[0]}-{key[1]}"

    def _load(self, key: tuple[str, int]) -> _Built | None:
        directory = self._index_dir(key)
        ids_file = directory / "ids.json"
        if not ids_file.exists():
            return None
        try:
            ids: dict[str, Any] = json.loads(ids_file.read_text(encoding="utf-8"))
            bm25 = bm25s.BM25.load(directory, show_progress=False) if ids["node_ids"] else None
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("Rebuilding the BM25 index at %s: cannot load it (%s)", directory, exc)
            return None
        self.last_index_source = "disk"
        return _Built(key, bm25, ids["node_ids"], np.asarray(ids["document_ids"], dtype=np.int64))

    def _rebuild(self) -> _Built:
        started = time.perf_counter()
        with self._connect() as conn:
            # One read transaction: the rows and the version they correspond to agree.
            conn.execute("BEGIN")
            key = self._key(conn)
            rows = conn.execute("SELECT node_id, document_id, tokens FROM chunk").fetchall()
            conn.execute("COMMIT")
        node_ids = [row[0] for row in rows]
        corpus_tokens = [json.loads(row[2]) for row in rows]
        bm25: bm25s.BM25 | None = None
        if any(corpus_tokens):
            bm25 = bm25s.BM25()
            bm25.index(corpus_tokens, show_progress=False)
        built = _Built(key, bm25, node_ids, np.asarray([row[1] for row in rows], dtype=np.int64))
        self._save(built)
        self.last_index_source = "built" if bm25 is not None else "empty"
        logger.info(
            "BM25 index %s rebuilt: %d chunks in %.3f s",
            self.directory.name,
            len(node_ids),
            time.perf_counter() - started,
        )
        return built

    def _save(self, built: _Built) -> None:
        target = self._index_dir(built.key)
        staging = self._index_root / f"tmp-{uuid.uuid4().hex}"
        try:
            staging.mkdir(parents=True)
            if built.bm25 is not None:
                built.bm25.save(staging, show_progress=False)
            ids = {"node_ids": built.node_ids, "document_ids": built.document_ids.tolist()}
            # Written last: its presence marks a complete index.
            (staging / "ids.json").write_text(json.dumps(ids, ensure_ascii=False), "utf-8")
            staging.rename(target)
        except OSError as exc:
            # Another process saved the same version first, or the disk is full: the index
            # in memory is still right, only the next restart rebuilds.
            logger.debug("BM25 index %s not saved: %s", target, exc)
            shutil.rmtree(staging, ignore_errors=True)
            return
        for old in self._index_root.iterdir():
            if old != target and not old.name.startswith("tmp-"):
                shutil.rmtree(old, ignore_errors=True)
