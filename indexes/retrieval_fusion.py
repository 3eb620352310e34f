"""The fusion maths of hybrid retrieval: reciprocal rank fusion and min-max weighted fusion, on
plain keys and scores (see indexes.retrieval for how the retriever applies them)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

from indexes.errors import IndexesError

K = TypeVar("K", bound=Hashable)

# QueryFusionRetriever's fusion methods are not used: they need an LLM (or read the global
# Settings.llm) even with num_queries=1, fix RRF's k at 60, deduplicate by node hash (the same
# chunk read from Milvus and from a keyword store hashes differently) and overwrite scores in
# place, losing the per-leg ranks and scores that indexes.retrieval reports.


def rrf_scores(rankings: Sequence[Sequence[K]], k: int) -> dict[K, float]:
    """Reciprocal rank fusion: ``sum of 1 / (k + rank)`` over the rankings holding a key, ranks
    from 1 (Cormack et al. 2009, as Milvus and Elasticsearch; LlamaIndex counts from 0)."""
    fused: dict[K, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            fused[key] = fused.get(key, 0.0) + 1.0 / (k + rank)
    return fused


def min_max(scores: Mapping[K, float]) -> dict[K, float]:
    """Scores scaled to [0, 1], best 1 and worst 0; all equal: 1 if positive, else 0 (as
    LlamaIndex's relative-score fusion)."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    if high == low:
        return dict.fromkeys(scores, 1.0 if high > 0 else 0.0)
    return {key: (value - low) / (high - low) for key, value in scores.items()}


def weighted_scores(legs: Sequence[tuple[float, Mapping[K, float]]]) -> dict[K, float]:
    """``sum of weight * min_max(leg)`` with the weights normalised to sum 1."""
    total = sum(weight for weight, _ in legs)
    if total <= 0:
        raise IndexesError("Weighted fusion needs a positive weight for at least one leg.")
    fused: dict[K, float] = {}
    for weight, scores in legs:
        for key, value in min_max(scores).items():
            fused[key] = fused.get(key, 0.0) + weight / total * value
    return fused
