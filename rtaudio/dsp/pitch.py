"""Pitch content from the shared power spectrogram: harmonic-sum salience and a YIN-style voicing.

Both are fixed matrices applied to each frame's spectrum, so they export as MatMul plus
reductions. Salience: for each of ``n_pitches`` log-spaced f0 candidates, the weighted sum over
harmonics of how well the magnitude spectrum matches the Hann main lobe a partial at ``h*f0``
would leave (a matched filter, which places sub-bin partials between FFT bins). Voicing: the
frame's autocorrelation from its power spectrum (Wiener-Khinchin: an inverse-DFT cosine basis),
corrected for the window's own autocorrelation, turned into YIN's cumulative-mean-normalised
difference; ``1 - min`` over the pitch lags is near 1 for periodic frames and low for noise.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

EPS = 1e-8


def pitch_candidates(fmin: float, fmax: float, n_pitches: int) -> np.ndarray:
    """Log-spaced candidate f0s (Hz) from ``fmin`` to ``fmax`` inclusive."""
    return fmin * (fmax / fmin) ** (np.arange(n_pitches) / (n_pitches - 1))


def hann_lobe(n_fft: int, offsets: np.ndarray) -> np.ndarray:
    """Magnitude response of the periodic Hann window at ``offsets`` (in bins), main lobe only."""
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    response = np.zeros(offsets.shape)
    inside = np.abs(offsets) < 2.0
    response[inside] = np.abs(np.exp(-2j * np.pi * offsets[inside][:, None] * n / n_fft) @ window) / window.sum()
    return response


def salience_matrix(sample_rate: int, n_fft: int, f0s: np.ndarray, harmonics: int, decay: float) -> np.ndarray:
    """``[n_pitches, bins]``: weights ``decay**(h-1)`` times the unit-norm lobe of harmonic ``h`` below Nyquist."""
    bins = np.arange(n_fft // 2 + 1)
    matrix = np.zeros((len(f0s), len(bins)))
    for h in range(1, harmonics + 1):
        centre = h * f0s * n_fft / sample_rate  # in bins
        lobe = hann_lobe(n_fft, bins[None, :] - centre[:, None])
        lobe /= np.linalg.norm(lobe, axis=1, keepdims=True) + EPS
        matrix += decay ** (h - 1) * lobe * (centre < bins[-1] - 1)[:, None]
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix.astype(np.float32)


def autocorrelation_basis(n_fft: int) -> np.ndarray:
    """``[lags, bins]`` cosine basis: ``basis @ power`` is the frame's circular autocorrelation at lags 0..n_fft/2."""
    bins = np.arange(n_fft // 2 + 1)
    lags = np.arange(n_fft // 2 + 1)[:, None]
    fold = np.where((bins == 0) | (bins == n_fft // 2), 1.0, 2.0)  # one-sided spectrum counts twice
    return fold * np.cos(2 * np.pi * bins * lags / n_fft) / n_fft


class PitchSalience(nn.Module):
    """Power ``[B, bins, T]`` -> ``[B, n_pitches, T]`` log harmonic-sum salience; ``f0s`` are the candidates (Hz)."""

    matrix: torch.Tensor  # buffers

    def __init__(
        self, sample_rate: int = 16000, n_fft: int = 512, fmin: float = 50.0, fmax: float = 1000.0, n_pitches: int = 72, harmonics: int = 8, decay: float = 0.8
    ):
        super().__init__()
        if not 0 < fmin < fmax < sample_rate / 2:
            raise ValueError(f"pitch range {fmin}..{fmax} Hz must lie inside 0..{sample_rate / 2} Hz (Nyquist)")
        self.f0s = pitch_candidates(fmin, fmax, n_pitches)
        matrix = salience_matrix(sample_rate, n_fft, self.f0s, harmonics, decay)
        self.register_buffer("matrix", torch.from_numpy(matrix), persistent=False)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.matmul(self.matrix, torch.sqrt(power + EPS)) + EPS)


class Voicing(nn.Module):
    """Power ``[B, bins, T]`` -> ``[B, 1, T]`` periodicity in [0, 1] over periods of ``fmax``..``fmin``."""

    basis: torch.Tensor  # buffers
    mean_upto: torch.Tensor

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, fmin: float = 62.5, fmax: float = 1000.0):
        super().__init__()
        lag_min, lag_max = int(np.floor(sample_rate / fmax)), int(np.ceil(sample_rate / fmin))
        if not 1 <= lag_min < lag_max <= n_fft // 2:
            raise ValueError(
                f"periods {lag_min}..{lag_max} samples ({fmax}..{fmin} Hz) must fit in half the STFT frame ({n_fft // 2} samples); raise fmin or n_fft"
            )
        basis = autocorrelation_basis(n_fft)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
        window_acf = basis @ np.abs(np.fft.rfft(window)) ** 2  # the taper's own autocorrelation
        basis = basis / (window_acf / window_acf[0])[:, None]
        lags = np.arange(1, n_fft // 2 + 1)
        mean_upto = np.tril(np.ones((len(lags), len(lags)))) / lags[:, None]  # running mean over lags 1..tau
        self.register_buffer("basis", torch.from_numpy(basis.astype(np.float32)), persistent=False)
        self.register_buffer("mean_upto", torch.from_numpy(mean_upto.astype(np.float32)), persistent=False)
        self.lags = slice(lag_min - 1, lag_max)  # rows of lags 1.. -> lag_min..lag_max

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        acf = torch.matmul(self.basis, power)  # [B, lags, T]
        difference = 1.0 - acf[:, 1:] / (acf[:, :1] + EPS)  # YIN's d(tau) / (2 r(0))
        normalised = difference / (torch.matmul(self.mean_upto, difference) + EPS)
        return torch.clamp(1.0 - normalised[:, self.lags].amin(dim=1, keepdim=True), 0.0, 1.0)
