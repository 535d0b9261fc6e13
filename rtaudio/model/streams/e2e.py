"""(a) End-to-end stream: log-mel -> small conv stem -> Transformer (the discriminative baseline)."""

from __future__ import annotations

from torch import nn

from rtaudio.model.common import Features, Stream, StreamOutput, TemporalEncoder
from rtaudio.model.config import ModelConfig


class E2eStream(Stream):
    name = "e2e"

    def __init__(self, config: ModelConfig, channels: int = 16):
        super().__init__()
        self.norm = nn.BatchNorm1d(config.n_mels)
        self.stem = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, stride=(2, 2)),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        self.encoder = TemporalEncoder(channels * ((config.n_mels + 1) // 2), config.layers, config.heads, dropout=config.dropout)

    def forward(self, features: Features) -> StreamOutput:
        x = self.stem(self.norm(features.logmel)[:, None])  # [B, C, M/2, T/2]
        frames = x.flatten(1, 2).transpose(1, 2)  # [B, T/2, C*M/2]
        frames, pooled = self.encoder(frames)
        return StreamOutput(frames, pooled)
