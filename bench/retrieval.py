"""Retrieval latency on the embedded default: hybrid search over two knowledge bases.

    python bench/retrieval.py [--chunks 2000] [--queries 100] [--rerank-url URL]

Builds two knowledge bases (Milvus Lite + jieba BM25, packaged all-MiniLM-L6-v2) in a temporary
directory from English prose (the standard library's docstrings), ~``--chunks`` chunks in all,
ingested through the real path (embed_document + KnowledgeIndex.replace_document). Then runs
``--queries`` in-process searches (hybrid, RRF, candidate_k 20, top_k 5), one at a time after a
warm-up, and prints p50/p95 of the total and of each stage.

It prints figures; it is not a test. Record results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.stdlib_docs import docstrings
from indexes.knowledge_index import KnowledgeIndex
from indexes.models import build_embedding, build_tokenizer
from indexes.pipeline import embed_document
from indexes.readers.common import make_document
from indexes.retrieval import STAGES, KnowledgeSource, build_retriever
from indexes.specs import PACKAGED_EMBEDDING, KnowledgeSpec, ModelSpec, RetrievalSpec, StoreSettings

PACKAGED = ModelSpec(provider="local", model_name=PACKAGED_EMBEDDING, model_type="embedding")


def passages(limit: int) -> list[str]:
    return docstrings(300, 4000, limit)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--mode", default="hybrid")
    args = parser.parse_args()

    model = build_embedding(PACKAGED)
    tokenizer = build_tokenizer(PACKAGED)
    texts = passages(args.chunks)  # more than enough: most passages give 1-4 chunks
    stores = StoreSettings(index_dir=Path(tempfile.mkdtemp(prefix="bench-retrieval-")))
    sources: list[KnowledgeSource] = []
    per_base = args.chunks // 2
    position = 0
    started = time.perf_counter()
    for knowledge_id in (1, 2):
        spec = KnowledgeSpec(
            knowledge_id=knowledge_id,
            collection_name=f"bench_{knowledge_id}",
            embedding=PACKAGED,
            chunk_size=64,
            chunk_overlap=8,
        )
        index = KnowledgeIndex.open(spec, stores, 384)
        while index.count() < per_base and position < len(texts):
            document_id = knowledge_id * 100_000 + position
            nodes = embed_document(
                spec,
                [make_document(texts[position], f"doc{position}.txt")],
                document_id=document_id,
                embed_model=model,
                tokenizer=tokenizer,
            )
            index.replace_document(document_id, nodes)
            position += 1
        sources.append(KnowledgeSource(spec, index, model))
    total_chunks = sum(s.index.count() for s in sources)
    print(f"ingested {total_chunks} chunks in 2 bases in {time.perf_counter() - started:.1f} s")

    rng = random.Random(0)
    queries = []
    for text in rng.sample(texts[:position], args.queries):
        words = text.split()
        start = rng.randrange(max(1, len(words) - 8))
        queries.append(" ".join(words[start : start + 8]))

    robot = build_retriever(RetrievalSpec(mode=args.mode), sources)
    for query in queries[:10]:  # warm-up: first BM25 index build, jieba, torch
        robot.search(query)
    timings: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for query in queries:
        result = robot.search(query)
        for stage, value in result.timings_ms.items():
            timings[stage].append(value)
    print(
        f"{platform.processor() or platform.machine()}, mode {args.mode}, "
        f"{len(queries)} queries, candidate_k 20, top_k 5"
    )
    for stage in STAGES:
        values = timings[stage]
        print(
            f"  {stage:8s} p50 {statistics.median(values):7.2f} ms   "
            f"p95 {percentile(values, 95):7.2f} ms"
        )


if __name__ == "__main__":
    main()
