"""A local embedding model run in a child process of its own, for ingestion.

Why a process: in one interpreter, the model's forward pass shares the GIL with everything else
the ingestion pipeline does in Python (database work, the Milvus Lite server, BM25 writes, the
event loop). PyTorch needs the GIL between operations, so the model waited on the pipeline and
the CPU stayed partly idle. In a process of its own the model runs whenever it has a batch:
bench/ingest.py measured the pipeline at 59-64 % of raw embedding throughput in process and
69-77 % with the model in a child (docs/benchmarks.md).

Only text (document) embeddings go to the child. A query is one short text whose latency
matters: it is embedded in this process (the model is loaded here on the first query), so a
search never waits behind an ingestion batch.

The child is ``python -m indexes.embedding_worker FOLDER`` (not multiprocessing: nothing of the
parent's ``__main__`` is imported again, which matters under notebooks and console scripts). It
exits when its stdin closes, so it never outlives this process. If it dies, the request in
flight fails with a ModelError (the document fails and can be retried) and the next request
starts a new child.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, cast

import anyio
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import PrivateAttr

from indexes.errors import ModelError
from indexes.frames import read_frame, write_frame
from indexes.models import load_local_model, local_max_length

logger = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 300.0  # loading torch and a model from a slow disk
# A batch takes seconds; a child silent this long is hung (or stopped): it is killed and the
# request fails, rather than holding its document "embedding" forever.
REQUEST_TIMEOUT_SECONDS = 600.0
_STOP_SECONDS = 5.0


class LocalModelProcess:
    """The child process embedding with the model in ``folder``; one request at a time."""

    def __init__(
        self,
        folder: Path,
        *,
        label: str | None = None,
        threads: int = 1,
        start_timeout: float = START_TIMEOUT_SECONDS,
        request_timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self.folder = folder
        self.label = label or folder.name  # for messages: the registered model name
        self.threads = threads
        self.start_timeout = start_timeout
        self.request_timeout = request_timeout
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def embed(self, texts: list[str]) -> list[Embedding]:
        with self._lock:
            process = self._running()
            stdout = cast(IO[bytes], process.stdout)
            try:
                write_frame(cast(IO[bytes], process.stdin), texts)
                answered, _, _ = select.select([stdout], [], [], self.request_timeout)
                if not answered:
                    process.kill()
                    process.wait()
                    self._process = None
                    raise ModelError(
                        f"The local embedding process for '{self.label}' did not answer within "
                        f"{self.request_timeout:.0f} s and was stopped; the next request starts "
                        "a new one."
                    )
                reply = read_frame(stdout)
            except (OSError, EOFError) as exc:
                raise self._died(process) from exc
            if reply is None:
                raise self._died(process)
        status, value = reply
        if status != "ok":
            raise ModelError(f"The local embedding model '{self.label}' failed: {value}")
        return cast(list[Embedding], value.tolist())

    def start(self) -> None:
        """Start the child now (if it is not running) and wait until its model is loaded."""
        with self._lock:
            self._running()

    def close(self) -> None:
        process = self.detach()
        if process is not None:
            _stop(process)

    def detach(self) -> subprocess.Popen[bytes] | None:
        """Forget the child and hand it over (to be stopped with others at once)."""
        with self._lock:
            process, self._process = self._process, None
        return process

    # --- the child -----------------------------------------------------------------------------

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._process = None
        process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [
                sys.executable,
                "-m",
                "indexes.embedding_worker",
                str(self.folder),
                str(self.threads),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_child_environment(),
        )
        try:
            self._await_ready(process)
        except BaseException:
            _stop(process)
            raise
        logger.info("Embedding process %s started for %s", process.pid, self.folder)
        self._process = process
        return process

    def _await_ready(self, process: subprocess.Popen[bytes]) -> None:
        stdout = cast(IO[bytes], process.stdout)
        ready, _, _ = select.select([stdout], [], [], self.start_timeout)
        if not ready:
            raise ModelError(
                f"The local embedding model '{self.label}' did not load within "
                f"{self.start_timeout:.0f} s."
            )
        try:
            reply = read_frame(stdout)
        except EOFError:
            reply = None
        if reply is None:
            raise self._died(process)
        status, value = reply
        if status != "ready":
            raise ModelError(str(value))

    def _died(self, process: subprocess.Popen[bytes]) -> ModelError:
        try:
            code = process.wait(timeout=_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            _stop(process)
            code = process.returncode
        self._process = None
        return ModelError(
            f"The local embedding process for '{self.label}' stopped unexpectedly "
            f"(exit code {code}); the next request starts a new one."
        )


def _child_environment() -> dict[str, str]:
    env = dict(os.environ)
    # Offline as in this process; no progress bars on the shared stderr.
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # The child imports this package: make sure it finds the same copy as this process.
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def _stop(*processes: subprocess.Popen[bytes]) -> None:
    """Close their stdin (each exits after the batch in hand), then kill any that lingers past
    one shared deadline: stopping several costs the slowest one's exit, not the sum."""
    for process in processes:
        try:
            if process.stdin is not None:
                process.stdin.close()
        except OSError:
            pass
    deadline = time.monotonic() + _STOP_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


class LocalModelPool:
    """Several model processes; each call is embedded by one that is free.

    Why several processes of few threads rather than one using every core: PyTorch splits each
    operation across its threads, which then wait for the slowest at every step; on a shared
    CPU (the pipeline runs beside them) one descheduled thread stalls the others. Separate
    processes embed separate batches and never wait for each other. On 2 cores, two
    one-thread processes embedded 17.5 texts/s where one two-thread process did 14.4
    (docs/benchmarks.md).
    """

    def __init__(self, folder: Path, *, label: str | None, size: int, threads: int) -> None:
        self.processes = [
            LocalModelProcess(folder, label=label, threads=threads) for _ in range(size)
        ]
        self._idle: queue.SimpleQueue[LocalModelProcess] = queue.SimpleQueue()
        for process in self.processes:
            self._idle.put(process)
        self._started = False
        self._start_lock = threading.Lock()

    def start(self) -> None:
        """Start every process at once (loading takes seconds each), once."""
        with self._start_lock:
            if self._started:
                return
            with ThreadPoolExecutor(len(self.processes)) as starting:
                for started in [starting.submit(p.start) for p in self.processes]:
                    started.result()
            self._started = True

    def embed(self, texts: list[str]) -> list[Embedding]:
        self.start()
        process = self._idle.get()
        try:
            return process.embed(texts)
        finally:
            self._idle.put(process)

    def close(self) -> None:
        _stop(*[p for p in (process.detach() for process in self.processes) if p is not None])


def pool_shape(
    processes: int | None = None, *, cores: int | None = None, max_auto: int = 4
) -> tuple[int, int]:
    """(processes, threads each): by default one process per core up to ``max_auto`` (each
    holds a copy of the model); the cores left over become threads."""
    cores = max(1, cores or os.cpu_count() or 1)
    if not processes:
        processes = min(cores, max_auto)
    return processes, max(1, cores // processes)


# One pool per model folder per process, like the in-process models of indexes.models.
_pools: dict[Path, LocalModelPool] = {}
_pools_lock = threading.Lock()


def model_pool(
    folder: Path, *, label: str | None = None, size: int = 1, threads: int = 1
) -> LocalModelPool:
    """The pool for ``folder``; its shape is fixed by the first call."""
    with _pools_lock:
        pool = _pools.get(folder)
        if pool is None:
            pool = _pools[folder] = LocalModelPool(folder, label=label, size=size, threads=threads)
        return pool


@atexit.register
def stop_model_processes() -> None:
    with _pools_lock:
        pools = list(_pools.values())
    children = [process.detach() for pool in pools for process in pool.processes]
    _stop(*[child for child in children if child is not None])


class ProcessEmbedding(BaseEmbedding):
    """LlamaIndex embedding: texts embedded by the child process, queries in this process."""

    max_length: int | None = None
    _pool: LocalModelPool = PrivateAttr()
    _folder: Path = PrivateAttr()

    def __init__(
        self,
        folder: Path,
        *,
        label: str | None = None,
        processes: int = 1,
        threads: int = 1,
        batch_size: int = 32,
    ) -> None:
        super().__init__(
            model_name=label or str(folder),
            embed_batch_size=batch_size,
            max_length=local_max_length(folder),
        )
        self._folder = folder
        self._pool = model_pool(folder, label=label, size=processes, threads=threads)

    @classmethod
    def class_name(cls) -> str:
        return "ProcessEmbedding"

    def prepare(self) -> None:
        """Start the processes now (blocking) rather than on the first texts."""
        self._pool.start()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._pool.embed(texts)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await anyio.to_thread.run_sync(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await anyio.to_thread.run_sync(self._get_text_embeddings, texts)

    def _get_query_embedding(self, query: str) -> Embedding:
        return load_local_model(self._folder).get_query_embedding(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await anyio.to_thread.run_sync(self._get_query_embedding, query)
