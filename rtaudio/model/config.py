"""The fused model's hyper-parameters: saved in every checkpoint, so a model rebuilds from its file."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

STREAMS = ("e2e", "pitch", "timbre", "neuralogram", "generative", "codes")
StreamName = Literal["e2e", "pitch", "timbre", "neuralogram", "generative", "codes"]


class ModelConfig(BaseModel):
    """Architecture of a ``FusedTagger``."""

    model_config = ConfigDict(extra="forbid")

    labels: list[str] = Field(title="Class labels", min_length=1)
    sample_rate: int = Field(16000, title="Sample rate (Hz)", ge=8000, le=48000)
    window_s: float = Field(1.0, title="Window (s)", gt=0, le=30)
    hop_s: float = Field(0.5, title="Hop between windows at run time (s)", gt=0, le=30)
    n_fft: int = Field(512, title="STFT size", ge=64, le=8192)
    stft_hop: int = Field(160, title="STFT hop (samples)", ge=16, le=4096)
    n_mels: int = Field(64, title="Mel bands", ge=16, le=256)
    streams: list[StreamName] = Field(default_factory=lambda: list(STREAMS), title="Streams", min_length=1)
    fusion: Literal["concat", "gated"] = Field("concat", title="Fusion", description="concat + linear (Verma) or gated generative/discriminative weighting.")
    layers: int = Field(2, title="Transformer layers per stream", ge=1, le=8)
    heads: int = Field(4, title="Attention heads", ge=1, le=16)
    dropout: float = Field(0.1, title="Dropout", ge=0, lt=1)
    stream_options: dict[str, dict[str, Any]] = Field(default_factory=dict, title="Per-stream constructor options", description="e.g. codes: {codebooks: 3, codebook_size: 128}.")
