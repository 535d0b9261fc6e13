"""Teacher outputs computed once and cached on disk (the EfficientAT recipe on a CPU budget).

The teacher is the pretrained stream's network (aisfx CNN). For every clip it sees the same
windows the evaluation and the runtime see (the model's window at its hop, the tail
covered) and its 512-d embedding of each is stored, float16, with the clip's path. A tag
head fitted on those embeddings (``fit_teacher_head``) then gives teacher logits for every
window, labelled or not; students (the compact streams) learn from both.

The cache file names the teacher's weights hash, rate, window and hop; a cache made with
other settings is refused rather than silently reused.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from rtaudio.train.data import Clip
from rtaudio.train.windowing import clip_windows

if TYPE_CHECKING:
    from rtaudio.dsp.sfx_mel import SfxLogMel

log = logging.getLogger(__name__)


@dataclass
class TeacherCache:
    """Per-window teacher embeddings of a set of clips: clip ``i``'s windows are rows ``offsets[i]:offsets[i+1]``."""

    keys: list[str]
    offsets: np.ndarray  # [clips + 1] int64
    embeddings: np.ndarray  # [windows, D] float16
    settings: dict[str, str]

    def rows(self, key: str) -> slice:
        i = self.index[key]
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    @cached_property
    def index(self) -> dict[str, int]:
        """Clip key -> its position in ``keys``."""
        return {k: i for i, k in enumerate(self.keys)}

    def clip_embeddings(self, key: str) -> np.ndarray:
        return self.embeddings[self.rows(key)].astype(np.float32)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            keys=np.array(self.keys),
            offsets=self.offsets,
            embeddings=self.embeddings,
            settings=np.array([f"{k}={v}" for k, v in sorted(self.settings.items())]),
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, settings: dict[str, str] | None = None) -> TeacherCache:
        """The cache at ``path``; ValueError when ``settings`` are given and differ from the cache's."""
        with np.load(path) as data:
            found = dict(item.split("=", 1) for item in data["settings"].tolist())
            if settings is not None and found != settings:
                raise ValueError(f"{path}: teacher cache made with {found}, not {settings}; delete it to recompute")
            return cls(data["keys"].tolist(), data["offsets"], data["embeddings"], found)


def clip_key(clip: Clip) -> str:
    """A clip's cache key: its file path (in-memory clips have none and are not cached)."""
    if clip.path is None:
        raise ValueError("in-memory clips (synthetic) are not cached; their teacher is run on the fly")
    return str(clip.path)


def weights_digest(stream: torch.nn.Module) -> str:
    """Hash of what makes the teacher's embedding: the CNN's weights and the front-end's settings (not
    the stream's projection, which is trained and re-initialised per run)."""
    f = cast("SfxLogMel", stream.features)
    cnn = cast(torch.nn.Module, stream.cnn)
    digest = hashlib.sha256(f"{f.win_length} {f.hop} {f.n_fft} {f.bands} {f.peak_normalise} {f.peak_floor}".encode())
    for name, value in sorted(cnn.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def embed_windows(stream: torch.nn.Module, windows: np.ndarray, batch: int = 32) -> np.ndarray:
    """The pretrained stream's 512-d teacher embedding of each window ``[n, samples]``."""
    from rtaudio.model.common import Features

    out = []
    stream.eval()
    with torch.no_grad():
        for i in range(0, len(windows), batch):
            x = torch.from_numpy(np.ascontiguousarray(windows[i : i + batch], dtype=np.float32))
            out.append(stream(Features(x, None, None)).teacher.numpy())  # type: ignore[arg-type]  # the stream reads only the waveform
    return np.concatenate(out) if out else np.zeros((0, 512), np.float32)


def build_teacher_cache(
    clips: Sequence[Clip], stream: torch.nn.Module, sample_rate: int, window_s: float, hop_s: float, path: Path, batch: int = 32
) -> TeacherCache:
    """Embed every window of ``clips`` (files only) with ``stream``, reusing what ``path`` already holds
    for the same settings: only clips it lacks are computed, and the merged cache is written back."""
    settings = {"weights": weights_digest(stream), "sample_rate": str(sample_rate), "window_s": str(window_s), "hop_s": str(hop_s)}
    old = TeacherCache([], np.zeros(1, np.int64), np.zeros((0, 512), np.float16), settings)
    if path.is_file():
        try:
            old = TeacherCache.load(path, settings)
        except ValueError as exc:
            log.warning("%s", exc)
    by_key = {clip_key(c): c for c in clips}
    todo = sorted(set(by_key) - set(old.keys))
    if not todo:
        log.info("teacher cache %s: all %d clips there (%d windows)", path, len(by_key), len(old.embeddings))
        return old
    window, hop = round(window_s * sample_rate), round(hop_s * sample_rate)
    keys, offsets, parts = list(old.keys), list(old.offsets), [old.embeddings] if old.keys else []
    for n, key in enumerate(todo):
        emb = embed_windows(stream, clip_windows(by_key[key], sample_rate, window, hop), batch)
        keys.append(key)
        parts.append(emb.astype(np.float16))
        offsets.append(offsets[-1] + len(emb))
        if n % 500 == 0:
            log.info("teacher: %d/%d new clips, %d windows", n, len(todo), offsets[-1])
    cache = TeacherCache(keys, np.array(offsets, np.int64), np.concatenate(parts), settings)
    cache.save(path)
    log.info("teacher cache %s: %d clips (%d new), %d windows", path, len(keys), len(todo), len(cache.embeddings))
    return cache


def aisfx_teacher(sample_rate: int) -> torch.nn.Module:
    """The pretrained stream with aisfx's weights (fetched and checked at training time), in eval mode."""
    from rtaudio.model.config import ModelConfig
    from rtaudio.model.streams.pretrained import PretrainedStream
    from rtaudio.train.pretrained import fetch_aisfx, load_aisfx_state

    stream = PretrainedStream(ModelConfig(labels=["_"], sample_rate=sample_rate, streams=["pretrained"]))
    stream.load_aisfx(load_aisfx_state(fetch_aisfx()))
    return stream.eval()
