"""The aisfx front-end (Ma & Lerch, ISMIR 2022) at any sample rate, as exportable conv/matmul/log ops.

The pretrained aisfx CNN was trained on 44.1 kHz log-mels: a 2048-sample Hann window, hop 1024,
96 HTK-mel bands over 0..22050 Hz each normalised to unit sum, ``log10(1e4 * power + 1)`` divided
by the training maximum 9.4578. At another model rate the window and hop keep their duration
(the STFT is zero-padded to a power of two), the bands keep their frequencies in Hz, and the bands
that would lie above the Nyquist frequency are dropped (69 of 96 remain at 16 kHz): the CNN is
convolutional and averages over frequency, so it takes fewer bands. A gain keeps the band powers
of a given (band-limited) sound what they were at 44.1 kHz, so the log compression sees the same
levels. The mel matrix is computed here, without librosa, so the runtime does not need it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from rtaudio.dsp.stft import ConvSTFT

AISFX_RATE = 44100
AISFX_WINDOW, AISFX_HOP = 2048, 1024  # samples at AISFX_RATE
AISFX_BANDS, AISFX_FMAX = 96, 22050.0
AISFX_MAX = 9.457798957824707  # aisfx's 'original' min-max normalisation (min 0)


def sfx_band_edges() -> np.ndarray:
    """The 98 HTK-mel points (Hz) of the 96 bands: band ``i`` rises from point ``i``, peaks at ``i + 1``, ends at ``i + 2``."""
    top = 2595.0 * np.log10(1.0 + AISFX_FMAX / 700.0)
    return 700.0 * (10.0 ** (np.linspace(0.0, top, AISFX_BANDS + 2) / 2595.0) - 1.0)


def sfx_bands(sample_rate: int) -> int:
    """How many of the 96 bands end at or below ``sample_rate / 2`` (all 96 at 44.1 kHz)."""
    return int(np.sum(sfx_band_edges()[2:] <= sample_rate / 2 + 1e-6))


def sfx_mel_matrix(sample_rate: int, n_fft: int) -> np.ndarray:
    """The kept aisfx bands on the bins of an ``n_fft`` STFT at ``sample_rate``, each row summing to 1, as
    ``[bands, n_fft // 2 + 1]``. At 44.1 kHz and n_fft 2048 this is ``librosa.filters.mel(htk=True, norm=1)``."""
    edges = sfx_band_edges()
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    weights = np.maximum(0.0, np.minimum(-ramps[:-2] / widths[:-1, None], ramps[2:] / widths[1:, None]))
    weights = weights[: sfx_bands(sample_rate)]
    sums = weights.sum(axis=1, keepdims=True)
    if np.any(sums == 0):
        raise ValueError(f"sfx_mel_matrix: n_fft {n_fft} at {sample_rate} Hz leaves some bands without a bin; use a larger n_fft")
    return (weights / sums).astype(np.float32)


class SfxLogMel(nn.Module):
    """Waveform ``[batch, samples]`` -> aisfx features ``[batch, bands, frames]`` at ``sample_rate``.

    ``peak_normalise`` divides each window by ``max(peak, peak_floor)`` first: aisfx normalised
    whole files to peak 1, and the floor keeps near-silence from being raised to full scale.
    """

    fb: torch.Tensor  # buffers

    def __init__(self, sample_rate: int, peak_normalise: bool = True, peak_floor: float = 1e-3):
        super().__init__()
        if peak_floor <= 0:
            raise ValueError(f"peak_floor must be > 0 (got {peak_floor})")
        self.win_length = round(AISFX_WINDOW * sample_rate / AISFX_RATE)
        self.hop = round(AISFX_HOP * sample_rate / AISFX_RATE)
        self.n_fft = 1 << (self.win_length - 1).bit_length()
        self.peak_normalise, self.peak_floor = peak_normalise, peak_floor
        self.stft = ConvSTFT(self.n_fft, self.hop, self.win_length)
        # Band power of a tone or of band-limited noise grows with window length x sample rate
        # (unit-sum bands average over bins); the gain restores aisfx's 2048 x 44.1 kHz level.
        gain = (AISFX_WINDOW * AISFX_RATE) / (self.win_length * sample_rate)
        fb = sfx_mel_matrix(sample_rate, self.n_fft) * (1e4 * gain)  # the 1e4 of log10(1e4 x + 1) folded in
        self.register_buffer("fb", torch.from_numpy(fb), persistent=False)
        self.scale = 1.0 / (math.log(10.0) * AISFX_MAX)  # natural log -> log10, then aisfx's normalisation
        self.bands = fb.shape[0]

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if self.peak_normalise:
            waveform = waveform / waveform.abs().amax(dim=1, keepdim=True).clamp_min(self.peak_floor)
        return torch.log(torch.matmul(self.fb, self.stft(waveform)) + 1.0) * self.scale
