"""(e) Generative stream: the encoder of a VAE over log-mel patches -> mu frames -> Transformer.

A patch is ``patch`` log-mel frames x all mel bands, taken every ``stride`` frames; the encoder's
first layer is a conv whose kernel spans the whole patch, so it is a linear map of the flattened
patch and exports for any window length. While training the stream samples
``z = mu + eps * std``, decodes it back to the patch and returns the reconstruction (MSE) and KL
losses, so generative detail is learnt alongside the tags (multi-task). At inference only ``mu``
is used: no sampling, and the decoder is not in the exported graph.
"""

from __future__ import annotations

import torch
from torch import nn

from rtaudio.model.common import Features, Stream, StreamOutput, TemporalEncoder
from rtaudio.model.config import ModelConfig


class GenerativeStream(Stream):
    name = "generative"
    kind = "generative"
    self_supervised = True

    def __init__(self, config: ModelConfig, patch: int = 8, stride: int = 4, hidden: int = 128, latent: int = 32):
        super().__init__()
        if not 1 <= stride <= patch:
            raise ValueError(f"generative stream needs 1 <= stride <= patch (got stride {stride}, patch {patch})")
        self.patch, self.stride, self.n_mels = patch, stride, config.n_mels
        self.norm = nn.BatchNorm1d(config.n_mels, affine=False)  # fixed-scale target for the reconstruction
        self.encoder = nn.Sequential(
            nn.Conv1d(config.n_mels, hidden, patch, stride=stride),
            nn.GELU(),
            nn.Conv1d(hidden, hidden, 1),
            nn.GELU(),
        )
        self.mu = nn.Conv1d(hidden, latent, 1)
        self.logvar = nn.Conv1d(hidden, latent, 1)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.GELU(), nn.Linear(hidden, config.n_mels * patch))
        self.temporal = TemporalEncoder(latent, config.layers, config.heads, dropout=config.dropout)

    def forward(self, features: Features) -> StreamOutput:
        x = self.norm(features.logmel)  # [B, M, T]
        h = self.encoder(x)
        mu = self.mu(h).transpose(1, 2)  # [B, L, latent], L = (T - patch) // stride + 1
        frames, pooled = self.temporal(mu)
        if not self.training:
            return StreamOutput(frames, pooled)
        return StreamOutput(frames, pooled, self._vae_losses(x, mu, self.logvar(h).transpose(1, 2)))

    def _vae_losses(self, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction MSE per patch element and KL per latent dimension (both means, so scales compare)."""
        logvar = logvar.clamp(-10.0, 10.0)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = self.decoder(z).unflatten(-1, (self.n_mels, self.patch))  # [B, L, M, patch]
        target = x.unfold(2, self.patch, self.stride).transpose(1, 2)  # [B, L, M, patch]
        kl = -0.5 * (1 + logvar - mu * mu - logvar.exp()).mean()
        return {"recon": nn.functional.mse_loss(recon, target.detach()), "kl": kl}
