"""Fusion of the streams' pooled 64-d embeddings into one embedding and class logits."""

from __future__ import annotations

import torch
from torch import nn

from rtaudio.model.common import EMBED_DIM


class ConcatFusion(nn.Module):
    """Concatenate the streams' embeddings; one linear classifier over them (Verma)."""

    def __init__(self, kinds: list[str], classes: int):
        super().__init__()
        self.classifier = nn.Linear(EMBED_DIM * len(kinds), classes)

    def forward(self, pooled: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = torch.cat(pooled, dim=1)
        return self.classifier(embedding), embedding


class GatedFusion(nn.Module):
    """A per-window gate g in (0, 1) weighs generative streams by g and discriminative ones by 1 - g."""

    generative: torch.Tensor  # buffers

    def __init__(self, kinds: list[str], classes: int):
        super().__init__()
        generative = torch.tensor([k == "generative" for k in kinds], dtype=torch.float32)
        self.register_buffer("generative", generative.repeat_interleave(EMBED_DIM), persistent=False)
        self.gate = nn.Sequential(nn.Linear(EMBED_DIM * len(kinds), EMBED_DIM), nn.ReLU(), nn.Linear(EMBED_DIM, 1))
        self.classifier = nn.Linear(EMBED_DIM * len(kinds), classes)
        self.last_gate: torch.Tensor | None = None

    def forward(self, pooled: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        joined = torch.cat(pooled, dim=1)
        g = torch.sigmoid(self.gate(joined))  # [B, 1]
        self.last_gate = g.detach()
        weights = g * self.generative + (1 - g) * (1 - self.generative)
        embedding = 2 * weights * joined  # 2x keeps the scale of an even split
        return self.classifier(embedding), embedding


class ProbeHead(nn.Module):
    """A fixed-standardisation linear head on a raw embedding (a linear probe inside the graph): its logits
    add to the fused ones, so the fusion learns what the probe misses (training fits it, ``load_probe``)."""

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.linear = nn.Linear(dim, classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def load_probe(self, mean: torch.Tensor, std: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Standardisation ``[D]`` and per-class weights ``[C, D]`` and biases ``[C]`` of a fitted linear probe."""
        with torch.no_grad():
            self.mean.copy_(mean)
            self.std.copy_(std)
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.linear((embedding - self.mean) / self.std)


FUSIONS = {"concat": ConcatFusion, "gated": GatedFusion}
