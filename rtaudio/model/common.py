"""What every stream shares: the front-end features, the 64-d temporal encoder, the stream base class.

A stream maps the shared ``Features`` of a batch to frame embeddings ``[B, T', 64]`` and a
pooled embedding ``[B, 64]``; streams with their own objectives (VAE, masked codes) return
them as ``aux`` losses while training. Everything is a plain ``nn.Module`` with buffers, so it
exports to ONNX (opset 17) and from there to TensorRT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from rtaudio.dsp import LogMel

EMBED_DIM = 64


@dataclass
class Features:
    """Computed once per batch and shared by the streams."""

    waveform: torch.Tensor  # [B, N] raw mono at the model rate
    power: torch.Tensor  # [B, bins, T] power spectrogram (conv STFT)
    logmel: torch.Tensor  # [B, n_mels, T]


class FrontEnd(nn.Module):
    """Waveform -> ``Features`` (one STFT for all streams)."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, hop: int = 160, n_mels: int = 64):
        super().__init__()
        self.sample_rate, self.n_fft, self.hop, self.n_mels = sample_rate, n_fft, hop, n_mels
        self.logmel = LogMel(sample_rate, n_fft, hop, n_mels)

    def forward(self, waveform: torch.Tensor) -> Features:
        power = self.logmel.stft(waveform)
        return Features(waveform, power, self.logmel.from_power(power))


@dataclass
class StreamOutput:
    frames: torch.Tensor  # [B, T', EMBED_DIM]
    pooled: torch.Tensor  # [B, EMBED_DIM]
    aux: dict[str, torch.Tensor] = field(default_factory=dict)  # own losses (training only)
    teacher: torch.Tensor | None = None  # [B, D] a pretrained network's own embedding, for distillation (not exported)


class SinusoidalPosition(nn.Module):
    """Fixed sinusoidal positions, sliced to the sequence length (any window length exports)."""

    table: torch.Tensor  # buffers

    def __init__(self, dim: int, max_len: int = 2048):
        super().__init__()
        pos = torch.arange(max_len)[:, None]
        div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_len, dim)
        table[:, 0::2], table[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table[: x.shape[1]]


class TemporalEncoder(nn.Module):
    """Frames ``[B, T, in_dim]`` -> 64-d frames through a small Transformer -> mean-pooled 64-d."""

    def __init__(self, in_dim: int, layers: int = 2, heads: int = 4, dim: int = EMBED_DIM, dropout: float = 0.1):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(in_dim, dim), nn.LayerNorm(dim))
        self.position = SinusoidalPosition(dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.norm(self.transformer(self.position(self.project(frames))))
        return x, x.mean(dim=1)


class Stream(nn.Module):
    """One representation of the audio ending in 64-d embeddings; subclasses register by ``name``.

    ``kind`` says whether the stream is generative or discriminative (used by gated fusion);
    ``self_supervised`` streams have label-free losses of their own (``aux``) that a pretraining
    stage can train before any labels are used.
    """

    name: ClassVar[str]
    kind: ClassVar[str] = "discriminative"
    self_supervised: ClassVar[bool] = False
    registry: ClassVar[dict[str, type[Stream]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "name", None):
            Stream.registry[cls.name] = cls

    def forward(self, features: Features) -> StreamOutput:  # pragma: no cover - abstract
        raise NotImplementedError
