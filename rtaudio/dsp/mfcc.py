"""MFCC from the shared log-mel: a fixed DCT-II (orthonormal) matrix, so no second STFT in the graph."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

DB_PER_NEPER = 10.0 / math.log(10.0)  # natural log of power -> decibels


def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II rows ``[n_out, n_in]``, as ``scipy.fft.dct(type=2, norm="ortho")`` (librosa's)."""
    n = np.arange(n_in)[None, :]
    k = np.arange(n_out)[:, None]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    basis[0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


class MFCC(nn.Module):
    """``[B, n_mels, T]`` natural-log mel power (``LogMel``) -> ``[B, n_mfcc, T]`` MFCCs.

    Scaled like ``librosa.feature.mfcc``: the log-mel is turned into decibels (``10*log10``, as
    ``power_to_db`` does) and, when ``top_db`` is set, floored at ``top_db`` below the loudest
    mel bin of each example's window (``power_to_db``'s clamp, per example instead of per call).
    """

    dct: torch.Tensor  # buffers

    def __init__(self, n_mels: int = 64, n_mfcc: int = 20, top_db: float | None = 80.0):
        super().__init__()
        if not 1 <= n_mfcc <= n_mels:
            raise ValueError(f"n_mfcc={n_mfcc} must be between 1 and n_mels={n_mels}")
        self.register_buffer("dct", torch.from_numpy(dct_matrix(n_mels, n_mfcc)), persistent=False)
        self.top_db = top_db

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        db = logmel * DB_PER_NEPER
        if self.top_db is not None:
            db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - self.top_db)
        return torch.matmul(self.dct, db)
