"""The fused model's hyper-parameters: saved in every checkpoint, so a model rebuilds from its file."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

StreamName = Literal["e2e", "pitch", "timbre", "neuralogram", "generative", "codes", "pretrained"]
STREAMS: tuple[StreamName, ...] = ("e2e", "pitch", "timbre", "neuralogram", "generative", "codes", "pretrained")
DEFAULT_STREAMS = STREAMS[:6]  # "pretrained" (the aisfx CNN, ~4.7 M parameters) is opt-in: defaults and old configs stay the six


class TextConfig(BaseModel):
    """The caption decoder and audio-text heads: their vocabularies and sizes (absent: a tagger only)."""

    model_config = ConfigDict(extra="forbid")

    tokenizer: dict[str, Any] = Field(title="Caption BPE tokenizer", description="tokenizer.json content, learnt from the training captions.")
    words: list[str] = Field(title="Text-encoder word vocabulary", min_length=3, description="rtaudio.contract.vocab tokens, <pad> and <unk> first.")
    word_max_len: int = Field(default=32, title="Longest query or caption in words", ge=4, le=256)
    caption_window_s: float = Field(default=4.0, title="Audio a caption describes (s)", gt=0, le=30)
    decoder_dim: int = Field(default=128, title="Caption decoder width", ge=16, le=1024)
    decoder_layers: int = Field(default=2, title="Caption decoder layers", ge=1, le=8)
    max_tokens: int = Field(default=40, title="Longest caption in tokens (with <bos>/<eos>)", ge=4, le=256)
    shared_dim: int = Field(default=128, title="Audio-text space size", ge=8, le=1024)
    diffusion_steps: int = Field(default=0, title="DiffATR diffusion steps", ge=0, le=1000, description="0: no generative term (no denoisers).")


class ModelConfig(BaseModel):
    """Architecture of a ``FusedTagger``."""

    model_config = ConfigDict(extra="forbid")

    labels: list[str] = Field(title="Class labels", min_length=1)
    sample_rate: int = Field(default=16000, title="Sample rate (Hz)", ge=8000, le=48000)
    window_s: float = Field(default=1.0, title="Window (s)", gt=0, le=30)
    hop_s: float = Field(default=0.5, title="Hop between windows at run time (s)", gt=0, le=30)
    n_fft: int = Field(default=512, title="STFT size", ge=64, le=8192)
    stft_hop: int = Field(default=160, title="STFT hop (samples)", ge=16, le=4096)
    n_mels: int = Field(default=64, title="Mel bands", ge=16, le=256)
    streams: list[StreamName] = Field(default_factory=lambda: list(DEFAULT_STREAMS), title="Streams", min_length=1)
    fusion: Literal["concat", "gated"] = Field(
        default="concat", title="Fusion", description="concat + linear (Verma) or gated generative/discriminative weighting."
    )
    layers: int = Field(default=2, title="Transformer layers per stream", ge=1, le=8)
    heads: int = Field(default=4, title="Attention heads", ge=1, le=16)
    dropout: float = Field(default=0.1, title="Dropout", ge=0, lt=1)
    stream_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, title="Per-stream constructor options", description="e.g. codes: {codebooks: 3, codebook_size: 128}."
    )
    text: TextConfig | None = Field(default=None, title="Caption and audio-text heads", description="Set by training when the data has captions.")
    probe_head: bool = Field(
        default=False,
        title="Probe head on the pretrained embedding",
        description="A linear head on the pretrained stream's raw 512-d embedding whose logits add to the "
        "fused ones; training fits it as a linear probe and keeps it fixed. Needs the pretrained stream.",
    )

    @model_validator(mode="after")
    def _probe_needs_pretrained(self) -> ModelConfig:
        if self.probe_head and "pretrained" not in self.streams:
            raise ValueError(f"probe_head needs the pretrained stream; streams are {', '.join(self.streams)}")
        return self
