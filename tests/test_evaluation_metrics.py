"""Metrics of EVALUATION.md on hand-computed examples."""

from __future__ import annotations

import math

import pytest

from components.evaluation.metrics import coverage, mean_metrics, mean_recall, user_metrics


def test_one_user_all_metrics_by_hand() -> None:
    # R = {a, b, c}; L = [a, x, b, y] at K = 4: hits at ranks 1 and 3.
    m = user_metrics(["a", "x", "b", "y"], {"a", "b", "c"}, 4)
    assert m.precision == pytest.approx(2 / 4)
    assert m.recall == pytest.approx(2 / 3)
    assert m.hit_rate == 1.0
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)  # min(|R|, K) = 3 ideal hits
    assert m.ndcg == pytest.approx(dcg / idcg)
    # MAP: (P@1 * 1 + P@3 * 1) / min(3, 4) = (1 + 2/3) / 3
    assert m.map == pytest.approx((1 + 2 / 3) / 3)


def test_only_first_k_count() -> None:
    m = user_metrics(["x", "y", "a"], {"a"}, 2)
    assert (m.precision, m.recall, m.hit_rate, m.ndcg, m.map) == (0.0, 0.0, 0.0, 0.0, 0.0)
    m3 = user_metrics(["x", "y", "a"], {"a"}, 3)
    assert m3.ndcg == pytest.approx((1 / math.log2(4)) / 1.0)
    assert m3.map == pytest.approx(1 / 3)


def test_fewer_relevant_than_k_caps_ideal_and_map_denominator() -> None:
    # |R| = 1 < K = 10: a hit at rank 1 is perfect NDCG and MAP; precision still divides by K.
    m = user_metrics(["a", "b"], {"a"}, 10)
    assert m.ndcg == pytest.approx(1.0)
    assert m.map == pytest.approx(1.0)
    assert m.precision == pytest.approx(1 / 10)
    assert m.recall == 1.0


def test_more_relevant_than_k_caps_ideal_at_k() -> None:
    relevant = {f"i{j}" for j in range(30)}
    m = user_metrics([f"i{j}" for j in range(10)], relevant, 10)
    assert m.ndcg == pytest.approx(1.0)
    assert m.map == pytest.approx(1.0)
    assert m.recall == pytest.approx(10 / 30)


def test_short_and_empty_lists() -> None:
    short = user_metrics(["a"], {"a", "b"}, 10)
    assert short.precision == pytest.approx(0.1)
    assert short.ndcg == pytest.approx(1.0 / (1 + 1 / math.log2(3)))
    empty = user_metrics([], {"a"}, 10)
    assert (empty.precision, empty.recall, empty.hit_rate, empty.ndcg, empty.map) == (0, 0, 0, 0, 0)


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="R"):
        user_metrics(["a"], set(), 10)
    with pytest.raises(ValueError, match="duplicate"):
        user_metrics(["a", "a"], {"a"}, 10)
    with pytest.raises(ValueError, match="k must be"):
        user_metrics(["a"], {"a"}, 0)
    with pytest.raises(ValueError, match="catalog"):
        coverage({"u": ["a"]}, 10, 0)


def test_mean_metrics_average_users_and_coverage() -> None:
    recommendations = {"u1": ["a", "b"], "u2": ["c", "a"], "outsider": ["z"]}
    truth = {"u1": {"a"}, "u2": {"b"}, "u3": {"a"}}  # u3 has no list: zeros
    result = mean_metrics(recommendations, truth, 1, catalog_items=10)
    assert result["precision"] == pytest.approx((1 + 0 + 0) / 3)
    assert result["hit_rate"] == pytest.approx(1 / 3)
    # coverage@1 counts only evaluated users' top-1 items: {a, c}; "z" belongs to a non-evaluated user
    assert result["coverage"] == pytest.approx(2 / 10)
    assert mean_metrics(recommendations, truth, 2, 10)["coverage"] == pytest.approx(3 / 10)


def test_mean_recall_of_whole_lists() -> None:
    recall = mean_recall({"u1": {"a", "b", "q"}, "u2": set()}, {"u1": {"a", "c"}, "u2": {"d"}})
    assert recall == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no evaluated users"):
        mean_recall({}, {})
