"""Ingestion throughput on the embedded default, against the embedding model's raw speed.

    python bench/ingest.py [--dataset ../shared/eval-data/scifact] [--limit N] [--workers 4]

Reads a BEIR corpus (corpus.jsonl: _id, title, text), ingests every record as one document
through the real path (DocumentService.upload → in-process job queue → parse → split → embed →
Milvus Lite + BM25), then embeds the very same chunk texts directly with the same model
(sentence-transformers ``encode`` in this process, batches of 4 and 8) and prints both rates,
their ratio against the faster raw rate, and peak memory. (Batches of 1, 2, 16 and 32 were
measured too, never faster than 4 or 8 on the 2-core machine: docs/benchmarks.md.)
Without a dataset (``--synthetic N``) it builds a corpus of N English passages from the standard
library's docstrings, so the figure can be reproduced anywhere.

It prints figures; it is not a test. Record results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.stdlib_docs import docstrings

DEFAULT_DATASET = Path(__file__).resolve().parents[2] / "shared" / "eval-data" / "scifact"


def read_beir_corpus(dataset: Path, limit: int | None) -> list[tuple[str, str]]:
    records: list[tuple[str, str]] = []
    with (dataset / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            title = row.get("title") or ""
            records.append((str(row["_id"]), f"{title}\n\n{row['text']}".strip()))
            if limit and len(records) >= limit:
                break
    return records


def synthetic_corpus(count: int) -> list[tuple[str, str]]:
    """Real English prose: standard-library docstrings of 400-2400 characters."""
    return [(f"doc{i}", text) for i, text in enumerate(docstrings(400, 2400, count))]


async def ingest(
    records: list[tuple[str, str]],
    workers: int,
    processes: int | None,
    batch_documents: int | None,
    data_dir: Path,
) -> dict[str, Any]:
    from rag_app.context import AppContext
    from rag_app.db.models import Document, Knowledge, Llm, User
    from rag_app.domain.documents.service import DocumentService
    from rag_app.domain.documents.upload import received_from_path
    from rag_app.jobs.queue import InProcessQueue
    from rag_app.settings import Settings

    settings = Settings(
        environment="test",
        data_dir=data_dir,
        jobs={
            "workers": workers,
            "embedding_processes": processes,
            **({"batch_documents": batch_documents} if batch_documents else {}),
        },
        uploads={"max_files_per_request": 100},
    )
    ctx = AppContext.create(settings)
    await asyncio.to_thread(ctx.migrate)
    await ctx.start_jobs()
    files_dir = data_dir / "corpus"
    files_dir.mkdir()
    paths = []
    for doc_id, text in records:
        path = files_dir / f"{doc_id}.txt"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    async with ctx.sessionmaker() as session:
        user = User(username="bench", email="bench@example.com", password_hash="!")  # noqa: S106 (no login)
        llm = Llm(
            name="MiniLM",
            model_type="embedding",
            provider="local",
            model_name="all-MiniLM-L6-v2",
            dimension=384,
        )
        session.add_all([user, llm])
        await session.flush()
        knowledge = Knowledge(
            user_id=user.id or 0,
            name="bench",
            embed_llm_id=llm.id or 0,
            vector_collection_name="kb_bench",
            chunk_size=256,
            chunk_overlap=25,
        )
        session.add(knowledge)
        await session.commit()
        service = DocumentService(session, ctx)
        await warm_up(ctx, session, knowledge)
        started, cpu_started = time.perf_counter(), cpu_seconds()
        for start in range(0, len(paths), 100):
            batch = [received_from_path(p) for p in paths[start : start + 100]]
            await service.upload(knowledge, batch, replace=False)
    queue = ctx.job_queue
    assert isinstance(queue, InProcessQueue)
    await queue.join()
    elapsed, cpu_ended = time.perf_counter() - started, cpu_seconds()
    cpu = (cpu_ended[0] - cpu_started[0], cpu_ended[1] - cpu_started[1])
    children_mib = children_peak_mib()
    from sqlmodel import col, func, select

    async with ctx.sessionmaker() as session:
        chunks = (await session.exec(select(func.sum(col(Document.chunk_count))))).one() or 0
        failures = (
            await session.exec(select(Document.error_msg).where(col(Document.status) == "failed"))
        ).all()
        failed = len(failures)
        for message in sorted(set(failures), key=str)[:5]:
            print(f"failed: {message}", file=sys.stderr)
        knowledge = await session.get(Knowledge, knowledge.id)
    from rag_app.indexing.access import open_index

    async with ctx.sessionmaker() as session:
        index = await open_index(ctx, session, knowledge)  # type: ignore[arg-type]
    texts = []
    for document_id in range(1, len(records) + 1):
        page, _ = index.list_chunks(document_id, 0, 10_000)
        texts.extend(chunk.text for chunk in page)
    await ctx.close()
    return {
        "seconds": elapsed,
        "cpu": cpu,
        "chunks": int(chunks),
        "failed": int(failed),
        "children_mib": children_mib,
        "texts": texts,
    }


def child_pids() -> list[str]:
    """Live child processes (the embedding worker processes); Linux only."""
    return [
        pid
        for tasks in Path("/proc/self/task").glob("*/children")
        for pid in tasks.read_text().split()
    ]


def cpu_seconds() -> tuple[float, float]:
    """CPU time of this process, and of its live children (the embedding processes)."""
    children = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in child_pids():
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            children += (int(fields[11]) + int(fields[12])) / tick
    return time.process_time(), children


def children_peak_mib() -> float:
    total = 0.0
    for pid in child_pids():
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
    return total


async def warm_up(ctx: Any, session: Any, knowledge: Any) -> None:
    """Load the pipeline's embedding model (and start its processes), jieba's dictionary and
    the sentence splitter's punkt model before timing, as the raw measurement's model is
    loaded: a server loads them once, and the target is steady-state throughput, not start-up."""
    from indexes.splitting import split_sentences
    from indexes.tokenize import tokenize
    from rag_app.indexing.access import open_index, spec_for

    spec = await spec_for(ctx, session, knowledge)
    embed_model, _ = ctx.embeddings.get(spec.embedding)
    await asyncio.to_thread(embed_model.get_text_embedding_batch, ["warm-up"] * 32)
    await open_index(ctx, session, knowledge)  # points jieba's cache at the index folder
    await asyncio.to_thread(tokenize, "预热 warm-up")
    await asyncio.to_thread(split_sentences, "Warm up. 预热。")


def raw_embedding_seconds(
    texts: list[str], batch_sizes: list[int]
) -> dict[int, tuple[float, float]]:
    """Wall and CPU seconds of ``encode`` over ``texts``, per batch size, in this process with
    torch's default threads: the model alone, as a user would run it."""
    from sentence_transformers import SentenceTransformer

    from indexes.models import packaged_model_dir

    model = SentenceTransformer(str(packaged_model_dir()), device="cpu")
    model.encode(texts[:64], batch_size=32)  # warm-up, as the pipeline's model is warm too
    seconds = {}
    for batch_size in batch_sizes:
        started, cpu_started = time.perf_counter(), time.process_time()
        model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
        seconds[batch_size] = (time.perf_counter() - started, time.process_time() - cpu_started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--synthetic", type=int, default=0, help="build N passages instead")
    parser.add_argument("--limit", type=int, default=None, help="first N corpus records")
    parser.add_argument("--workers", type=int, default=4, help="in-process job workers")
    parser.add_argument(
        "--embedding-processes",
        type=int,
        default=None,
        help="jobs.embedding_processes (default: the setting's default; 0: in process)",
    )
    parser.add_argument(
        "--batch-documents",
        type=int,
        default=None,
        help="jobs.batch_documents (default: the setting's default)",
    )
    parser.add_argument(
        "--raw-batch-sizes",
        default="4,8",
        help="batch sizes of the raw measurement; the ratio is against the fastest",
    )
    args = parser.parse_args()

    if args.synthetic:
        records, source = synthetic_corpus(args.synthetic), f"synthetic ({args.synthetic})"
    elif (args.dataset / "corpus.jsonl").is_file():
        records, source = read_beir_corpus(args.dataset, args.limit), str(args.dataset)
    else:
        sys.exit(f"{args.dataset}/corpus.jsonl not found; pass --dataset or --synthetic N")

    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        result = asyncio.run(
            ingest(records, args.workers, args.embedding_processes, args.batch_documents, Path(tmp))
        )
    raw = raw_embedding_seconds(result["texts"], [int(b) for b in args.raw_batch_sizes.split(",")])
    raw_batch, (raw_seconds, raw_cpu) = min(raw.items(), key=lambda item: item[1][0])
    pipeline_rate = result["chunks"] / result["seconds"]
    raw_rate = len(result["texts"]) / raw_seconds
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"corpus:            {source}: {len(records)} documents")
    print(
        f"machine:           {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"pipeline:          {result['chunks']} chunks in {result['seconds']:.1f} s "
        f"= {pipeline_rate:.1f} chunks/s ({result['failed']} failed, {args.workers} workers, "
        f"batches of {args.batch_documents or 'default'})"
    )
    for batch_size, (seconds, _) in raw.items():
        print(
            f"raw embedding:     {len(result['texts'])} chunks in {seconds:.1f} s "
            f"= {len(result['texts']) / seconds:.1f} chunks/s (encode, batch {batch_size})"
        )
    print(f"ratio:             {pipeline_rate / raw_rate:.1%} of raw (batch {raw_batch})")
    # CPU time (all threads, and the embedding worker processes) tells the pipeline's own
    # overhead apart from a busy machine: wall-clock rates move with other load, CPU seconds
    # per chunk much less.
    own, children = (1000 * seconds / result["chunks"] for seconds in result["cpu"])
    raw_ms = 1000 * raw_cpu / len(result["texts"])
    print(
        f"CPU per chunk:     pipeline {own + children:.0f} ms (this process {own:.0f}, "
        f"embedding processes {children:.0f}), raw {raw_ms:.0f} ms "
        f"(pipeline/raw {(own + children) / raw_ms:.2f})"
    )
    print(
        f"peak memory (RSS): {peak_mib:.0f} MiB, embedding processes "
        f"{result['children_mib']:.0f} MiB"
    )


if __name__ == "__main__":
    main()
