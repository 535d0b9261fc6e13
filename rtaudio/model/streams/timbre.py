"""(c) Timbre stream: MFCCs + spectral descriptors per frame -> Transformer (Verma's timbre embedding)."""

from __future__ import annotations

import torch
from torch import nn

from rtaudio.dsp.mfcc import MFCC
from rtaudio.dsp.timbre import AMIN, SpectralDescriptors, octave_bands_below_nyquist
from rtaudio.model.common import Features, Stream, StreamOutput, TemporalEncoder
from rtaudio.model.config import ModelConfig


class TimbreStream(Stream):
    """``mfcc`` MFCCs, centroid/bandwidth/rolloff (as fractions of Nyquist), log10 flatness and the
    octave contrasts (as many as fit below Nyquist), normalised per feature (BatchNorm), averaged over ``pool`` frames, then the
    shared 64-d temporal encoder."""

    name = "timbre"

    def __init__(self, config: ModelConfig, mfcc: int = 20, pool: int = 2):
        super().__init__()
        self.mfcc = MFCC(config.n_mels, mfcc)
        bands = octave_bands_below_nyquist(config.sample_rate)  # 6 at 16 kHz, 5 at 8 kHz
        self.descriptors = SpectralDescriptors(config.sample_rate, config.n_fft, n_bands=bands)
        self.nyquist = config.sample_rate / 2
        width = mfcc + 4 + len(self.descriptors.bands)
        self.norm = nn.BatchNorm1d(width)
        self.pool = nn.AvgPool1d(pool) if pool > 1 else nn.Identity()
        self.encoder = TemporalEncoder(width, config.layers, config.heads, dropout=config.dropout)

    def forward(self, features: Features) -> StreamOutput:
        d = self.descriptors(features.power)
        slices = self.descriptors.slices
        x = torch.cat(
            [
                self.mfcc(features.logmel),
                d[:, slices["centroid"]] / self.nyquist,
                d[:, slices["bandwidth"]] / self.nyquist,
                torch.log10(d[:, slices["flatness"]] + AMIN),
                d[:, slices["rolloff"]] / self.nyquist,
                d[:, slices["contrast"]],
            ],
            dim=1,
        )
        frames, pooled = self.encoder(self.pool(self.norm(x)).transpose(1, 2))
        return StreamOutput(frames, pooled)
