"""Ring buffer and windowing: the one place that turns a sample stream into due windows.

A source thread writes; the pipeline thread reads. Memory is fixed at construction
(capacity = window + backlog hops), whatever the input rate. When the reader falls behind
more than ``max_backlog`` windows, the oldest are skipped and counted.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """One window of audio with its stream-clock position."""

    samples: np.ndarray  # float32 [window]
    end_index: int  # stream sample index one past the window's last sample
    start_time: float  # capture time (UNIX s) of the first sample
    end_time: float  # capture time of the last sample


def write_circular(data: np.ndarray, written: int, samples: np.ndarray) -> None:
    """Store ``samples`` (stream samples ``written``, ``written + 1``, ...) in the circular ``data``;
    only the last ``len(data)`` of a longer block are kept."""
    tail = samples[-data.size :]
    start = (written + samples.size - tail.size) % data.size
    first = min(tail.size, data.size - start)
    data[start : start + first] = tail[:first]
    data[: tail.size - first] = tail[first:]


class RingBuffer:
    """Fixed-size single-writer/single-reader sample ring with a capture clock.

    ``write`` is called by the source thread; ``due_windows`` by the pipeline thread.
    """

    def __init__(self, sample_rate: int, window: int, hop: int, max_backlog: int = 8):
        if window <= 0 or hop <= 0:
            raise ValueError(f"window ({window}) and hop ({hop}) must be positive sample counts")
        if hop > window:
            raise ValueError(f"hop ({hop}) must not exceed window ({window})")
        if max_backlog < 1:
            raise ValueError(f"max_backlog ({max_backlog}) must be at least 1")
        self.sample_rate, self.window, self.hop, self.max_backlog = sample_rate, window, hop, max_backlog
        self.capacity = window + hop * max_backlog
        self._data = np.zeros(self.capacity, dtype=np.float32)
        self._written = 0  # total samples ever written (the stream sample counter)
        self._next_end = window  # end index of the next window to emit
        self._anchors: deque[tuple[int, float]] = deque(maxlen=256)  # (sample index, capture time)
        self._lock = threading.Lock()
        self.dropped = 0  # windows skipped because the reader fell behind
        self.emitted = 0

    @property
    def written(self) -> int:
        return self._written

    def write(self, samples: np.ndarray, capture_time: float) -> None:
        """Append mono float32 samples whose first sample was captured at ``capture_time``."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        n = samples.size
        if n == 0:
            return
        with self._lock:
            self._anchors.append((self._written, capture_time))
            write_circular(self._data, self._written, samples)
            self._written += n

    def time_of(self, index: int) -> float:
        """Capture time of stream sample ``index``, from the latest anchor at or before it."""
        anchor_index, anchor_time = self._anchors[0]
        for a_index, a_time in self._anchors:
            if a_index <= index:
                anchor_index, anchor_time = a_index, a_time
            else:
                break
        return anchor_time + (index - anchor_index) / self.sample_rate

    def pending(self) -> int:
        """How many complete windows wait to be read (may exceed ``max_backlog`` until read)."""
        written = self._written
        return (written - self._next_end) // self.hop + 1 if written >= self._next_end else 0

    def due_windows(self, limit: int | None = None) -> list[Window]:
        """Up to ``limit`` complete windows not yet returned, oldest first.

        Windows beyond the newest ``max_backlog`` are skipped and counted as dropped first;
        windows past ``limit`` stay for the next call.
        """
        with self._lock:
            due = self.pending()
            if due > self.max_backlog:
                skip = due - self.max_backlog
                self.dropped += skip
                self._next_end += skip * self.hop
                due = self.max_backlog
            if limit is not None:
                due = min(due, limit)
            windows = []
            for _ in range(due):
                end = self._next_end
                idx = np.arange(end - self.window, end) % self.capacity
                windows.append(Window(self._data[idx], end, self.time_of(end - self.window), self.time_of(end - 1)))
                self._next_end += self.hop
            self.emitted += len(windows)
            return windows
