"""Multi-head attention written out (the caption decoder and the text encoder share it).

Not ``nn.MultiheadAttention``: the decoder needs its keys/values exposed for a KV cache, and
the traced ONNX export of ``nn.MultiheadAttention`` with a padding mask fixes the batch and
length it was traced at. Masks are additive (finite large negatives), so a fully masked row
never turns into NaN and every backend exports it.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Attention(nn.Module):
    """Multi-head attention with the keys/values exposed ``[B, heads, T, head_dim]``."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.query, self.key_value, self.out = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)  # on the attention weights

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.key_value(x).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self._split(self.query(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        if mask is not None:
            scores = scores + mask
        y = self.drop(scores.softmax(dim=-1)) @ v
        return self.out(y.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))
