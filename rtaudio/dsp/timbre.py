"""Per-frame spectral timbre descriptors from the shared power spectrogram, as librosa defines them.

Centroid, bandwidth (p=2), rolloff and contrast use the magnitude spectrum and flatness the
power spectrum, like ``librosa.feature.spectral_*`` with their defaults. Everything is a
matmul, a reduction or a fixed-``k`` TopK over fixed bins, so it exports without data-dependent
shapes: the rolloff's cumulative sum is a triangular matmul and its threshold search a count.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

AMIN = 1e-10  # librosa's floor for flatness and power_to_db
TOP_DB = 80.0  # power_to_db's default clamp, applied per example


def contrast_bands(sample_rate: int, n_fft: int, fmin: float = 200.0, n_bands: int = 6, quantile: float = 0.02) -> list[tuple[list[int], int]]:
    """``(bins, k)`` per octave band exactly as ``librosa.feature.spectral_contrast`` picks them.

    ``k`` is how many of the band's sorted bins are averaged into its valley and its peak.
    """
    freq = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    octaves = np.zeros(n_bands + 2)
    octaves[1:] = fmin * 2.0 ** np.arange(n_bands + 1)
    if np.any(octaves[:-1] >= sample_rate / 2):
        raise ValueError(f"contrast bands from fmin={fmin} Hz over {n_bands} octaves exceed Nyquist ({sample_rate / 2} Hz)")
    bands = []
    for band, (low, high) in enumerate(zip(octaves[:-1], octaves[1:])):
        member = (freq >= low) & (freq <= high)
        idx = np.flatnonzero(member)
        if band > 0:
            member[idx[0] - 1] = True
        if band == n_bands:
            member[idx[-1] + 1 :] = True
        bins = np.flatnonzero(member)
        if band < n_bands:
            bins = bins[:-1]
        k = max(int(np.rint(quantile * member.sum())), 1)
        bands.append((bins.tolist(), k))
    return bands


def octave_bands_below_nyquist(sample_rate: int, fmin: float = 200.0, most: int = 6) -> int:
    """How many contrast octaves above ``fmin`` start below Nyquist (librosa's limit), at most ``most``."""
    return max(1, min(most, int(np.floor(np.log2(sample_rate / 2 / fmin) - 1e-9)) + 1))


def power_to_db(x: torch.Tensor) -> torch.Tensor:
    """``librosa.power_to_db(x, top_db=80)`` with the clamp taken per example (dims 1..)."""
    db = 10.0 * torch.log10(torch.clamp(x, min=AMIN))
    return torch.maximum(db, db.amax(dim=tuple(range(1, db.dim())), keepdim=True) - TOP_DB)


class SpectralDescriptors(nn.Module):
    """Power ``[B, bins, T]`` -> ``[B, 4 + n_bands + 1, T]``: centroid, bandwidth, flatness, rolloff (Hz
    where a frequency), then the contrast per band (dB). ``slices`` names the rows."""

    freq: torch.Tensor  # buffers (band0, band1... too, read by name)
    cumulative: torch.Tensor

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, roll_percent: float = 0.85, fmin: float = 200.0, n_bands: int = 6, quantile: float = 0.02):
        super().__init__()
        bins = n_fft // 2 + 1
        freq = torch.linspace(0, sample_rate / 2, bins, dtype=torch.float64)
        self.register_buffer("freq", freq.float()[:, None], persistent=False)
        # cumsum over bins as a matmul: row b sums bins 0..b
        self.register_buffer("cumulative", torch.tril(torch.ones(bins, bins)), persistent=False)
        self.bands = contrast_bands(sample_rate, n_fft, fmin, n_bands, quantile)
        for i, (band_bins, _) in enumerate(self.bands):
            self.register_buffer(f"band{i}", torch.tensor(band_bins), persistent=False)
        self.roll_percent, self.bin_hz = roll_percent, sample_rate / n_fft
        self.slices = {"centroid": slice(0, 1), "bandwidth": slice(1, 2), "flatness": slice(2, 3), "rolloff": slice(3, 4), "contrast": slice(4, 5 + n_bands)}

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        magnitude = torch.sqrt(power + AMIN**2)
        total = magnitude.sum(dim=1, keepdim=True)
        weights = magnitude / (total + AMIN)
        centroid = (weights * self.freq).sum(dim=1, keepdim=True)
        bandwidth = torch.sqrt((weights * (self.freq - centroid) ** 2).sum(dim=1, keepdim=True))
        floored = torch.clamp(power, min=AMIN)
        flatness = torch.exp(torch.log(floored).mean(dim=1, keepdim=True)) / floored.mean(dim=1, keepdim=True)
        below = torch.matmul(self.cumulative, magnitude) < self.roll_percent * total
        rolloff = below.to(power.dtype).sum(dim=1, keepdim=True) * self.bin_hz
        return torch.cat([centroid, bandwidth, flatness, rolloff, self.contrast(magnitude)], dim=1)

    def contrast(self, magnitude: torch.Tensor) -> torch.Tensor:
        """Octave-band peak/valley contrast (dB): means of the ``k`` largest and smallest bins per band."""
        peaks, valleys = [], []
        for i, (_, k) in enumerate(self.bands):
            band = magnitude.index_select(1, getattr(self, f"band{i}"))
            peaks.append(torch.topk(band, k, dim=1).values.mean(dim=1, keepdim=True))
            valleys.append(torch.topk(band, k, dim=1, largest=False).values.mean(dim=1, keepdim=True))
        return power_to_db(torch.cat(peaks, dim=1)) - power_to_db(torch.cat(valleys, dim=1))
