"""(g) Pretrained stream: the aisfx sound-effects CNN (Ma & Lerch, ISMIR 2022, X-Sequential-CE) on its
own front-end, projected to 64-d.

The network is rebuilt here (four VGG-like blocks of the DCASE cross-task baseline, 4.7 M
parameters) so that its parameter names are aisfx's ``embedding_net.`` keys without the prefix;
``load_aisfx`` loads the real weights, which training fetches (``rtaudio.train.pretrained``) and
checkpoints then carry. The stream reads ``features.waveform`` through ``SfxLogMel`` (aisfx's
bands at the model rate) rather than the shared 64-band log-mel.

Frames are the per-step 512-d features (mean over frequency) through a Linear + LayerNorm to 64-d;
the pooled embedding is the same projection of their maximum over time, which is the aisfx
embedding itself. That raw 512-d embedding is returned as ``StreamOutput.teacher`` for
distillation. ``trainable`` says how much of the CNN training may change: ``frozen`` (none),
``last`` (conv_block4 only) or ``all``; frozen blocks get no gradients and keep their BatchNorm
statistics in train mode too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn

from rtaudio.dsp.sfx_mel import SfxLogMel
from rtaudio.model.common import EMBED_DIM, Features, Stream, StreamOutput
from rtaudio.model.config import ModelConfig

AISFX_DIM = 512
Trainable = Literal["frozen", "last", "all"]
FROZEN_BLOCKS: dict[str, tuple[str, ...]] = {
    "frozen": ("conv_block1", "conv_block2", "conv_block3", "conv_block4"),
    "last": ("conv_block1", "conv_block2", "conv_block3"),
    "all": (),
}


class ConvBlock(nn.Module):
    """Two (3x3 conv, BatchNorm, ReLU) then a max-pool of ``pool`` (time, frequency)."""

    def __init__(self, in_channels: int, out_channels: int, pool: tuple[int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = nn.MaxPool2d(pool) if pool != (1, 1) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.pool(torch.relu(self.bn2(self.conv2(x))))


class SfxCNN(nn.Module):
    """aisfx's embedding network up to the max over time: features ``[B, T, bands]`` -> ``[B, T // 8, 512]``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_block1 = ConvBlock(1, 64, (2, 2))
        self.conv_block2 = ConvBlock(64, 128, (2, 2))
        self.conv_block3 = ConvBlock(128, 256, (2, 2))
        self.conv_block4 = ConvBlock(256, AISFX_DIM, (1, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features[:, None]  # [B, 1, T, bands]
        for block in (self.conv_block1, self.conv_block2, self.conv_block3, self.conv_block4):
            x = block(x)
        return x.mean(dim=3).transpose(1, 2)  # mean over frequency


class PretrainedStream(Stream):
    """aisfx features -> ``SfxCNN`` -> Linear + LayerNorm to 64-d per step; pooled: the max over time."""

    name = "pretrained"

    def __init__(self, config: ModelConfig, trainable: Trainable = "frozen", peak_normalise: bool = True, peak_floor: float = 1e-3):
        super().__init__()
        if trainable not in FROZEN_BLOCKS:
            raise ValueError(f"pretrained stream: trainable must be one of {', '.join(FROZEN_BLOCKS)} (got {trainable!r})")
        self.trainable = trainable
        self.features = SfxLogMel(config.sample_rate, peak_normalise, peak_floor)
        self.cnn = SfxCNN()
        self.project = nn.Sequential(nn.Linear(AISFX_DIM, EMBED_DIM), nn.LayerNorm(EMBED_DIM))
        self._freeze()

    def frozen_modules(self) -> list[nn.Module]:
        """The CNN blocks that ``trainable`` keeps as loaded."""
        return [getattr(self.cnn, name) for name in FROZEN_BLOCKS[self.trainable]]

    def _freeze(self) -> None:
        for module in self.frozen_modules():
            module.requires_grad_(False)
            module.eval()

    def train(self, mode: bool = True) -> PretrainedStream:
        """Train mode everywhere but the frozen blocks, which also lose gradients again (a caller's
        ``requires_grad_(True)`` on the whole model must not unfreeze them)."""
        super().train(mode)
        self._freeze()
        return self

    def load_aisfx(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load aisfx's ``embedding_net.`` weights (prefix stripped) into the CNN; every key must match."""
        expected, given = set(self.cnn.state_dict()), set(state_dict)
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        if missing or unexpected:
            raise ValueError(f"aisfx weights do not fit the pretrained stream's CNN: missing {missing or 'none'}, unexpected {unexpected or 'none'}")
        self.cnn.load_state_dict(state_dict)

    def forward(self, features: Features) -> StreamOutput:
        steps = self.cnn(self.features(features.waveform).transpose(1, 2))  # [B, T', 512]
        teacher = steps.amax(dim=1)  # the aisfx embedding
        return StreamOutput(self.project(steps), self.project(teacher), teacher=teacher)
