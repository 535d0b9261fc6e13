"""Clips cut into model windows and scored the way the runtime scores a stream.

A clip shorter than the window is padded to one window; a longer one is cut every hop with
the tail covered, and its score is the maximum over its windows. Evaluation
(``rtaudio.train.evaluate``, ``evaluate_text``), the teacher cache (``teacher``), the baselines
and distillation all cut clips here, so they all see the same windows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import soxr

from rtaudio.contract import ModelDir
from rtaudio.train.data import Clip, fit_window, read_audio

BATCH = 32
ScoreFn = Callable[[np.ndarray], dict[str, np.ndarray]]  # windows [B, N] -> named scores [B, C]


def clip_audio(clip: Clip, sample_rate: int) -> np.ndarray:
    """A clip's whole audio as float32 mono at ``sample_rate``."""
    if clip.audio is None:
        assert clip.path is not None  # a clip holds its audio or names its file
        return read_audio(clip.path, sample_rate)
    if clip.sample_rate and clip.sample_rate != sample_rate:
        return soxr.resample(clip.audio, clip.sample_rate, sample_rate).astype(np.float32)
    return clip.audio


def window_starts(samples: int, window: int, hop: int) -> list[int]:
    """Where a clip of ``samples`` is cut: every ``hop``, the tail covered; ``[0]`` for a short clip (padded)."""
    if samples <= window:
        return [0]
    starts = list(range(0, samples - window + 1, hop))
    if starts[-1] + window < samples:
        starts.append(samples - window)
    return starts


def cut_window(audio: np.ndarray, start: int, window: int) -> np.ndarray:
    """The window at ``start`` of ``window_starts``: a short clip padded to ``window``."""
    return fit_window(audio, window, random=False) if len(audio) <= window else audio[start : start + window]


def clip_windows(clip: Clip, sample_rate: int, window: int, hop: int) -> np.ndarray:
    """``[n, window]``: a short clip padded, a long one cut at ``hop`` with the tail covered."""
    audio = clip_audio(clip, sample_rate)
    return np.stack([cut_window(audio, s, window) for s in window_starts(len(audio), window, hop)])


def _batches(clips: Sequence[Clip], sample_rate: int, window: int, hop: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(windows [<=BATCH, window], clip index of each) across all clips."""
    pending, owners = [], []
    for i, clip in enumerate(clips):
        for w in clip_windows(clip, sample_rate, window, hop):
            pending.append(w)
            owners.append(i)
            if len(pending) == BATCH:
                yield np.stack(pending).astype(np.float32), np.array(owners)
                pending, owners = [], []
    if pending:
        yield np.stack(pending).astype(np.float32), np.array(owners)


def score_clips(clips: Sequence[Clip], info: ModelDir, fn: ScoreFn) -> dict[str, np.ndarray]:
    """Clip scores ``[clips, C]`` per output of ``fn``: the maximum over each clip's windows."""
    meta = info.info
    out: dict[str, np.ndarray] = {}
    for batch, owners in _batches(clips, meta.sample_rate, meta.window_samples, meta.hop_samples):
        for name, scores in fn(batch).items():
            acc = out.setdefault(name, np.full((len(clips), scores.shape[1]), -np.inf))
            np.maximum.at(acc, owners, scores)
    return out
