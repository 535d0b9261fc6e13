"""Multi-label tagging metrics on arrays: mAP, per-class AP, F1 at thresholds, tuned thresholds.

Conventions (written down once, used everywhere): ``y_true`` is ``{0,1}`` of shape
``[clips, classes]``, ``scores`` the same shape in ``[0, 1]``. Per-class AP is scikit-learn's
``average_precision_score``. A class with no positive clip in the split has no defined AP
(scikit-learn would score it 0 and drag the mean down), so it is left out of mAP and of
macro-F1 and listed in ``excluded``. A clip is tagged with a class when its score is
``>=`` the class threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve

DEFAULT_THRESHOLD = 0.5
THRESHOLD_BOUNDS = (0.2, 0.8)  # tuned thresholds stay where scores mean something (see tune_thresholds)
MIN_POSITIVES = 5  # fewer validation positives than this: the class keeps the default threshold


@dataclass
class Summary:
    """One row of a results table."""

    map: float  # mean AP over classes with positives (nan when none has any)
    micro_f1: float
    macro_f1: float
    ap: np.ndarray  # [C], nan for classes without positives
    f1: np.ndarray  # [C], nan for classes without positives
    excluded: list[int] = field(default_factory=list)  # class indices without positives

    def row(self) -> dict[str, float]:
        return {"map": self.map, "micro_f1": self.micro_f1, "macro_f1": self.macro_f1}


def _check(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or y.shape != s.shape:
        raise ValueError(f"y_true {y.shape} and scores {s.shape} must both be [clips, classes] with the same shape")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1 (multi-hot targets)")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    return y.astype(np.int64), s


def positives(y_true: np.ndarray) -> np.ndarray:
    """Positive clips per class."""
    return np.asarray(y_true).sum(axis=0).astype(np.int64)


def per_class_ap(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """scikit-learn AP per class; nan for a class with no positives."""
    y, s = _check(y_true, scores)
    ap = np.full(y.shape[1], np.nan)
    for c in np.flatnonzero(y.sum(axis=0) > 0):
        ap[c] = average_precision_score(y[:, c], s[:, c])
    return ap


def mean_ap(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, list[int]]:
    """(macro mAP over classes with positives, indices of the classes left out)."""
    return _mean(per_class_ap(y_true, scores))


def _mean(ap: np.ndarray) -> tuple[float, list[int]]:
    excluded = np.flatnonzero(np.isnan(ap)).tolist()
    return (float(np.nanmean(ap)) if len(excluded) < ap.size else float("nan")), excluded


def f1_at(y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray | list[float]) -> tuple[float, float, np.ndarray]:
    """(micro-F1 over all classes, macro-F1 over classes with positives, per-class F1)."""
    y, s = _check(y_true, scores)
    t = np.asarray(thresholds, dtype=np.float64)
    if t.shape != (y.shape[1],):
        raise ValueError(f"thresholds has shape {t.shape}; expected one per class ({y.shape[1]},)")
    pred = s >= t
    tp = (pred & (y == 1)).sum(axis=0)
    fp = (pred & (y == 0)).sum(axis=0)
    fn = (~pred & (y == 1)).sum(axis=0)
    denom = 2 * tp + fp + fn
    per = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    has_pos = y.sum(axis=0) > 0
    per = np.where(has_pos, per, np.nan)
    total = 2 * tp.sum() + fp.sum() + fn.sum()
    micro = float(2 * tp.sum() / total) if total else 0.0
    macro = float(np.nanmean(per)) if has_pos.any() else float("nan")
    return micro, macro, per


def tune_thresholds(
    y_true: np.ndarray,
    scores: np.ndarray,
    default: float = DEFAULT_THRESHOLD,
    bounds: tuple[float, float] = THRESHOLD_BOUNDS,
    min_positives: int = MIN_POSITIVES,
) -> np.ndarray:
    """Per-class F1-optimal thresholds (tune on validation, apply to test).

    Made to carry over from a small validation split to a building: candidates are the
    midpoints between consecutive distinct scores (never a score itself, so the threshold sits
    in the middle of the gap rather than on one clip's score); on F1 ties the higher one wins
    (fewer false alarms); the optimum is then clipped into ``bounds``, because an optimum at
    0.02 or 0.98 on a few hundred clips does not carry over. Classes with fewer than
    ``min_positives`` positive clips keep ``default``.
    """
    y, s = _check(y_true, scores)
    low, high = bounds
    if not 0.0 <= low <= default <= high <= 1.0:
        raise ValueError(f"threshold bounds {bounds} must satisfy 0 <= low <= default ({default}) <= high <= 1")
    out = np.full(y.shape[1], default, dtype=np.float64)
    for c in np.flatnonzero(y.sum(axis=0) >= max(min_positives, 1)):
        distinct = np.unique(s[:, c])
        candidates = np.concatenate([[distinct[0]], (distinct[:-1] + distinct[1:]) / 2])  # the first tags every clip
        tagged = s[:, c][None, :] >= candidates[:, None]  # [candidates, clips]
        tp = (tagged & (y[:, c] == 1)).sum(axis=1)
        f1 = 2 * tp / np.maximum(tagged.sum(axis=1) + y[:, c].sum(), 1)
        best = candidates[np.flatnonzero(f1 >= f1.max() - 1e-12)[-1]]  # ascending: last = highest
        out[c] = float(np.clip(best, low, high))
    return out


def pr_curve(y_true: np.ndarray, scores: np.ndarray, cls: int) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) of one class, as scikit-learn computes them."""
    y, s = _check(y_true, scores)
    if not y[:, cls].any():
        raise ValueError(f"class {cls} has no positives; its PR curve is undefined")
    precision, recall, _ = precision_recall_curve(y[:, cls], s[:, cls])
    return precision, recall


def cooccurrence(y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray | list[float]) -> np.ndarray:
    """``[C, C]`` counts: clips with true label i that were tagged j (diagonal = hits)."""
    y, s = _check(y_true, scores)
    pred = (s >= np.asarray(thresholds, dtype=np.float64)).astype(np.int64)
    return y.T @ pred


def summarize(y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray | list[float]) -> Summary:
    """mAP, micro/macro-F1 and per-class AP/F1 in one call."""
    ap = per_class_ap(y_true, scores)
    m, excluded = _mean(ap)
    micro, macro, f1 = f1_at(y_true, scores, thresholds)
    return Summary(m, micro, macro, ap, f1, excluded)
