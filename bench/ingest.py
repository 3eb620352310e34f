"""Ingestion throughput on the embedded default, against the embedding model's raw speed.

    python bench/ingest.py [--dataset ../shared/eval-data/scifact] [--limit N] [--workers 2]

Reads a BEIR corpus (corpus.jsonl: _id, title, text), ingests every record as one document
through the real path (DocumentService.upload → in-process job queue → parse → split → embed →
Milvus Lite + BM25), then embeds the very same chunk texts directly with the same model
(sentence-transformers ``encode``, batch 32) and prints both rates, their ratio and peak memory.
Without a dataset (``--synthetic N``) it builds a corpus of N English passages from the standard
library's docstrings, so the figure can be reproduced anywhere.

It prints figures; it is not a test. Record results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


async def ingest(records: list[tuple[str, str]], workers: int, data_dir: Path) -> dict[str, Any]:
    from rag_app.context import AppContext
    from rag_app.db.models import Document, Knowledge, Llm, User
    from rag_app.domain.documents.service import DocumentService
    from rag_app.domain.documents.upload import received_from_path
    from rag_app.jobs.queue import InProcessQueue
    from rag_app.settings import Settings

    settings = Settings(
        environment="test",
        data_dir=data_dir,
        jobs={"workers": workers},
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
        started, cpu_started = time.perf_counter(), time.process_time()
        for start in range(0, len(paths), 100):
            batch = [received_from_path(p) for p in paths[start : start + 100]]
            await service.upload(knowledge, batch, replace=False)
    queue = ctx.job_queue
    assert isinstance(queue, InProcessQueue)
    await queue.join()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
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
        "texts": texts,
    }


async def warm_up(ctx: Any, session: Any, knowledge: Any) -> None:
    """Load the pipeline's embedding model before timing, as the raw measurement's is loaded:
    a server loads it once, and the target is steady-state throughput, not start-up."""
    from rag_app.indexing.access import spec_for

    spec = await spec_for(ctx, session, knowledge)
    embed_model, _ = ctx.embeddings.get(spec.embedding)
    await asyncio.to_thread(embed_model.get_text_embedding_batch, ["warm-up"] * 32)


def raw_embedding_seconds(texts: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of ``encode`` over ``texts``."""
    from sentence_transformers import SentenceTransformer

    from indexes.models import packaged_model_dir

    model = SentenceTransformer(str(packaged_model_dir()), device="cpu")
    model.encode(texts[:64], batch_size=32)  # warm-up, as the pipeline's model is warm too
    started, cpu_started = time.perf_counter(), time.process_time()
    model.encode(texts, batch_size=32, normalize_embeddings=True)
    return time.perf_counter() - started, time.process_time() - cpu_started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--synthetic", type=int, default=0, help="build N passages instead")
    parser.add_argument("--limit", type=int, default=None, help="first N corpus records")
    parser.add_argument("--workers", type=int, default=2, help="in-process job workers")
    args = parser.parse_args()

    if args.synthetic:
        records, source = synthetic_corpus(args.synthetic), f"synthetic ({args.synthetic})"
    elif (args.dataset / "corpus.jsonl").is_file():
        records, source = read_beir_corpus(args.dataset, args.limit), str(args.dataset)
    else:
        sys.exit(f"{args.dataset}/corpus.jsonl not found; pass --dataset or --synthetic N")

    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        result = asyncio.run(ingest(records, args.workers, Path(tmp)))
    raw_seconds, raw_cpu = raw_embedding_seconds(result["texts"])
    pipeline_rate = result["chunks"] / result["seconds"]
    raw_rate = len(result["texts"]) / raw_seconds
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"corpus:            {source}: {len(records)} documents")
    print(
        f"machine:           {platform.processor() or platform.machine()}, "
        f"{__import__('os').cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"pipeline:          {result['chunks']} chunks in {result['seconds']:.1f} s "
        f"= {pipeline_rate:.1f} chunks/s ({result['failed']} failed, {args.workers} workers)"
    )
    print(
        f"raw embedding:     {len(result['texts'])} chunks in {raw_seconds:.1f} s "
        f"= {raw_rate:.1f} chunks/s"
    )
    print(f"ratio:             {pipeline_rate / raw_rate:.1%} of raw embedding throughput")
    # CPU time (all threads) tells the pipeline's own overhead apart from a busy machine:
    # wall-clock rates move with other load, CPU seconds per chunk much less.
    print(
        f"CPU per chunk:     pipeline {1000 * result['cpu'] / result['chunks']:.0f} ms, "
        f"raw {1000 * raw_cpu / len(result['texts']):.0f} ms "
        f"(pipeline/raw {result['cpu'] / result['chunks'] / (raw_cpu / len(result['texts'])):.2f})"
    )
    print(f"peak memory (RSS): {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
