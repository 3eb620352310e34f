"""One embedding model shared by concurrent callers, their texts merged into full batches.

Ingesting many small documents embeds a chunk or two per document. Run one document at a time,
a CPU model then works on batches of one or two texts and reaches about half of its throughput
(bench/ingest.py measured 52% of raw ``encode`` speed). Here callers in several threads put
their texts into one pool, and worker threads embed up to ``batch_size`` texts at once.

A batch is chosen for uniform length, not arrival order: a local model pads every text to the
longest of its batch, and batches of whatever arrived together cost about 45% more compute than
batches of similar lengths on the benchmark's chunks (docs/benchmarks.md, session 4). The pool
holds the texts of every document in flight, so there is usually a close match; a text passed
over for ``MAX_DELAY_SECONDS`` goes into the next batch, so none waits behind a stream of
better-matched ones. (A local model's processes then split each batch by token length once more,
``indexes.embedding_worker.length_groups``: the pool is often too shallow for a close match.)

LlamaIndex's embedding classes batch within one call only; nothing in it batches across calls,
hence this class.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

import anyio
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import PrivateAttr


@dataclass(eq=False)
class _Request:
    """One caller's texts; its future is resolved when the last of them is embedded."""

    texts: list[str]
    done: Future[list[Embedding]] = field(default_factory=Future)
    created: float = field(default_factory=time.monotonic)
    vectors: list[Any] = field(init=False)
    remaining: int = field(init=False)

    def __post_init__(self) -> None:
        self.vectors = [None] * len(self.texts)
        self.remaining = len(self.texts)


# A text waiting in the pool: its request and its place in that request.
_Item = tuple[_Request, int]

# How long a text may be passed over for better-matched ones: the delay a document can take
# from batching, against throughput from batches of uniform length.
MAX_DELAY_SECONDS = 2.0


class BatchingEmbedding(BaseEmbedding):
    """Wraps ``inner``; text embeddings go through the shared batches, queries go straight."""

    # The inner model's input limit in tokens (None for API models): chunking reads it
    # (indexes.pipeline.effective_chunking), so chunks stay within what the model embeds.
    max_length: int | None = None
    _inner: BaseEmbedding = PrivateAttr()
    _pool: list[_Item] = PrivateAttr(default_factory=list)  # in arrival order
    _changed: threading.Condition = PrivateAttr(default_factory=threading.Condition)
    _max_wait: float = PrivateAttr()
    _workers: list[threading.Thread] = PrivateAttr(default_factory=list)
    _parallel: int = PrivateAttr()
    _start_lock: threading.Lock = PrivateAttr()

    def __init__(
        self,
        inner: BaseEmbedding,
        *,
        batch_size: int | None = None,
        max_wait: float = 0.02,
        parallel: int = 1,
    ):
        """``batch_size``: texts per batch, by default ``inner``'s own (a batch is then one
        forward pass of a local model, chosen from the whole pool for uniform length).
        ``parallel``: batches embedded at once, for an ``inner`` that computes concurrent
        calls in parallel (a pool of model processes); each batch has its own worker thread."""
        super().__init__(
            model_name=inner.model_name,
            embed_batch_size=batch_size or inner.embed_batch_size,
            max_length=getattr(inner, "max_length", None),
        )
        self._inner = inner
        self._max_wait = max_wait
        self._parallel = max(1, parallel)
        self._start_lock = threading.Lock()

    @classmethod
    def class_name(cls) -> str:
        return "BatchingEmbedding"

    def prepare(self) -> None:
        """Load the model now if it loads lazily (processes of indexes.embedding_process): a
        caller that reports "embedding" has the model ready, and stops without waiting for a
        start-up."""
        prepare = getattr(self._inner, "prepare", None)
        if callable(prepare):
            prepare()

    # --- the BaseEmbedding interface ---------------------------------------------------------

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        if not texts:
            return []
        self._ensure_workers()
        request = _Request(list(texts))
        with self._changed:
            self._pool.extend((request, index) for index in range(len(texts)))
            self._changed.notify()
        return request.done.result()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    def _get_query_embedding(self, query: str) -> Embedding:
        # One short query is latency-bound: waiting to fill a batch would only slow it.
        return self._inner.get_query_embedding(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await anyio.to_thread.run_sync(self._get_query_embedding, query)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await anyio.to_thread.run_sync(self._get_text_embeddings, texts)

    # --- the worker --------------------------------------------------------------------------

    def _ensure_workers(self) -> None:
        with self._start_lock:
            self._workers = [worker for worker in self._workers if worker.is_alive()]
            while len(self._workers) < self._parallel:
                worker = threading.Thread(target=self._run, name="embedding-batcher", daemon=True)
                worker.start()
                self._workers.append(worker)

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._embed(batch)
            except BaseException as exc:  # never leave a caller waiting on a dead thread
                for request in {request for request, _ in batch}:
                    _fail(request, exc)
                if not isinstance(exc, Exception):
                    raise

    def _next_batch(self) -> list[_Item]:
        """Wait for texts (up to ``max_wait`` for a full batch), then take a batch."""
        with self._changed:
            while True:
                self._changed.wait_for(lambda: bool(self._pool))
                deadline = time.monotonic() + self._max_wait
                while len(self._pool) < self.embed_batch_size:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._changed.wait(remaining):
                        break
                # A request that failed meanwhile has no use for its other texts.
                self._pool = [item for item in self._pool if not item[0].done.done()]
                if self._pool:  # (another worker may have taken them)
                    return self._take_uniform()

    def _take_uniform(self) -> list[_Item]:
        """Remove and return the batch: ``batch_size`` texts adjacent in length order whose
        lengths spread least (characters stand in for tokens). Once the oldest text has waited
        ``MAX_DELAY_SECONDS``, the batch is the best one that includes it."""
        size = self.embed_batch_size
        if len(self._pool) <= size:
            batch, self._pool = self._pool, []
            return batch
        order = sorted(self._pool, key=_length)
        starts = range(len(order) - size + 1)
        oldest = self._pool[0]
        if time.monotonic() - oldest[0].created > MAX_DELAY_SECONDS:
            at = order.index(oldest)
            starts = range(max(0, at - size + 1), min(at, len(order) - size) + 1)
        first = min(
            starts, key=lambda start: _length(order[start + size - 1]) - _length(order[start])
        )
        batch = order[first : first + size]
        taken = {id(item) for item in batch}
        self._pool = [item for item in self._pool if id(item) not in taken]
        return batch

    def _embed(self, batch: list[_Item]) -> None:
        # Longest first: a model that splits the batch further (batch_size is a multiple of
        # its own) then pads each part to similar lengths too.
        batch = sorted(batch, key=_length, reverse=True)
        texts = [request.texts[index] for request, index in batch]
        try:
            vectors = self._inner.get_text_embedding_batch(texts)
            if len(vectors) != len(texts):
                raise RuntimeError(
                    f"the model returned {len(vectors)} vectors for {len(texts)} texts"
                )
        except Exception as exc:
            requests = list(dict.fromkeys(request for request, _ in batch))
            if len(requests) == 1:
                _fail(requests[0], exc)
                return
            # One caller's text may be the culprit: retry each caller's texts alone so only
            # it fails.
            for request in requests:
                self._embed([item for item in batch if item[0] is request])
            return
        with self._changed:
            for (request, index), vector in zip(batch, vectors, strict=True):
                request.vectors[index] = vector
                request.remaining -= 1
                if request.remaining == 0:
                    with contextlib.suppress(InvalidStateError):  # it failed meanwhile
                        request.done.set_result(request.vectors)


def _length(item: _Item) -> int:
    request, index = item
    return len(request.texts[index])


def _fail(request: _Request, exc: BaseException) -> None:
    with contextlib.suppress(InvalidStateError):  # resolved already
        request.done.set_exception(exc)
