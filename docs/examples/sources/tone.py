"""A worked example (docs/architecture.md): a new source type is this one file in rtaudio/runtime/sources/.

``type: tone`` emits a sine at ``frequency_hz`` in real time, like a signal generator on the line.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
from pydantic import Field

from rtaudio.config.base import SourceBase
from rtaudio.runtime.sources.base import Source


class ToneConfig(SourceBase):
    """``type: tone``: a test signal."""

    type: Literal["tone"] = Field(title="Source type")
    frequency_hz: float = Field(1000.0, title="Frequency (Hz)", gt=0, le=20000)
    level_dbfs: float = Field(-20.0, title="Level (dBFS)", ge=-120, le=0)


class ToneSource(Source):
    """Emits 50 ms blocks of the configured sine until stopped."""

    type_key = "tone"
    config_class = ToneConfig

    def run(self) -> None:
        block = int(0.05 * self.sample_rate)
        amplitude = 10 ** (self.config.level_dbfs / 20)
        sent = 0
        start = time.time()
        while not self.stopping.is_set():
            t = (sent + np.arange(block)) / self.sample_rate
            self.emit((amplitude * np.sin(2 * np.pi * self.config.frequency_hz * t)).astype(np.float32), start + sent / self.sample_rate)
            sent += block
            if not self.sleep(max(0.0, start + sent / self.sample_rate - time.time())):
                break
