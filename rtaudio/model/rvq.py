"""Residual vector quantiser with codebooks learned by EMA k-means (no gradients into the codebooks).

Codebook ``k`` quantises what codebooks ``0..k-1`` left over, so a frame becomes ``K`` codes.
The nearest-code search is ``||x||^2 - 2 x.c + ||c||^2`` as a matmul followed by argmin, which
exports to ONNX (MatMul + ArgMin) and TensorRT. While training, each forward moves every code to
the running mean of the frames assigned to it (exponential moving averages of counts and sums,
Laplace-smoothed), re-seeds codes nobody uses, and, under ``torch.distributed``, reduces the
statistics over ranks so every replica keeps the same codebooks.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def nearest_code(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index ``[...]`` of the closest row of ``codebook [S, D]`` to each vector of ``x [..., D]``.

    ``||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2``; ``||x||^2`` is the same for every code, so it is
    left out: the argmin is unchanged and the float32 distances keep more precision (fewer
    eager/ONNX disagreements on near ties).
    """
    return ((codebook * codebook).sum(-1) - 2 * torch.matmul(x, codebook.t())).argmin(dim=-1)


def _sample_rows(x: torch.Tensor, count: int) -> torch.Tensor:
    """Up to ``count`` random rows of ``x``, all different.

    Duplicate codes waste the codebook and tie exactly in the argmin (the exported graph may
    then break the tie differently). Residuals of the frames that seeded the previous codebook
    are all zero, so rows are made unique first; when fewer remain than asked for, the rest of
    the codes stay where they are until dead-code re-seeding finds them data.
    """
    rows = torch.unique(x, dim=0)
    return rows[torch.randperm(rows.shape[0], device=x.device)[:count]]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class ResidualVQ(nn.Module):
    """``x [B, T, D]`` -> ``(codes [B, T, K] int64, quantized [B, T, D])``; EMA updates in training mode."""

    codebook: torch.Tensor  # buffers
    cluster_size: torch.Tensor
    embed_sum: torch.Tensor
    initialized: torch.Tensor

    def __init__(self, dim: int, codebooks: int = 3, size: int = 128, decay: float = 0.99, eps: float = 1e-5, dead_threshold: float = 0.5):
        super().__init__()
        if codebooks < 1 or size < 2:
            raise ValueError(f"ResidualVQ needs codebooks >= 1 and size >= 2 (got {codebooks}, {size})")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ResidualVQ decay must be in [0, 1) (got {decay})")
        self.codebooks, self.size, self.decay, self.eps, self.dead_threshold = codebooks, size, decay, eps, dead_threshold
        self.register_buffer("codebook", torch.randn(codebooks, size, dim))
        self.register_buffer("cluster_size", torch.ones(codebooks, size))
        self.register_buffer("embed_sum", self.codebook.clone())
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training:
            self._update(x.detach().reshape(-1, x.shape[-1]))
        return self.quantize(x)

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes and the sum of the chosen code vectors, with the current codebooks."""
        residual, quantized, codes = x, torch.zeros_like(x), []
        for k in range(self.codebooks):
            code = nearest_code(residual, self.codebook[k])
            chosen = nn.functional.embedding(code, self.codebook[k])
            residual, quantized = residual - chosen, quantized + chosen
            codes.append(code)
        return torch.stack(codes, dim=-1), quantized

    @torch.no_grad()
    def _update(self, flat: torch.Tensor) -> None:
        """One EMA k-means step per codebook on its residual input ``flat [N, D]``."""
        if not bool(self.initialized):
            self._initialize(flat)
        residual = flat
        for k in range(self.codebooks):
            code = nearest_code(residual, self.codebook[k])
            onehot = nn.functional.one_hot(code, self.size).type_as(flat)
            counts, sums = onehot.sum(0), onehot.t() @ residual
            if _distributed():
                dist.all_reduce(counts)
                dist.all_reduce(sums)
            self.cluster_size[k].mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.embed_sum[k].mul_(self.decay).add_(sums, alpha=1 - self.decay)
            total = self.cluster_size[k].sum()
            smoothed = (self.cluster_size[k] + self.eps) / (total + self.size * self.eps) * total
            self.codebook[k].copy_(self.embed_sum[k] / smoothed[:, None])
            self._reseed_dead(k, residual, float(total) / self.size)
            residual = residual - self.codebook[k][code]

    def _initialize(self, flat: torch.Tensor) -> None:
        """Seed each codebook with distinct random frames of its residual, so codes start on the data."""
        frames = torch.tensor(float(flat.shape[0]), device=flat.device)
        if _distributed():
            dist.all_reduce(frames)
        residual, per_code = flat, max(float(frames) / self.size, 1.0)
        for k in range(self.codebooks):
            seeds = _sample_rows(residual, self.size)
            self.codebook[k, : len(seeds)] = seeds
            self.cluster_size[k].fill_(per_code)
            self.embed_sum[k].copy_(self.codebook[k] * per_code)
            self._broadcast(k)
            residual = residual - self.codebook[k][nearest_code(residual, self.codebook[k])]
        self.initialized.fill_(True)

    def _reseed_dead(self, k: int, residual: torch.Tensor, per_code: float) -> None:
        """Move codes whose EMA count fell below ``dead_threshold`` onto random frames."""
        dead = (self.cluster_size[k] < self.dead_threshold).nonzero().flatten()
        if len(dead) == 0:
            return
        picks = _sample_rows(residual, len(dead))
        dead = dead[: len(picks)]
        self.codebook[k, dead] = picks
        self.cluster_size[k, dead] = per_code
        self.embed_sum[k, dead] = picks * per_code
        self._broadcast(k)

    def _broadcast(self, k: int) -> None:
        """Rank 0's random choices win, so every replica keeps the same codebook ``k``."""
        if _distributed():
            for buffer in (self.codebook, self.cluster_size, self.embed_sum):
                dist.broadcast(buffer[k], src=0)
