"""INT8 calibration data: a folder of audio files cut into model windows, and the entropy calibrator.

Windows are read up front (a few hundred windows are tens of MB), so nothing can fail inside
TensorRT's calibrator callbacks, which must not raise.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from rtaudio.audiofile import AUDIO_SUFFIXES, read_mono
from rtaudio.contract import ModelInfo

log = logging.getLogger(__name__)

DEFAULT_WINDOWS = 512
DEFAULT_BATCH = 8


class CalibrationError(ValueError):
    """Calibration data that cannot be used; the message names the folder or file."""


def audio_files(folder: Path) -> list[Path]:
    """Audio files under ``folder`` (recursively), sorted, so calibration is reproducible."""
    if not folder.is_dir():
        raise CalibrationError(f"calibration folder {folder} does not exist or is not a directory")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise CalibrationError(f"calibration folder {folder} holds no audio files; expected {', '.join(AUDIO_SUFFIXES)}")
    return files


def calibration_windows(folder: Path, info: ModelInfo, max_windows: int = DEFAULT_WINDOWS) -> np.ndarray:
    """float32 ``[n, window]``: every file cut into back-to-back windows, evenly thinned to ``max_windows``.

    A file shorter than one window is zero-padded to one, as the offline tagger does.
    """
    window = info.window_samples
    pieces: list[np.ndarray] = []
    for path in audio_files(folder):
        audio = read_mono(path, info.sample_rate)  # ValueError naming the file when unreadable
        if audio.size < window:
            audio = np.pad(audio, (0, window - audio.size))
        count = audio.size // window
        pieces.append(audio[: count * window].reshape(count, window))
    windows = np.concatenate(pieces).astype(np.float32, copy=False)
    if len(windows) > max_windows:
        windows = windows[np.linspace(0, len(windows) - 1, max_windows).round().astype(int)]
    return np.ascontiguousarray(windows)


def calibration_batches(windows: np.ndarray, batch_size: int = DEFAULT_BATCH) -> list[np.ndarray]:
    """Full ``[batch_size, window]`` batches (TensorRT calibrates at one fixed shape); the remainder is left out."""
    if len(windows) < batch_size:
        raise CalibrationError(f"{len(windows)} calibration windows cannot fill one batch of {batch_size}; add audio")
    count = len(windows) // batch_size
    return [np.ascontiguousarray(windows[i * batch_size : (i + 1) * batch_size]) for i in range(count)]


def entropy_calibrator(trt: Any, batches: list[np.ndarray], cache: Path) -> Any:
    """A ``trt.IInt8EntropyCalibrator2`` feeding ``batches`` from one device buffer; the cache is read and written at ``cache``.

    With an existing cache and no batches, TensorRT takes the scales from the cache.
    """
    from rtaudio.tensorrt.cuda import DeviceBuffer

    batch_size = batches[0].shape[0] if batches else DEFAULT_BATCH

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.buffer = DeviceBuffer(batches[0].nbytes) if batches else None
            self.index = 0

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.buffer is None or self.index >= len(batches):
                if self.buffer is not None:
                    self.buffer.free()
                    self.buffer = None
                return None
            self.buffer.upload(batches[self.index])
            self.index += 1
            if self.index % 10 == 0 or self.index == len(batches):
                log.info("int8 calibration: batch %d/%d", self.index, len(batches))
            return [self.buffer.ptr]

        def read_calibration_cache(self) -> bytes | None:
            if cache.is_file():
                log.info("int8 calibration: reusing cache %s", cache)
                return cache.read_bytes()
            return None

        def write_calibration_cache(self, data: Any) -> None:
            cache.write_bytes(bytes(data))
            log.info("int8 calibration: cache written to %s", cache)

    return EntropyCalibrator()
