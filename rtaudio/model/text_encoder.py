"""The project's own small text encoder for free-text queries: word vocabulary -> Transformer -> unit vector.

Words come from ``rtaudio.contract.vocab`` (torch-free), so the runtime can tokenise a query with
nothing but vocab.json and run the exported ONNX graph (``ids [B, L]`` + ``mask [B, L]`` ->
``embedding [B, 128]``) on ONNX Runtime, without torch. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from rtaudio.contract.vocab import PAD_ID, Vocabulary
from rtaudio.model.attention import Attention
from rtaudio.model.common import SinusoidalPosition

SHARED_DIM = 128


class _Block(nn.Module):
    """Pre-norm Transformer encoder layer with an explicit additive padding mask (``Attention``)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``x [B, L, D]``, ``bias [B, 1, 1, L]`` (0 on words, -1e4 on padding)."""
        h = self.norm1(x)
        x = x + self.drop(self.attn.attend(h, *self.attn.keys_values(h), bias))
        return x + self.drop(self.mlp(self.norm2(x)))


class TextEncoder(nn.Module):
    """Word ids ``[B, L]`` + mask ``[B, L]`` -> L2-normalised embedding ``[B, out_dim]`` in the shared audio-text space.

    Embedding + sinusoidal positions -> pre-norm Transformer blocks (padding masked) -> mean
    over real words -> linear projection -> unit length.
    """

    def __init__(self, vocab_size: int, dim: int = 128, layers: int = 2, heads: int = 4, out_dim: int = SHARED_DIM, dropout: float = 0.1):
        super().__init__()
        self.config = {"vocab_size": vocab_size, "dim": dim, "layers": layers, "heads": heads, "out_dim": out_dim, "dropout": dropout}
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=PAD_ID)
        self.position = SinusoidalPosition(dim)
        self.blocks = nn.ModuleList(_Block(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.project = nn.Linear(dim, out_dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask.to(torch.float32)
        bias = ((1.0 - keep) * -1e4)[:, None, None, :]  # additive, so a padded row never turns into NaN
        x = self.position(self.embed(ids))
        for block in self.blocks:
            x = block(x, bias)
        x = self.norm(x)
        pooled = (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1.0)
        return F.normalize(self.project(pooled), dim=-1)

    def embed_texts(self, vocab: Vocabulary, texts: Sequence[str]) -> torch.Tensor:
        """Convenience: tokenise with ``vocab`` and encode (on the module's device)."""
        ids, mask = vocab.encode(texts)
        device = self.embed.weight.device
        return self(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))
