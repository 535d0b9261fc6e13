"""Waveform augmentation for a training batch: random gain, background noise, time masks, mixup.

It works on the raw waveform because the front-end is inside the model (the features are
computed from whatever the batch holds). All randomness comes from one ``torch.Generator``
whose state is checkpointed, so a resumed run draws the same augmentations.
"""

from __future__ import annotations

import numpy as np
import torch

from rtaudio.train.config import AugmentConfig


def _uniform(gen: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen)


def background_noise(gen: torch.Generator, batch: int, samples: int) -> torch.Tensor:
    """Unit-RMS noise with a random spectral tilt per clip (white to brownish)."""
    white = torch.randn(batch, samples, generator=gen)
    freqs = torch.fft.rfftfreq(samples).clamp(min=1.0 / samples)
    tilt = _uniform(gen, (batch, 1), 0.0, 1.0)  # amplitude ~ f^-tilt
    noise = torch.fft.irfft(torch.fft.rfft(white) * freqs.pow(-tilt), n=samples)
    return noise / noise.pow(2).mean(dim=1, keepdim=True).sqrt().clamp(min=1e-8)


def augment_batch(x: torch.Tensor, y: torch.Tensor, config: AugmentConfig, gen: torch.Generator, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented copies of waveform ``x [B, N]`` and targets ``y [B, C]`` (on CPU; move after)."""
    batch, samples = x.shape
    x = x.clone()
    if config.gain_db > 0:
        x = x * 10 ** (_uniform(gen, (batch, 1), -config.gain_db, config.gain_db) / 20)
    if config.noise_p > 0:
        rms = x.pow(2).mean(dim=1, keepdim=True).sqrt().clamp(min=1e-5)
        snr = _uniform(gen, (batch, 1), *config.noise_snr_db)
        on = (torch.rand(batch, 1, generator=gen) < config.noise_p).float()
        x = x + on * background_noise(gen, batch, samples) * rms * 10 ** (-snr / 20)
    longest = int(config.time_mask_s * sample_rate)
    if config.time_masks and longest > 0:
        positions = torch.arange(samples)
        for _ in range(config.time_masks):
            width = torch.randint(0, longest + 1, (batch, 1), generator=gen)
            start = (torch.rand(batch, 1, generator=gen) * (samples - width).clamp(min=0)).long()
            x = x * ~((positions >= start) & (positions < start + width))
    if config.mixup_alpha > 0 and batch > 1:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        lam = torch.from_numpy(np.random.default_rng(seed).beta(config.mixup_alpha, config.mixup_alpha, (batch, 1)).astype(np.float32))
        perm = torch.randperm(batch, generator=gen)
        x, y = lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]
    return x, y
