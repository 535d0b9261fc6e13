"""Audio files -> mono float32 at a wanted rate: the one reader training, export and the runtime share.

A leaf: numpy, soundfile and soxr only, nothing of rtaudio, no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def read_mono(path: Path | BinaryIO, sample_rate: int) -> np.ndarray:
    """A whole audio file (a path, or an open binary file such as an archive member's bytes) as mono
    float32 at ``sample_rate``; ValueError naming the file if unreadable."""
    import soundfile as sf
    import soxr

    try:
        audio, rate = sf.read(path if hasattr(path, "read") else str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise ValueError(f"{path}: cannot read audio ({exc}); {', '.join(s[1:].upper() for s in AUDIO_SUFFIXES)} are supported") from exc
    mono = audio.mean(axis=1)
    return mono if rate == sample_rate else soxr.resample(mono, rate, sample_rate).astype(np.float32)
