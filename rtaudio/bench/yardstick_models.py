"""Two reference architectures, random weights, raw waveform in, with their log-mel front-end in the graph.

- ``YamnetLike``: YAMNet's MobileNetV1 (a 3x3 stem and 13 depthwise-separable blocks,
  32..1024 channels, 521 classes, ~3.7M parameters) on 96x64 log-mel patches (0.96 s at a
  10 ms hop, 125-7500 Hz), patches every 0.48 s and their scores averaged, as YAMNet does.
- ``EfficientAtMn10Like``: EfficientAT's mn10 (MobileNetV3-Large at width 1.0: inverted
  residuals with squeeze-excitation and hard-swish, a 1280-wide classifier, 527 classes,
  ~4.9M parameters) on a 128-band log-mel.

Both use ``rtaudio.dsp.LogMel`` at a 25 ms-class FFT and 10 ms hop of the model's sample rate,
so they see the same window as the model they are compared with. Only their cost matters.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rtaudio.dsp import LogMel

YAMNET_CLASSES = 521
AUDIOSET_CLASSES = 527
PATCH_FRAMES, PATCH_HOP_FRAMES = 96, 48

# (stride, out channels) of YAMNet's 13 separable blocks after the 3x3 stride-2 stem of 32
YAMNET_BLOCKS = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512)] + [(1, 512)] * 5 + [(2, 1024), (1, 1024)]

# MobileNetV3-Large: (kernel, expanded, out, squeeze-excite, hard-swish, stride); EfficientAT mn10 = width 1.0
MN10_BLOCKS = [
    (3, 16, 16, False, False, 1),
    (3, 64, 24, False, False, 2),
    (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2),
    (5, 120, 40, True, False, 1),
    (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2),
    (3, 200, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 480, 112, True, True, 1),
    (3, 672, 112, True, True, 1),
    (5, 672, 160, True, True, 2),
    (5, 960, 160, True, True, 1),
    (5, 960, 160, True, True, 1),
]


def _logmel(sample_rate: int, n_mels: int, fmin: float, fmax: float | None, eps: float) -> LogMel:
    """25 ms-class FFT (next power of two), 10 ms hop."""
    n_fft = 1 << math.ceil(math.log2(0.025 * sample_rate))
    return LogMel(sample_rate, n_fft=n_fft, hop=round(0.010 * sample_rate), n_mels=n_mels, fmin=fmin, fmax=fmax, eps=eps)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act) if act is not None else nn.Sequential(*layers)


class YamnetLike(nn.Module):
    """waveform [batch, samples] -> scores [batch, 521]."""

    def __init__(self, sample_rate: int, window_samples: int, classes: int = YAMNET_CLASSES):
        super().__init__()
        self.logmel = _logmel(sample_rate, 64, 125.0, min(7500.0, sample_rate / 2), 1e-3)
        frames = 1 + window_samples // self.logmel.stft.hop
        self.pad = max(0, PATCH_FRAMES - frames)
        self.patches = 1 + (frames + self.pad - PATCH_FRAMES) // PATCH_HOP_FRAMES
        self.floor = math.log(1e-3)
        layers: list[nn.Module] = [_conv_bn(1, 32, 3, 2, act=nn.ReLU())]
        cin = 32
        for stride, cout in YAMNET_BLOCKS:
            layers += [_conv_bn(cin, cin, 3, stride, groups=cin, act=nn.ReLU()), _conv_bn(cin, cout, 1, act=nn.ReLU())]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, classes)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        mel = self.logmel(waveform)  # [B, 64, frames]
        if self.pad:
            mel = nn.functional.pad(mel, (0, self.pad), value=self.floor)
        patches = torch.stack([mel[:, :, i * PATCH_HOP_FRAMES : i * PATCH_HOP_FRAMES + PATCH_FRAMES] for i in range(self.patches)], 1)
        x = patches.transpose(2, 3).reshape(-1, 1, PATCH_FRAMES, 64)  # [B*P, 1, 96 frames, 64 bands]
        x = self.features(x).mean(dim=(2, 3))
        scores = torch.sigmoid(self.classifier(x))
        return scores.reshape(-1, self.patches, scores.shape[-1]).mean(1)


def _divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        squeeze = _divisible(channels / 4)
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * nn.functional.hardsigmoid(scale)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, se: bool, hswish: bool, stride: int):
        super().__init__()
        act = nn.Hardswish if hswish else nn.ReLU
        layers: list[nn.Module] = [] if expanded == cin else [_conv_bn(cin, expanded, 1, act=act())]
        layers.append(_conv_bn(expanded, expanded, kernel, stride, groups=expanded, act=act()))
        if se:
            layers.append(SqueezeExcite(expanded))
        layers.append(_conv_bn(expanded, cout, 1))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class EfficientAtMn10Like(nn.Module):
    """waveform [batch, samples] -> scores [batch, 527]."""

    def __init__(self, sample_rate: int, classes: int = AUDIOSET_CLASSES):
        super().__init__()
        self.logmel = _logmel(sample_rate, 128, 0.0, None, 1e-5)
        layers: list[nn.Module] = [_conv_bn(1, 16, 3, 2, act=nn.Hardswish())]
        cin = 16
        for kernel, expanded, cout, se, hswish, stride in MN10_BLOCKS:
            layers.append(InvertedResidual(cin, kernel, expanded, cout, se, hswish, stride))
            cin = cout
        layers.append(_conv_bn(cin, 6 * cin, 1, act=nn.Hardswish()))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(6 * cin, 1280), nn.Hardswish(), nn.Linear(1280, classes))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = self.features(self.logmel(waveform)[:, None])  # [B, 1, 128 bands, frames]
        return torch.sigmoid(self.classifier(x.mean(dim=(2, 3))))
