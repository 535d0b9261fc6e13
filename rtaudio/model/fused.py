"""The fused multi-stream tagger (with its caption and audio-text heads when it has captions),
its checkpoint format, and the graph the runtime gets.

``run`` gives everything training needs (fused and per-stream logits, aux losses);
``forward`` is what is exported: waveform ``[B, N]`` -> ``(scores, embedding)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

import rtaudio.model.streams  # noqa: F401  (registers every stream)
from rtaudio.contract import sha256_file
from rtaudio.model.common import EMBED_DIM, FrontEnd, Stream, StreamOutput
from rtaudio.model.config import ModelConfig
from rtaudio.model.fusion import FUSIONS, ProbeHead
from rtaudio.model.streams.pretrained import AISFX_DIM

if TYPE_CHECKING:
    from rtaudio.model.text_heads import TextHeads


@dataclass
class TaggerOutput:
    logits: torch.Tensor  # [B, C] fused
    embedding: torch.Tensor  # [B, 64 * streams]
    stream_logits: dict[str, torch.Tensor]  # [B, C] per stream (its own head)
    streams: dict[str, StreamOutput]
    aux: dict[str, torch.Tensor]  # "<stream>.<loss>" -> scalar


class FusedTagger(nn.Module):
    """Front-end -> six (or fewer) streams -> fusion -> sigmoid scores."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.frontend = FrontEnd(config.sample_rate, config.n_fft, config.stft_hop, config.n_mels)
        streams: dict[str, Stream] = {}
        for name in config.streams:
            cls = Stream.registry[name]
            streams[name] = cls(config, **config.stream_options.get(name, {}))
        self.streams = nn.ModuleDict(streams)
        classes = len(config.labels)
        self.stream_heads = nn.ModuleDict({name: nn.Linear(EMBED_DIM, classes) for name in config.streams})
        self.fusion = FUSIONS[config.fusion]([type(s).kind for s in streams.values()], classes)
        self.probe: ProbeHead | None = None
        if config.probe_head:  # a linear probe on the pretrained stream's raw embedding (ModelConfig checks it is there)
            self.probe = ProbeHead(AISFX_DIM, classes)
        self.text: TextHeads | None = None
        if config.text is not None:  # imported here: a tagger alone needs no tokenizer
            from rtaudio.model.text_heads import TextHeads

            self.text = TextHeads(config.text, config.streams, EMBED_DIM * len(config.streams), config.dropout)

    def run(self, waveform: torch.Tensor, streams: list[str] | None = None) -> TaggerOutput:
        """All outputs; ``streams`` limits which streams run (staged training, ablations)."""
        features = self.frontend(waveform)
        names = streams or list(self.streams)
        outs = {name: self.streams[name](features) for name in names}
        stream_logits = {name: self.stream_heads[name](out.pooled) for name, out in outs.items()}
        aux = {f"{name}.{key}": value for name, out in outs.items() for key, value in out.aux.items()}
        if set(names) == set(self.streams):
            logits, embedding = self.fusion([outs[name].pooled for name in self.streams])
            if self.probe is not None:
                logits = logits + self.probe(outs["pretrained"].teacher)
        else:  # a subset cannot use the fused classifier: average its own heads
            logits = torch.stack(list(stream_logits.values())).mean(0)
            embedding = torch.cat([out.pooled for out in outs.values()], dim=1)
        return TaggerOutput(logits, embedding, stream_logits, outs, aux)

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.run(waveform)
        return torch.sigmoid(out.logits), out.embedding


def save_checkpoint(model: FusedTagger, path: str | Path, **extra: Any) -> str:
    """Write config + weights (+ extra: thresholds, optimiser state...) and return its SHA-256."""
    torch.save({"format": 1, "config": model.config.model_dump(), "state_dict": model.state_dict(), **extra}, str(path))
    return sha256_file(Path(path))


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[FusedTagger, dict[str, Any]]:
    """Rebuild the model from its checkpoint; ``extra`` holds everything else that was saved."""
    data = torch.load(str(path), map_location=map_location, weights_only=False)
    missing = [k for k in ("format", "config", "state_dict") if k not in data]
    if missing:
        raise ValueError(f"{path}: not an rtaudio checkpoint (missing {', '.join(missing)})")
    model = FusedTagger(ModelConfig.model_validate(data.pop("config")))
    model.load_state_dict(data.pop("state_dict"))
    return model, data
