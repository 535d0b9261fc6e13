"""Tagging metrics against scikit-learn on random data, and hand-made edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from rtaudio.train import metrics


@pytest.fixture
def random_case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = (rng.random((200, 6)) < 0.3).astype(int)
    scores = np.clip(0.4 * y + rng.random((200, 6)) * 0.7, 0, 1)
    return y, scores


def test_map_matches_sklearn_macro(random_case: tuple[np.ndarray, np.ndarray]) -> None:
    y, s = random_case
    m, excluded = metrics.mean_ap(y, s)
    assert excluded == []
    assert m == pytest.approx(average_precision_score(y, s, average="macro"), abs=1e-12)
    np.testing.assert_allclose(metrics.per_class_ap(y, s), average_precision_score(y, s, average=None), atol=1e-12)


def test_f1_matches_sklearn(random_case: tuple[np.ndarray, np.ndarray]) -> None:
    y, s = random_case
    t = np.array([0.3, 0.4, 0.5, 0.6, 0.7, 0.5])
    micro, macro, per = metrics.f1_at(y, s, t)
    pred = (s >= t).astype(int)
    assert micro == pytest.approx(f1_score(y, pred, average="micro"), abs=1e-12)
    assert macro == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
    np.testing.assert_allclose(per, f1_score(y, pred, average=None), atol=1e-12)


@pytest.mark.filterwarnings("ignore:No positive class found")  # from scikit-learn's own macro average below
def test_class_without_positives_is_excluded_and_reported() -> None:
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    s = np.array([[0.9, 0.2, 0.7], [0.1, 0.8, 0.1], [0.8, 0.3, 0.2], [0.2, 0.1, 0.9]])
    ap = metrics.per_class_ap(y, s)
    assert np.isnan(ap[2])
    m, excluded = metrics.mean_ap(y, s)
    assert excluded == [2]
    assert m == pytest.approx(np.mean([average_precision_score(y[:, c], s[:, c]) for c in (0, 1)]))
    # scikit-learn's own macro average would count the empty class as 0
    assert m > average_precision_score(y, s, average="macro")
    micro, macro, per = metrics.f1_at(y, s, [0.5, 0.5, 0.5])
    assert np.isnan(per[2]) and macro == pytest.approx(np.mean(per[:2]))
    assert metrics.tune_thresholds(y, s, default=0.42)[2] == 0.42  # nothing to tune on
    with pytest.raises(ValueError, match="no positives"):
        metrics.pr_curve(y, s, 2)


def test_perfect_scores() -> None:
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    s = y * 0.9 + 0.05
    summary = metrics.summarize(y, s, metrics.tune_thresholds(y, s))
    assert summary.map == 1.0 and summary.micro_f1 == 1.0 and summary.macro_f1 == 1.0
    assert summary.excluded == []


def test_ties_follow_sklearn_and_threshold_sits_mid_gap() -> None:
    y = np.array([[1], [0], [1], [0], [1]])
    s = np.array([[0.5], [0.5], [0.5], [0.3], [0.9]])
    assert metrics.per_class_ap(y, s)[0] == pytest.approx(average_precision_score(y[:, 0], s[:, 0]))
    t = metrics.tune_thresholds(y, s, min_positives=1)
    # tag {0.9}: F1 0.5; tag {0.9, 0.5 x3}: P 3/4 R 1 -> F1 6/7; tag all: P 3/5 -> F1 0.75
    assert t[0] == pytest.approx(0.4)  # midway between the lowest tagged (0.5) and the highest untagged (0.3)
    assert metrics.f1_at(y, s, t)[0] == pytest.approx(6 / 7)


def test_tuned_thresholds_beat_any_fixed_threshold(random_case: tuple[np.ndarray, np.ndarray]) -> None:
    y, s = random_case
    f1 = metrics.f1_at(y, s, metrics.tune_thresholds(y, s, bounds=(0.0, 1.0)))[2]
    for fixed in np.linspace(0.05, 0.95, 19):
        assert (f1 >= metrics.f1_at(y, s, np.full(6, fixed))[2] - 1e-12).all()


def test_equal_f1_prefers_the_higher_threshold() -> None:
    y = np.array([[1], [0], [0], [1]])
    s = np.array([[0.7], [0.6], [0.5], [0.4]])
    # tag {0.7}: P 1, R 1/2 -> F1 2/3; tag all four: P 1/2, R 1 -> F1 2/3: a tie, fewer false alarms wins
    assert metrics.tune_thresholds(y, s, min_positives=1)[0] == pytest.approx(0.65)


def test_thresholds_stay_in_bounds_and_need_enough_positives() -> None:
    y = np.array([[1, 1]] * 3 + [[0, 0]] * 20 + [[1, 0]] * 3)
    s = np.concatenate([np.full((3, 2), 0.05), np.full((20, 2), 0.01), np.full((3, 2), 0.06)])
    t = metrics.tune_thresholds(y, s)
    assert t[0] == 0.2  # its optimum (about 0.03) lies below the bounds
    assert t[1] == 0.5  # 3 positives are too few to tune on
    with pytest.raises(ValueError, match="bounds"):
        metrics.tune_thresholds(y, s, bounds=(0.6, 0.9))


def test_pr_curve_and_cooccurrence() -> None:
    y = np.array([[1, 0], [0, 1], [1, 1]])
    s = np.array([[0.9, 0.6], [0.2, 0.8], [0.7, 0.1]])
    precision, recall = metrics.pr_curve(y, s, 0)
    assert precision[-1] == 1.0 and recall[0] == 1.0
    counts = metrics.cooccurrence(y, s, [0.5, 0.5])
    # clip0: true {0} tagged {0,1}; clip1: true {1} tagged {1}; clip2: true {0,1} tagged {0}
    np.testing.assert_array_equal(counts, [[2, 1], [1, 1]])


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="same shape"):
        metrics.mean_ap(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        metrics.mean_ap(np.full((3, 2), 2), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="one per class"):
        metrics.f1_at(np.zeros((3, 2)), np.zeros((3, 2)), [0.5])
