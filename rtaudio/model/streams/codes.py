"""(f) Codes stream (AudioFormer without a downloaded codec): log-mel frames -> residual VQ -> K code
sequences -> summed code embeddings -> Transformer.

The tokenizer is fixed by the data, not by the tagging loss: log-mel frames, standardised per
band (running statistics, no affine) and averaged over ``pool`` frames, are quantised by
``ResidualVQ``, whose codebooks learn by EMA k-means alone. AudioFormer takes its codes from a
frozen neural codec for the same reason: if the losses could move the features under the
quantiser, masked-code prediction is solved trivially by collapsing every frame onto one code.
While training the stream also returns AudioFormer's pretraining objectives: masked-code
prediction (about 25% of frames replaced by a mask token, each codebook's code predicted there)
and multi-positive contrastive learning across the K single-codebook views of a clip. At
inference codes are deterministic and nothing is masked; the pretraining heads are not in the
exported graph.
"""

from __future__ import annotations

import torch
from torch import nn

from rtaudio.model.common import EMBED_DIM, Features, Stream, StreamOutput, TemporalEncoder
from rtaudio.model.config import ModelConfig
from rtaudio.model.rvq import ResidualVQ


class CodePretext(nn.Module):
    """Masked-code prediction and multi-positive InfoNCE over code views (training only)."""

    def __init__(self, codebooks: int, size: int, mask_ratio: float, temperature: float):
        super().__init__()
        self.codebooks, self.size, self.mask_ratio, self.temperature = codebooks, size, mask_ratio, temperature
        self.mask_token = nn.Parameter(torch.randn(EMBED_DIM) * 0.02)
        self.predict = nn.Linear(EMBED_DIM, codebooks * size)
        self.project = nn.Sequential(nn.Linear(EMBED_DIM, EMBED_DIM), nn.GELU(), nn.Linear(EMBED_DIM, EMBED_DIM))

    def forward(self, tokens: torch.Tensor, views: torch.Tensor, codes: torch.Tensor, encoder: TemporalEncoder) -> dict[str, torch.Tensor]:
        """``tokens [B, T, D]``, ``views [K, B, T, D]``, ``codes [B, T, K]`` -> ``{"mlm", "contrastive"}``."""
        batch, frames = tokens.shape[:2]
        mask = torch.rand(batch, frames, device=tokens.device) < self.mask_ratio
        mask[:, 0] |= ~mask.any(dim=1)  # at least one masked frame per clip
        masked = torch.where(mask[..., None], self.mask_token.to(tokens.dtype), tokens)
        encoded, pooled = encoder(torch.cat([masked, views.flatten(0, 1)]))
        logits = self.predict(encoded[:batch]).unflatten(-1, (self.codebooks, self.size))  # [B, T, K, S]
        ce = nn.functional.cross_entropy(logits.flatten(0, 2), codes.flatten(), reduction="none").view_as(codes)
        mlm = (ce * mask[..., None]).sum() / (mask.sum() * self.codebooks)
        return {"mlm": mlm, "contrastive": self._multi_positive_nce(pooled[batch:], batch)}

    def _multi_positive_nce(self, pooled: torch.Tensor, batch: int) -> torch.Tensor:
        """InfoNCE where every other view of the same clip is a positive and other clips' views are negatives."""
        z = nn.functional.normalize(self.project(pooled), dim=-1)  # [K*B, D], view-major
        similarity = z @ z.t() / self.temperature
        clip = torch.arange(batch, device=z.device).repeat(self.codebooks)
        self_pair = torch.eye(len(z), dtype=torch.bool, device=z.device)
        positive = (clip[:, None] == clip[None, :]) & ~self_pair
        log_prob = similarity.masked_fill(self_pair, float("-inf")).log_softmax(dim=-1)
        return -(log_prob.masked_fill(~positive, 0.0).sum(-1) / positive.sum(-1)).mean()


class CodesStream(Stream):
    name = "codes"
    self_supervised = True

    offsets: torch.Tensor  # buffers

    def __init__(
        self,
        config: ModelConfig,
        codebooks: int = 3,
        codebook_size: int = 128,
        mask_ratio: float = 0.25,
        temperature: float = 0.1,
        decay: float = 0.99,
        pool: int = 2,
    ):
        super().__init__()
        if codebooks < 2:
            raise ValueError(f"codes stream needs codebooks >= 2 for its contrastive views (got {codebooks})")
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"codes stream mask_ratio must be in (0, 1) (got {mask_ratio})")
        self.codebooks, self.size = codebooks, codebook_size
        self.norm = nn.BatchNorm1d(config.n_mels, affine=False)
        self.pool = nn.AvgPool1d(pool) if pool > 1 else nn.Identity()
        self.quantizer = ResidualVQ(config.n_mels, codebooks, codebook_size, decay=decay)
        self.embed = nn.Embedding(codebooks * codebook_size, EMBED_DIM)  # codebook k's codes at rows k*S..
        self.register_buffer("offsets", torch.arange(codebooks) * codebook_size, persistent=False)
        self.encoder = TemporalEncoder(EMBED_DIM, config.layers, config.heads, dropout=config.dropout)
        self.pretext = CodePretext(codebooks, codebook_size, mask_ratio, temperature)

    def codes(self, features: Features) -> torch.Tensor:
        """The window as ``[B, T/pool, K]`` codes (no gradient reaches the tokenizer)."""
        x = self.pool(self.norm(features.logmel.detach())).transpose(1, 2)
        return self.quantizer(x)[0]

    def forward(self, features: Features) -> StreamOutput:
        codes = self.codes(features)
        per_codebook = self.embed(codes + self.offsets)  # [B, T, K, D]
        tokens = per_codebook.sum(2)
        frames, pooled = self.encoder(tokens)
        if not self.training:
            return StreamOutput(frames, pooled)
        return StreamOutput(frames, pooled, self.pretext(tokens, per_codebook.permute(2, 0, 1, 3), codes, self.encoder))
