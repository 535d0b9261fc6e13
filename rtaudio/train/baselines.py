"""Reference points for real-audio results: a linear probe on the pretrained (teacher) embedding and
logistic regression on hand features (log-mel and MFCC statistics).

Both are trained on windows of the training clips (each window takes its clip's labels) and
score a clip like the runtime and ``rtaudio eval`` do: the maximum over its windows. A model
that does not beat them has learnt nothing the embedding or plain spectra do not already give.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtaudio.train.data import Clip
from rtaudio.train.teacher import TeacherCache, aisfx_teacher, build_teacher_cache, clip_key
from rtaudio.train.windowing import clip_windows


def window_targets(clip: Clip, labels: Sequence[str], windows: int) -> np.ndarray:
    """``[windows, C]``: each window of ``clip`` takes its clip's labels (those among ``labels``)."""
    y = np.zeros((windows, len(labels)), np.float32)
    y[:, [labels.index(lb) for lb in clip.labels if lb in labels]] = 1.0
    return y


def window_set(clips: Sequence[Clip], cache: TeacherCache, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings [windows, D], targets [windows, C], owner clip index [windows]) of ``clips``."""
    xs, ys, owners = [], [], []
    for n, clip in enumerate(clips):
        emb = cache.clip_embeddings(clip_key(clip))
        xs.append(emb)
        ys.append(window_targets(clip, labels, len(emb)))
        owners.append(np.full(len(emb), n))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(owners)


class LinearProbe:
    """Standardised features -> one L2-regularised logistic regression per label (labels without both
    classes in training score 0)."""

    def __init__(self, c: float = 0.1):  # chosen on the corpus val split (0.01 / 0.1 / 1.0)
        self.c = c

    def fit(self, x: np.ndarray, y: np.ndarray) -> LinearProbe:
        from sklearn.linear_model import LogisticRegression

        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        z = (x - self.mean) / self.std
        self.models: list[Any] = []  # a fitted LogisticRegression per label; None where training had one class only
        for c in range(y.shape[1]):
            positives = int(y[:, c].sum())
            if positives == 0 or positives == len(y):
                self.models.append(None)
                continue
            self.models.append(LogisticRegression(C=self.c, max_iter=2000, class_weight="balanced").fit(z, y[:, c]))
        return self

    def tensors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(mean [D], std [D], weights [C, D], biases [C]) of the standardised probe; labels without a model
        get zero weights and bias, so a head built from them adds nothing for those labels."""
        weight = np.zeros((len(self.models), len(self.mean)), np.float32)
        bias = np.zeros(len(self.models), np.float32)
        for c, m in enumerate(self.models):
            if m is not None:
                weight[c], bias[c] = m.coef_[0], m.intercept_[0]
        return self.mean.astype(np.float32), self.std.astype(np.float32), weight, bias

    def logits(self, x: np.ndarray, missing: float) -> np.ndarray:
        """Log-odds per label; ``missing`` for labels that had no model."""
        z = (x - self.mean) / self.std
        return np.stack([m.decision_function(z) if m is not None else np.full(len(x), missing) for m in self.models], axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities per label (logistic regression's sigmoid of its log-odds; 0 for labels without a model)."""
        from scipy.special import expit

        return expit(self.logits(x, -np.inf))


def clip_max(window_scores: np.ndarray, owners: np.ndarray, clips: int) -> np.ndarray:
    """Clip scores: the maximum of each clip's window scores."""
    out = np.full((clips, window_scores.shape[1]), -np.inf)
    np.maximum.at(out, owners, window_scores)
    return out


def hand_features(windows: np.ndarray, sample_rate: int) -> np.ndarray:
    """Per window: mean and standard deviation of a 64-band log-mel and its 20 MFCCs over time (168 numbers)."""
    from rtaudio.dsp import LogMel
    from rtaudio.dsp.mfcc import dct_matrix

    mel = LogMel(sample_rate, 512, 160, 64)
    with torch.no_grad():
        logmel = mel(torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))).numpy()  # [n, 64, T]
    mfcc = np.einsum("km,bmt->bkt", dct_matrix(64, 20), logmel)
    return np.concatenate([logmel.mean(2), logmel.std(2), mfcc.mean(2), mfcc.std(2)], axis=1).astype(np.float32)


def baseline_scores(
    splits: Mapping[str, Sequence[Clip]], labels: Sequence[str], sample_rate: int, window_s: float, hop_s: float, cache_path: Path
) -> dict[str, dict[str, np.ndarray]]:
    """Clip scores of both baselines on every split but train, fitted on ``splits['train']``:
    ``{"linear probe on the aisfx embedding": {split: [clips, C]}, "hand features + logistic regression": {...}}``."""
    every = [c for clips in splits.values() for c in clips]
    cache = build_teacher_cache(every, aisfx_teacher(sample_rate), sample_rate, window_s, hop_s, cache_path)
    window, hop = round(window_s * sample_rate), round(hop_s * sample_rate)

    def hand(clips: Sequence[Clip]) -> np.ndarray:
        return np.concatenate([hand_features(clip_windows(c, sample_rate, window, hop), sample_rate) for c in clips])

    sets = {split: window_set(clips, cache, labels) for split, clips in splits.items()}
    x, y, _ = sets["train"]
    probe = LinearProbe().fit(x, y)
    hand_probe = LinearProbe().fit(hand(splits["train"]), y)
    out: dict[str, dict[str, np.ndarray]] = {"linear probe on the aisfx embedding": {}, "hand features + logistic regression": {}}
    for split, (xs, _, owners) in sets.items():
        if split == "train":
            continue
        out["linear probe on the aisfx embedding"][split] = clip_max(probe.predict(xs), owners, len(splits[split]))
        out["hand features + logistic regression"][split] = clip_max(hand_probe.predict(hand(splits[split])), owners, len(splits[split]))
    return out
