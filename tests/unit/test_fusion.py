"""The fusion maths of indexes.retrieval against hand-computed numbers."""

from __future__ import annotations

import pytest

from indexes.errors import IndexesError
from indexes.retrieval import min_max, rrf_scores, weighted_scores


def test_rrf_sums_reciprocal_ranks_counted_from_one() -> None:
    # vector: a b c; keyword: c a
    fused = rrf_scores([["a", "b", "c"], ["c", "a"]], k=60)

    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)  # 0.032522
    assert fused["b"] == pytest.approx(1 / 62)  # 0.016129
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)  # 0.032266
    assert sorted(fused, key=lambda key: -fused[key]) == ["a", "c", "b"]


def test_rrf_k_sets_how_much_the_top_ranks_dominate() -> None:
    fused = rrf_scores([["a", "b", "c"], ["c", "a"]], k=1)

    assert fused == pytest.approx({"a": 1 / 2 + 1 / 3, "b": 1 / 3, "c": 1 / 4 + 1 / 2})
    assert rrf_scores([], k=60) == {}
    assert rrf_scores([[], ["x"]], k=60) == {"x": pytest.approx(1 / 61)}


def test_min_max_scales_best_to_one_and_worst_to_zero() -> None:
    assert min_max({"a": 0.9, "b": 0.5, "c": 0.1}) == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.0})
    assert min_max({"a": 12.0, "b": 4.0}) == {"a": 1.0, "b": 0.0}
    # All equal (one hit, or a tie): 1 when positive, 0 otherwise, as LlamaIndex does.
    assert min_max({"a": 3.2}) == {"a": 1.0}
    assert min_max({"a": 0.4, "b": 0.4}) == {"a": 1.0, "b": 1.0}
    assert min_max({"a": 0.0}) == {"a": 0.0}
    assert min_max({"a": -0.2, "b": -0.2}) == {"a": 0.0, "b": 0.0}
    assert min_max({}) == {}


def test_weighted_fusion_sums_weighted_min_max_scores() -> None:
    vector = {"a": 0.9, "b": 0.5, "c": 0.1}  # -> 1, 0.5, 0
    keyword = {"c": 12.0, "a": 4.0}  # -> 1, 0
    fused = weighted_scores([(0.7, vector), (0.3, keyword)])

    assert fused == pytest.approx({"a": 0.7, "b": 0.35, "c": 0.3})


def test_weighted_fusion_normalises_the_weights() -> None:
    vector = {"a": 0.9, "b": 0.5, "c": 0.1}
    keyword = {"c": 12.0, "a": 4.0}

    # 0.6 and 0.2 weigh as 0.75 and 0.25.
    fused = weighted_scores([(0.6, vector), (0.2, keyword)])
    assert fused == pytest.approx({"a": 0.75, "b": 0.375, "c": 0.25})
    assert weighted_scores([(0.5, vector), (0.5, keyword)]) == pytest.approx(
        weighted_scores([(1.0, vector), (1.0, keyword)])
    )
    # A leg with weight 0 only contributes its keys, at 0.
    assert weighted_scores([(1.0, {"a": 0.9, "b": 0.5}), (0.0, {"z": 9.0})]) == pytest.approx(
        {"a": 1.0, "b": 0.0, "z": 0.0}
    )


def test_weighted_fusion_needs_a_positive_weight() -> None:
    with pytest.raises(IndexesError, match="positive weight"):
        weighted_scores([(0.0, {"a": 1.0}), (0.0, {"b": 1.0})])
