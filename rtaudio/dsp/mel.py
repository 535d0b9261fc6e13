"""Log-mel spectrogram from the conv STFT and a fixed (Slaney, librosa-default) mel matrix."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rtaudio.dsp.stft import ConvSTFT


def mel_matrix(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """``librosa.filters.mel`` (htk=False, norm='slaney') as ``[n_mels, bins]``, computed without librosa."""

    def hz_to_mel(f: float | np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        lin = f / (200.0 / 3)
        log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(f >= 1000.0, log, lin)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        lin = (200.0 / 3) * m
        log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
        return np.where(m >= 15.0, log, lin)

    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[:, None]
    return weights.astype(np.float32)


class LogMel(nn.Module):
    """``log(eps + mel power)`` as ``[batch, n_mels, frames]``; eps keeps silence finite in fp16 too."""

    fb: torch.Tensor  # buffers

    def __init__(
        self, sample_rate: int = 16000, n_fft: int = 512, hop: int = 160, n_mels: int = 64, fmin: float = 50.0, fmax: float | None = None, eps: float = 1e-6
    ):
        super().__init__()
        self.stft = ConvSTFT(n_fft, hop)
        fb = mel_matrix(sample_rate, n_fft, n_mels, fmin, fmax or sample_rate / 2)
        self.register_buffer("fb", torch.from_numpy(fb), persistent=False)
        self.eps = eps

    def from_power(self, power: torch.Tensor) -> torch.Tensor:
        """Log-mel of an already computed power spectrogram (shared STFT)."""
        return torch.log(torch.matmul(self.fb, power) + self.eps)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.from_power(self.stft(waveform))
