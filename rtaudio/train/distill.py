"""Knowledge distillation from the pretrained stream into the compact streams (EfficientAT's recipe,
on a CPU budget).

The teacher (the aisfx CNN; ``rtaudio.train.teacher``) runs once over every window of the
training audio, labelled or not, and its embeddings are cached on disk. A linear probe
fitted on the labelled windows turns them into teacher tag logits. Students then train on
those very windows: a KD loss toward the teacher's soft tags on every window (the only
signal unlabelled audio gives) and a similarity-preserving embedding loss (Tung & Mori,
ICCV 2019: the batch's pairwise cosine similarities of the fused student embedding match
the teacher's), which needs no projection layer and so leaves the exported graph as it is.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from rtaudio.model.fused import FusedTagger
from rtaudio.train.baselines import LinearProbe, window_set, window_targets
from rtaudio.train.data import Clip, ClipDataset, DataError
from rtaudio.train.teacher import TeacherCache
from rtaudio.train.windowing import clip_audio, clip_windows, cut_window, window_starts

log = logging.getLogger(__name__)

NO_POSITIVES_LOGIT = -10.0  # teacher logit of a label the probe never saw a positive of


def unlabelled_clips(paths: Sequence[Path]) -> list[Clip]:
    """The train-split rows of unlabelled CSVs (``rtaudio data debian``'s unlabelled.csv: path, split);
    rows of val/test packages are left out so evaluation audio never trains anything."""
    clips = []
    for path in paths:
        if not path.is_file():
            raise DataError(f"distill.unlabelled: {path}: no such file (rtaudio data debian writes unlabelled.csv)")
        with open(path, newline="", encoding="utf-8-sig") as fh:
            for row in csv.DictReader(fh):
                if (row.get("split") or "train").strip() == "train" and (row.get("path") or "").strip():
                    clips.append(Clip(path.parent / row["path"].strip(), [], "train"))
    return clips


def memory_window_set(
    stream: nn.Module, clips: Sequence[Clip], labels: Sequence[str], sample_rate: int, window_s: float, hop_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """(teacher embeddings ``[windows, D]``, targets ``[windows, C]``) of every window of in-memory clips
    (synthetic scenes), embedded now: they are regenerated from their seed each run, so never cached."""
    from rtaudio.train.teacher import embed_windows

    window, hop = round(window_s * sample_rate), round(hop_s * sample_rate)
    cut = [clip_windows(clip, sample_rate, window, hop) for clip in clips]
    targets = [window_targets(clip, labels, len(w)) for clip, w in zip(clips, cut)]
    windows = np.concatenate(cut) if cut else np.zeros((0, window), np.float32)
    return embed_windows(stream, windows), np.concatenate(targets) if targets else np.zeros((0, len(labels)), np.float32)


def fit_probe(cache: TeacherCache, labelled: Sequence[Clip], labels: Sequence[str], extra: tuple[np.ndarray, np.ndarray] | None = None) -> LinearProbe:
    """A linear probe on the cached teacher embeddings of the ``labelled`` clips' windows, plus ``extra``
    (embeddings, targets) such as the synthetic windows of ``memory_window_set``."""
    x, y, _ = window_set(labelled, cache, labels)
    if extra is not None and len(extra[0]):
        x, y = np.concatenate([x, extra[0]]), np.concatenate([y, extra[1]])
    return LinearProbe().fit(x, y)


def teacher_logits(probe: LinearProbe, cache: TeacherCache) -> np.ndarray:
    """Teacher tag logits ``[cache windows, C]`` of every cached window."""
    return probe.logits(cache.embeddings.astype(np.float32), NO_POSITIVES_LOGIT).astype(np.float32)


def load_probe_head(model: FusedTagger, probe: LinearProbe) -> None:
    """Put ``probe`` into the model's probe head (kept fixed in training: ``set_stage``). Its standardisation
    and weights apply to the pretrained stream's raw embedding, which is the cached teacher embedding only
    while that stream's CNN keeps aisfx's weights, hence the warning."""
    assert model.probe is not None
    if model.streams["pretrained"].trainable != "frozen":
        log.warning(
            "probe_head: the pretrained stream trains (%s), so the probe fitted on the cached aisfx embeddings drifts from what the head will see",
            model.streams["pretrained"].trainable,
        )
    model.probe.load_probe(*(torch.from_numpy(a) for a in probe.tensors()))
    log.info("probe_head: a linear probe over %d labels with positives fitted on the cached embeddings", sum(m is not None for m in probe.models))


class DistillDataset(Dataset):
    """Training windows with their teacher outputs:
    ``(waveform, targets, labelled, teacher embedding, teacher logits, has teacher)``.

    File clips in the cache give one of their cached windows at random (the window the teacher
    saw); in-memory clips (synthetic) give their own window with no teacher; unlabelled clips
    give targets that the tagging loss ignores (``labelled`` 0).
    """

    def __init__(self, base: ClipDataset, unlabelled: Sequence[Clip], cache: TeacherCache, logits: np.ndarray, window_s: float, hop_s: float):
        self.base, self.cache, self.logits = base, cache, logits
        self.clips = list(base.clips) + list(unlabelled)
        self.labelled = len(base.clips)
        self.window, self.hop = round(window_s * base.sample_rate), round(hop_s * base.sample_rate)
        self.dim = cache.embeddings.shape[1]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        clip = self.clips[i]
        labels = len(self.base.labels)
        key = str(clip.path) if clip.path is not None else None
        if key is None or key not in self.cache.index:
            x, y = self.base[i]  # in memory (synthetic): no teacher
            return x, y, torch.tensor(1.0), torch.zeros(self.dim), torch.zeros(labels), torch.tensor(0.0)
        rows = self.cache.rows(key)
        r = int(torch.randint(rows.start, rows.stop, (1,)))
        audio = clip_audio(clip, self.base.sample_rate)
        start = window_starts(len(audio), self.window, self.hop)[r - rows.start]  # the window the teacher saw
        x = torch.from_numpy(np.ascontiguousarray(cut_window(audio, start, self.window), dtype=np.float32))
        y = torch.zeros(labels)
        if i < self.labelled:
            y[[self.base.index[lb] for lb in clip.labels]] = 1.0
        return (
            x,
            y,
            torch.tensor(float(i < self.labelled)),
            torch.from_numpy(self.cache.embeddings[r].astype(np.float32)),
            torch.from_numpy(self.logits[r]),
            torch.tensor(1.0),
        )


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Mean BCE over the rows where ``rows`` is 1 (0 when there are none)."""
    per_row = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(dim=1)
    return (per_row * rows).sum() / rows.sum().clamp(min=1.0)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, rows: torch.Tensor, temperature: float) -> torch.Tensor:
    """BCE of the student's tempered logits toward the teacher's tempered probabilities, on ``rows``."""
    return masked_bce(student / temperature, torch.sigmoid(teacher / temperature), rows)


def similarity_loss(student: torch.Tensor, teacher: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving KD: MSE between the batch's cosine-similarity matrices (rows with a teacher)."""
    keep = rows > 0
    if int(keep.sum()) < 2:
        return student.sum() * 0.0
    s = nn.functional.normalize(student[keep], dim=1)
    t = nn.functional.normalize(teacher[keep], dim=1)
    return nn.functional.mse_loss(s @ s.T, t @ t.T)
