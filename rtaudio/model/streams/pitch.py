"""(b) Pitch stream: harmonic-sum salience + voicing per frame -> Transformer (Verma's pitch embedding)."""

from __future__ import annotations

import torch
from torch import nn

from rtaudio.dsp.pitch import PitchSalience, Voicing
from rtaudio.model.common import Features, Stream, StreamOutput, TemporalEncoder
from rtaudio.model.config import ModelConfig


class PitchStream(Stream):
    """``pitches`` log-spaced f0 saliences (``fmin``..``fmax`` Hz) and one voicing row, normalised per
    feature, averaged over ``pool`` frames, then the shared 64-d temporal encoder."""

    name = "pitch"

    def __init__(self, config: ModelConfig, pitches: int = 72, harmonics: int = 8, fmin: float = 50.0, fmax: float = 1000.0, pool: int = 2):
        super().__init__()
        self.salience = PitchSalience(config.sample_rate, config.n_fft, fmin, fmax, pitches, harmonics)
        self.voicing = Voicing(config.sample_rate, config.n_fft, fmin=max(fmin, 2 * config.sample_rate / config.n_fft), fmax=fmax)
        self.norm = nn.BatchNorm1d(pitches + 1)
        self.pool = nn.AvgPool1d(pool) if pool > 1 else nn.Identity()
        self.encoder = TemporalEncoder(pitches + 1, config.layers, config.heads, dropout=config.dropout)

    def forward(self, features: Features) -> StreamOutput:
        x = torch.cat([self.salience(features.power), self.voicing(features.power)], dim=1)  # [B, P+1, T]
        frames, pooled = self.encoder(self.pool(self.norm(x)).transpose(1, 2))
        return StreamOutput(frames, pooled)
