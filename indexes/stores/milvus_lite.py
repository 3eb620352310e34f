"""What a Milvus Lite collection needs beyond the client, shared by every MilvusStore on it.

Milvus Lite runs inside this process, and one process owns a Lite database (a file lock): the
state here (a write lock, a debounced flush, the set of documents with rows) is the whole truth
about the collection's writers, which a Milvus server would keep itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable

logger = logging.getLogger(__name__)

# A Lite flush costs ~15 ms and was an eighth of ingesting many one-chunk documents
# (docs/benchmarks.md). Unflushed rows are durable (Lite's WAL) and visible (Strong
# consistency), only slower to search, so one flush a second while writes go on is enough;
# searches and listings flush first if rows are pending.
LITE_FLUSH_DELAY_SECONDS = 1.0


class LiteFlusher:
    """Flushes one Lite collection at most once per LITE_FLUSH_DELAY_SECONDS after writes."""

    def __init__(self, lock: threading.Lock) -> None:
        self._write_lock = lock
        self._guard = threading.Lock()
        self._timer: threading.Timer | None = None
        self._pending = False
        self._flush_now: Callable[[], None] | None = None

    def written(self, flush: Callable[[], None]) -> None:
        """Rows were written (called under the write lock): flush within the delay."""
        with self._guard:
            self._pending, self._flush_now = True, flush
            if self._timer is None:
                self._timer = threading.Timer(LITE_FLUSH_DELAY_SECONDS, self._on_timer)
                self._timer.daemon = True
                self._timer.start()

    def flush_pending(self) -> None:
        """Flush now if rows are waiting (before a read)."""
        if self._pending:
            with self._write_lock:
                self._flush_locked()

    def forget(self) -> None:
        """The collection was dropped: nothing left to flush."""
        with self._guard:
            self._pending, self._flush_now = False, None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _on_timer(self) -> None:
        with self._guard:
            self._timer = None
        if not threading.main_thread().is_alive():
            # The interpreter is exiting and Milvus Lite's executors are shut down: a flush
            # would only fail noisily. The rows are safe in its write-ahead log.
            return
        try:
            with self._write_lock:
                self._flush_locked()
        except Exception:  # a background flush must not die loudly; the next write retries
            logger.warning("Milvus Lite background flush failed", exc_info=True)

    def _flush_locked(self) -> None:
        with self._guard:
            flush, pending = self._flush_now, self._pending
            self._pending = False
        if pending and flush is not None:
            try:
                flush()
            except Exception:
                with self._guard:
                    self._pending = True
                raise


class LiteDocuments:
    """The documents that have rows in the collection, so that a delete for a document without
    any is skipped.

    Why: Lite deletes by filter by evaluating it over every unflushed row, converting each row's
    vector to a Python list on the way (milvus_lite's ``MemTable.to_search_snapshot``): ~6 ms
    per delete while documents stream in, and ingestion deletes each document's old chunks
    before writing the new ones, though most documents are new. Skipping those deletes saved
    1.8 of the ingesting process's 16.5 ms of CPU per chunk (bench/ingest.py, session 5).

    Used under the collection's write lock only. The set may hold documents without rows (a
    write that failed is counted as written), never the reverse: a delete is skipped only for a
    document that surely has no rows.
    """

    def __init__(self) -> None:
        self._ids: set[int] | None = None  # None: not known (not read yet, or too many)
        self._loaded = False

    def load(self, read_ids: Callable[[], Iterable[int] | None]) -> None:
        """Read the set from the collection, the first time only; ``read_ids`` answers None
        when it cannot tell (every delete then goes to Milvus, as on a server)."""
        if not self._loaded:
            ids = read_ids()
            self._ids = set(ids) if ids is not None else None
            self._loaded = True

    def writing(self, document_ids: Iterable[int]) -> None:
        """Rows of these documents are about to be written (recorded before the attempt)."""
        if self._ids is not None:
            self._ids.update(document_ids)

    def present(self, document_ids: Collection[int]) -> list[int]:
        """Those of ``document_ids`` that may have rows (all of them before ``load``)."""
        if self._ids is None:
            return list(document_ids)
        return [document_id for document_id in document_ids if document_id in self._ids]

    def deleted(self, document_ids: Iterable[int]) -> None:
        if self._ids is not None:
            self._ids.difference_update(document_ids)

    def forget(self) -> None:
        """The collection was dropped (or may have been): read it again when next used."""
        self._ids, self._loaded = None, False


class LiteCollection:
    """The shared state of one Lite collection in this process."""

    def __init__(self) -> None:
        # Milvus Lite swaps out a collection's in-memory segment outside its own lock when it
        # flushes: two threads writing one collection at once can commit sequence numbers out
        # of order, and the later write fails ("current_seq is monotonic"), which failed
        # documents ingested concurrently. This lock serialises the collection's writers.
        self.write_lock = threading.Lock()
        self.flusher = LiteFlusher(self.write_lock)
        self.documents = LiteDocuments()


_collections: dict[tuple[str, str], LiteCollection] = {}
_collections_guard = threading.Lock()


def lite_collection(uri: str, collection_name: str) -> LiteCollection:
    with _collections_guard:
        return _collections.setdefault((uri, collection_name), LiteCollection())
