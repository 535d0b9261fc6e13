"""Audio file source (WAV, FLAC, OGG): replays a file as a stream, for demos and tests.

The stream clock starts at the wall time of ``start`` and advances by samples / rate, so a
replay has consistent capture times whatever the pacing. With ``realtime: true`` blocks are
released on a monotonic schedule; with ``realtime: false`` they go as fast as the pipeline
takes them: set ``ready`` to a callable that is False while the pipeline has a backlog.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import soundfile as sf
from pydantic import Field

from rtaudio.config.base import SourceBase
from rtaudio.config.loader import resolve_path
from rtaudio.runtime.sources.base import Resampler, Source

log = logging.getLogger(__name__)

BACKPRESSURE_POLL_S = 0.005


class FileConfig(SourceBase):
    """``type: file``: an audio file replayed as a stream (demos, tests)."""

    type: Literal["file"] = Field(title="Source type")
    path: Path = Field(title="Audio file", description="WAV, FLAC or OGG; relative paths are relative to the config file.")
    realtime: bool = Field(True, title="Pace in real time", description="false reads as fast as the pipeline takes it.")
    loop: bool = Field(False, title="Loop", description="Restart at the end of the file.")
    block_s: float = Field(0.05, title="Block length (s)", gt=0, le=2)

    def resolve_paths(self, base: Path, where: str) -> list[str]:
        self.path = resolve_path(base, self.path)
        return [] if self.path.is_file() else [f"{where}.path: {self.path} does not exist"]


class FileSource(Source):
    """Reads ``config.path``, mixes to mono, resamples and emits blocks of ``block_s``.

    ``ready`` (set by the pipeline, optional) is polled from the source thread before each
    block when not in real time; it must be cheap and thread-safe.
    """

    type_key = "file"
    config_class = FileConfig
    config: FileConfig

    ready: Callable[[], bool] | None = None

    def run(self) -> None:
        try:
            audio = sf.SoundFile(str(self.config.path))
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            self._fail(f"cannot open {self.config.path}: {exc}; expected a readable WAV, FLAC or OGG file")
            return
        with audio:
            if audio.frames == 0:
                self._fail(f"{self.config.path} holds no audio frames")
                return
            try:
                self._play(audio)
            except (sf.LibsndfileError, RuntimeError) as exc:
                self._fail(f"cannot decode {self.config.path}: {exc}")
                return
        self.health.connected = False

    def _play(self, audio: sf.SoundFile) -> None:
        """Emit the file (again and again with ``loop``) until its end or ``stopping``."""
        block = max(1, round(self.config.block_s * audio.samplerate))
        resample = Resampler(audio.samplerate, self.sample_rate)
        start_wall, start_mono = time.time(), time.monotonic()
        frames_in = 0  # native frames read since start, across loops: the pacing schedule
        samples_out = 0  # samples emitted since start: the stream clock
        while not self.stopping.is_set():
            data = audio.read(block, dtype="float32", always_2d=True)
            if len(data) == 0:
                if self.config.loop:
                    audio.seek(0)
                    continue
                self.emit(resample.flush(), start_wall + samples_out / self.sample_rate)
                log.info("source %s: end of %s after %.1f s of audio", self.id, self.config.path, frames_in / audio.samplerate)
                return
            frames_in += len(data)
            if not self._wait_turn(start_mono + frames_in / audio.samplerate):
                return
            out = resample(data.mean(axis=1))
            self.emit(out, start_wall + samples_out / self.sample_rate)
            samples_out += out.size

    def _wait_turn(self, due_mono: float) -> bool:
        """Sleep to the block's due time (real time) or while the pipeline is backlogged."""
        if self.config.realtime:
            delay = due_mono - time.monotonic()
            return self.sleep(delay) if delay > 0 else not self.stopping.is_set()
        while self.ready is not None and not self.ready():
            if not self.sleep(BACKPRESSURE_POLL_S):
                return False
        return not self.stopping.is_set()

    def _fail(self, message: str) -> None:
        log.error("source %s: %s", self.id, message)
        self.health.errors += 1
        self.health.connected = False
