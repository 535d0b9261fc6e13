"""STFT as a 1-D convolution with a fixed windowed DFT basis: no complex or STFT ops in the graph."""

from __future__ import annotations

import math

import torch
from torch import nn


class ConvSTFT(nn.Module):
    """Power spectrogram ``[batch, bins, frames]`` of a waveform ``[batch, samples]``.

    Frames are centred like ``librosa.stft(center=True, pad_mode="constant")``; the basis is
    a periodic Hann window times cos/sin rows, registered as a buffer so it exports.
    """

    basis: torch.Tensor  # buffers

    def __init__(self, n_fft: int = 512, hop: int = 160, win_length: int | None = None):
        super().__init__()
        win_length = win_length or n_fft
        self.n_fft, self.hop = n_fft, hop
        window = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
        pad = (n_fft - win_length) // 2
        window = nn.functional.pad(window, (pad, n_fft - win_length - pad))
        bins = n_fft // 2 + 1
        t = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(bins, dtype=torch.float64)[:, None]
        angle = 2 * math.pi * k * t / n_fft
        basis = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])  # [2*bins, n_fft]
        self.register_buffer("basis", basis.float()[:, None, :], persistent=False)
        self.bins = bins

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(waveform[:, None, :], (self.n_fft // 2, self.n_fft // 2))
        spec = nn.functional.conv1d(x, self.basis, stride=self.hop)  # [batch, 2*bins, frames]
        real, imag = spec[:, : self.bins], spec[:, self.bins :]
        return real * real + imag * imag
