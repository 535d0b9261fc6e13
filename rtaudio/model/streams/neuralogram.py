"""(d) Neuralogram stream: a learned filterbank (1-D conv on the raw waveform) -> log energy -> Transformer.

The filters start as mel-spaced Gabor quadrature pairs (cos and sin under a Gaussian), so at
initialisation the stream sees a smooth mel-like spectrogram, and training reshapes them freely.
The conv's stride is the STFT hop and its padding centres each frame like the STFT, so frames
line up with the other streams' (then averaged over ``pool`` frames, like the e2e stem's stride). Energy per band is the sum of squares over the pair (pooling
the quadrature pair gives a shift-invariant envelope without a stride-1 conv).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rtaudio.model.common import Features, Stream, StreamOutput, TemporalEncoder
from rtaudio.model.config import ModelConfig


def gabor_filters(filters: int, kernel: int, sample_rate: int, fmin: float = 50.0) -> torch.Tensor:
    """``[2 * filters, 1, kernel]``: cos rows then sin rows, centre frequencies evenly spaced in mel, unit L2 norm."""
    mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
    edges = torch.linspace(mel(fmin), mel(sample_rate / 2), filters + 2, dtype=torch.float64)
    hz = 700.0 * (10 ** (edges / 2595.0) - 1.0)
    centre, bandwidth = hz[1:-1], (hz[2:] - hz[:-2]) / 2
    sigma = (1.0 / (2 * math.pi * bandwidth / 2) * sample_rate).clamp(max=kernel / 6)  # samples
    t = torch.arange(kernel, dtype=torch.float64) - (kernel - 1) / 2
    envelope = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2)
    phase = 2 * math.pi * centre[:, None] / sample_rate * t[None]
    bank = torch.cat([envelope * torch.cos(phase), envelope * torch.sin(phase)])
    bank = bank / bank.norm(dim=1, keepdim=True)
    return bank.float()[:, None, :]


class NeuralogramStream(Stream):
    name = "neuralogram"

    def __init__(self, config: ModelConfig, filters: int = 64, kernel: int = 400, eps: float = 1e-6, pool: int = 2):
        super().__init__()
        if kernel < 2 or filters < 1:
            raise ValueError(f"neuralogram needs filters >= 1 and kernel >= 2 samples (got {filters}, {kernel})")
        self.filters, self.eps = filters, eps
        self.padding = (kernel // 2, kernel - kernel // 2)  # total = kernel: as many frames as the centred STFT
        self.filterbank = nn.Conv1d(1, 2 * filters, kernel, stride=config.stft_hop, bias=False)
        self.filterbank.weight.data.copy_(gabor_filters(filters, kernel, config.sample_rate))
        self.norm = nn.BatchNorm1d(filters)
        self.pool = nn.AvgPool1d(pool) if pool > 1 else nn.Identity()
        self.encoder = TemporalEncoder(filters, config.layers, config.heads, dropout=config.dropout)

    def neuralogram(self, waveform: torch.Tensor) -> torch.Tensor:
        """``[B, filters, T]`` log band energies, T = the STFT's frame count."""
        response = self.filterbank(nn.functional.pad(waveform[:, None, :], self.padding))
        energy = response[:, : self.filters] ** 2 + response[:, self.filters :] ** 2
        return torch.log(energy + self.eps)

    def forward(self, features: Features) -> StreamOutput:
        x = self.pool(self.norm(self.neuralogram(features.waveform)))
        frames, pooled = self.encoder(x.transpose(1, 2))
        return StreamOutput(frames, pooled)
