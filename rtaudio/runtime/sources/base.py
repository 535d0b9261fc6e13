"""The source base class: one thread per source, float32 mono frames at the model rate out.

Threading contract: ``start()`` spawns a daemon thread running ``run()``; ``run`` owns the
device or socket, calls ``emit(samples, capture_time)`` with mono float32 at
``self.sample_rate`` (resample with ``Resampler`` first), and returns soon after
``self.stopping`` is set. ``emit`` never blocks: it writes into the source's ring buffer.
Subclasses register themselves by setting ``type_key`` and ``config_class`` (their settings,
extending ``config.base.SourceBase``, defined beside them).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np

from rtaudio.config.base import SourceBase
from rtaudio.runtime.health import SourceHealth

log = logging.getLogger(__name__)

Sink = Callable[[np.ndarray, float], None]


class Source(ABC):
    """A stream of mono float32 audio at the model's sample rate."""

    type_key: ClassVar[str]
    config_class: ClassVar[type[SourceBase]]
    registry: ClassVar[dict[str, type[Source]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        key = getattr(cls, "type_key", None)
        if key:
            Source.registry[key] = cls

    def __init__(self, config: Any, sample_rate: int, sink: Sink, health: SourceHealth | None = None):
        self.config = config
        self.id: str = config.id
        self.sample_rate = sample_rate
        self.health = health or SourceHealth(config.id)
        self._sink = sink
        self._gain = float(10 ** (getattr(config, "gain_db", 0.0) / 20))
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def emit(self, samples: np.ndarray, capture_time: float) -> None:
        """Hand mono float32 samples (first captured at ``capture_time``) to the pipeline."""
        if samples.size == 0:
            return
        samples = samples.astype(np.float32, copy=False)
        if self._gain != 1.0:
            samples = samples * np.float32(self._gain)
        self.health.on_samples(samples)
        self._sink(samples, capture_time)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=f"source-{self.id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        self._close()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _main(self) -> None:
        try:
            self.run()
        except Exception:  # a source must never take the daemon down
            log.exception("source %s failed", self.id)
            self.health.errors += 1

    @abstractmethod
    def run(self) -> None:
        """Thread body: capture until ``self.stopping`` is set."""

    def _close(self) -> None:
        """Unblock ``run`` (close sockets, kill processes); called from ``stop``."""

    def backoff(self, initial: float = 0.5, maximum: float = 30.0) -> Iterator[float]:
        """Exponential backoff delays (doubling, capped) for reopen/restart loops."""
        delay = initial
        while True:
            yield delay
            delay = min(delay * 2, maximum)

    def sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; True if the source should go on."""
        return not self.stopping.wait(seconds)


class Resampler:
    """Streaming resampler (soxr) from a native rate to the model rate; identity when equal."""

    def __init__(self, in_rate: int, out_rate: int):
        self.in_rate, self.out_rate = in_rate, out_rate
        self._stream = None
        if in_rate != out_rate:
            import soxr

            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples)

    def flush(self) -> np.ndarray:
        """The samples still held in the filter at the end of the input; then start afresh."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        tail = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._stream.clear()
        return tail


def now() -> float:
    """Wall-clock capture time (UNIX seconds)."""
    return time.time()
