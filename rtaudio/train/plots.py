"""PNG plots for the eval report: per-class AP bars, PR curves of the worst classes, co-occurrence.

matplotlib runs headless (Agg), so the report renders on a server or in CI.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rtaudio.train import metrics  # noqa: E402

WORST_CLASSES = 4


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ap_bars(labels: list[str], ap: np.ndarray, path: Path) -> Path:
    """Horizontal bars of per-class AP, worst at the top; classes without positives are left out."""
    order = [i for i in np.argsort(ap) if not np.isnan(ap[i])]
    fig, ax = plt.subplots(figsize=(6, 0.3 * max(len(order), 3) + 1))
    ax.barh([labels[i] for i in order], [ap[i] for i in order], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("average precision")
    ax.set_title(f"Per-class AP (mAP {np.nanmean(ap):.3f})" if order else "Per-class AP (no class has positives)")
    return _save(fig, path)


def worst_pr_curves(labels: list[str], y_true: np.ndarray, scores: np.ndarray, ap: np.ndarray, path: Path) -> Path:
    """Precision-recall curves of the classes with the lowest AP."""
    worst = [i for i in np.argsort(ap) if not np.isnan(ap[i])][:WORST_CLASSES]
    fig, ax = plt.subplots(figsize=(5, 4))
    for i in worst:
        precision, recall = metrics.pr_curve(y_true, scores, int(i))
        ax.step(recall, precision, where="post", label=f"{labels[i]} (AP {ap[i]:.2f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"PR curves, {len(worst)} worst classes")
    if worst:
        ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def cooccurrence_plot(rows: list[str], labels: list[str], counts: np.ndarray, path: Path) -> Path:
    """Clips with true label (row) that were tagged with label (column) at the thresholds."""
    size = 0.45 * len(rows) + 2
    fig, ax = plt.subplots(figsize=(0.45 * len(labels) + 3, size))
    image = ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title("True vs predicted label counts")
    if len(labels) <= 20:  # numbers stay legible
        peak = counts.max() or 1
        for (i, j), value in np.ndenumerate(counts):
            if value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=7, color="white" if value > peak / 2 else "black")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _save(fig, path)
