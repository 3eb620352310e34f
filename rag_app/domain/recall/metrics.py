"""Document-level retrieval metrics, computed by ranx (an established IR evaluation library).

Retrieval returns chunks; recall tests judge documents. A document ranks where its best chunk
does: the chunks' document ids, in retrieval order, with repeats removed. ranx then scores these
rankings against the expected documents (binary relevance) exactly as for any IR run.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
# ranx's metrics are numba functions with parallel=True. Without TBB or OpenMP numba runs them on
# its "workqueue" threading layer, which aborts the whole process when two threads launch
# parallel work at once: every call goes through this lock.
_RANX_LOCK = threading.Lock()


def first_occurrences(ids: Iterable[K | None], limit: int | None = None) -> list[K]:
    """``ids`` in order with repeats and Nones removed, at most ``limit`` of them."""
    seen: set[K] = set()
    ranking: list[K] = []
    for item in ids:
        if item is None or item in seen:
            continue
        seen.add(item)
        ranking.append(item)
        if limit is not None and len(ranking) >= limit:
            break
    return ranking


@dataclass(frozen=True)
class Evaluation:
    """Means over the queries, and each query's own value, per ranx metric name."""

    means: dict[str, float]
    per_query: dict[str, dict[str, float]]  # query id -> metric -> value


def evaluate(
    expected: Mapping[str, Mapping[str, int]],
    rankings: Mapping[str, Sequence[str]],
    metrics: Sequence[str],
) -> Evaluation:
    """Score ``rankings`` (query id → document ids, best first) against ``expected`` (query id →
    relevant document id → relevance grade, above 0; recall tests use 1) with ranx ``metrics``
    such as ``recall@10``, ``mrr@10``, ``ndcg@10``. Every query of ``expected`` with a relevant
    document counts; one without a ranking scores 0.

    Blocking and CPU-bound (numba; the first call in a fresh environment compiles the metric
    functions, which takes seconds): call it from a worker thread in async code.
    """
    with _RANX_LOCK:
        return _evaluate(expected, rankings, metrics)


def _evaluate(
    expected: Mapping[str, Mapping[str, int]],
    rankings: Mapping[str, Sequence[str]],
    metrics: Sequence[str],
) -> Evaluation:
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    graded = {
        qid: {doc: grade for doc, grade in relevant.items() if grade > 0}
        for qid, relevant in expected.items()
    }
    queries = [qid for qid, relevant in graded.items() if relevant]
    if not queries:
        return Evaluation(dict.fromkeys(metrics, 0.0), {})
    qrels = Qrels({qid: graded[qid] for qid in queries})
    # ranx orders a run by score: strictly decreasing scores keep the ranking as given.
    run = Run(
        {
            qid: {doc: 1.0 / rank for rank, doc in enumerate(rankings.get(qid, ()), start=1)}
            for qid in queries
        }
    )
    values = ranx_evaluate(qrels, run, list(metrics), return_mean=False, make_comparable=True)
    # ranx returns an array per metric (one query: a bare float), in the qrels' query order.
    qrels_order = list(qrels.keys())
    per_query: dict[str, dict[str, float]] = {qid: {} for qid in qrels_order}
    means: dict[str, float] = {}
    for metric in metrics:
        raw = values[metric] if isinstance(values, dict) else values
        scores = [float(raw)] if _is_scalar(raw) else [float(v) for v in raw]
        for qid, score in zip(qrels_order, scores, strict=True):
            per_query[qid][metric] = score
        means[metric] = sum(scores) / len(scores)
    return Evaluation(means, per_query)


def _is_scalar(value: object) -> bool:
    return not hasattr(value, "__len__")


def ranx_version() -> str:
    """What computes the metrics, for reports."""
    from importlib.metadata import version

    return f"ranx {version('ranx')}"
