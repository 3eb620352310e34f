"""One embedding model shared by concurrent callers, their texts merged into full batches.

Ingesting many small documents embeds a chunk or two per document. Run one document at a time,
a CPU model then works on batches of one or two texts and reaches about half of its throughput
(bench/ingest.py measured 52% of raw ``encode`` speed). Here callers in several threads hand
their texts to one worker thread, which embeds up to ``batch_size`` texts at once, sorted by
length so that little is spent on padding. LlamaIndex's embedding classes batch within one call
only; nothing in it batches across calls, hence this class.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Any

import anyio
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import PrivateAttr

_Request = tuple[list[str], "Future[list[Embedding]]"]


class BatchingEmbedding(BaseEmbedding):
    """Wraps ``inner``; text embeddings go through the shared batches, queries go straight."""

    # The inner model's input limit in tokens (None for API models): chunking reads it
    # (indexes.pipeline.effective_chunking), so chunks stay within what the model embeds.
    max_length: int | None = None
    _inner: BaseEmbedding = PrivateAttr()
    _requests: queue.Queue[_Request] = PrivateAttr()
    _max_wait: float = PrivateAttr()
    _workers: list[threading.Thread] = PrivateAttr(default_factory=list)
    _parallel: int = PrivateAttr()
    _start_lock: threading.Lock = PrivateAttr()

    def __init__(
        self,
        inner: BaseEmbedding,
        *,
        batch_size: int = 32,
        max_wait: float = 0.02,
        parallel: int = 1,
    ):
        """``parallel``: batches embedded at once, for an ``inner`` that computes concurrent
        calls in parallel (a pool of model processes); each batch has its own worker thread."""
        super().__init__(
            model_name=inner.model_name,
            embed_batch_size=batch_size,
            max_length=getattr(inner, "max_length", None),
        )
        self._inner = inner
        self._requests = queue.Queue()
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
        self._ensure_workers()
        done: Future[list[Embedding]] = Future()
        self._requests.put((list(texts), done))
        return done.result()

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
            pending = [self._requests.get()]
            count = len(pending[0][0])
            deadline = time.monotonic() + self._max_wait
            while count < self.embed_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    request = self._requests.get(timeout=remaining)
                except queue.Empty:
                    break
                pending.append(request)
                count += len(request[0])
            try:
                self._embed(pending)
            except BaseException as exc:  # never leave a caller waiting on a dead thread
                for _, done in pending:
                    if not done.done():
                        done.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise

    def _embed(self, pending: list[_Request]) -> None:
        texts = [text for request_texts, _ in pending for text in request_texts]
        try:
            vectors = self._embed_sorted(texts)
        except Exception as exc:
            if len(pending) == 1:
                pending[0][1].set_exception(exc)
                return
            # One caller's text may be the culprit: retry each alone so only it fails.
            for request in pending:
                self._embed([request])
            return
        if len(vectors) != len(texts):
            raise RuntimeError(f"the model returned {len(vectors)} vectors for {len(texts)} texts")
        start = 0
        for request_texts, done in pending:
            done.set_result(vectors[start : start + len(request_texts)])
            start += len(request_texts)

    def _embed_sorted(self, texts: list[str]) -> list[Embedding]:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        vectors = self._inner.get_text_embedding_batch([texts[i] for i in order])
        result: list[Any] = [None] * len(texts)
        for position, index in enumerate(order):
            result[index] = vectors[position]
        return result
