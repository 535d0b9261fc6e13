"""Captions off the tagging hot path: a per-source ring, a bounded job queue, one worker thread.

The source thread (through ``Pipeline.sink``) writes every block into its source's
``CaptionRing`` too: an O(block) copy into a ring of one caption window, no lock (only that
thread touches it). Every ``every_s`` seconds of the source's *audio* time, once a full window
exists, the ring hands back a ``CaptionJob`` (a copy of the window with its capture times),
which goes into the shared ``CaptionQueue`` (bounded; the oldest job is dropped and counted).
``CaptionWorker`` runs the ``Captioner`` on whatever is queued, as one batch, and hands a
``CaptionResult`` to every publisher. A failing job is logged and counted, never fatal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rtaudio.runtime.buffer import write_circular
from rtaudio.runtime.events import CaptionResult
from rtaudio.runtime.health import Health
from rtaudio.runtime.logs import LogLimiter
from rtaudio.runtime.publish.base import Publisher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptionJob:
    """One caption window of one source, waiting for the decoder."""

    source_id: str
    start_time: float  # capture time of the first sample
    end_time: float  # capture time of the last sample
    samples: np.ndarray  # float32 [caption window]
    enqueued: float  # time.monotonic() when queued


class CaptionRing:
    """The last caption window of one source, and the audio-time schedule of its captions.

    Single-threaded by design: ``write`` runs on the source thread only, so it needs no lock.
    Captions end at stream samples ``window, window + every, window + 2 * every, ...`` (each
    taken at the first write that reaches that sample, so up to one block later).
    """

    def __init__(self, source_id: str, sample_rate: int, window: int, every: int):
        if window <= 0 or every <= 0:
            raise ValueError(f"caption window ({window}) and period ({every}) must be positive sample counts")
        self.source_id, self.sample_rate, self.window, self.every = source_id, sample_rate, window, every
        self._data = np.zeros(window, dtype=np.float32)
        self._written = 0
        self._next_due = window
        self._anchors: deque[tuple[int, float]] = deque(maxlen=4096)  # (sample index, capture time)

    def write(self, samples: np.ndarray, capture_time: float) -> CaptionJob | None:
        """Append a block; return a job when a caption is due (at most one per block)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        n = samples.size
        if n == 0:
            return None
        self._anchors.append((self._written, capture_time))
        while len(self._anchors) > 1 and self._anchors[1][0] <= self._written + n - self.window:
            self._anchors.popleft()  # the window starts after it
        write_circular(self._data, self._written, samples)
        self._written += n
        if self._written < self._next_due:
            return None
        while self._next_due <= self._written:  # a huge block: skip the captions it jumped over
            self._next_due += self.every
        end = self._written
        pos = end % self.window
        window = np.concatenate([self._data[pos:], self._data[:pos]])
        return CaptionJob(self.source_id, self._time_of(end - self.window), self._time_of(end - 1), window, time.monotonic())

    def _time_of(self, index: int) -> float:
        anchor_index, anchor_time = self._anchors[0]
        for a_index, a_time in self._anchors:
            if a_index > index:
                break
            anchor_index, anchor_time = a_index, a_time
        return anchor_time + (index - anchor_index) / self.sample_rate


class CaptionQueue:
    """Bounded FIFO of caption jobs shared by every source; full -> the oldest job is dropped."""

    def __init__(self, max_pending: int, on_drop: Callable[[CaptionJob], None] | None = None):
        if max_pending < 1:
            raise ValueError(f"max_pending {max_pending} is not allowed; expected at least 1")
        self.max_pending = max_pending
        self._jobs: deque[CaptionJob] = deque()
        self._cond = threading.Condition()
        self._on_drop = on_drop
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._jobs)

    def put(self, job: CaptionJob) -> None:
        """Queue a job (source thread); never blocks."""
        victim = None
        with self._cond:
            self._jobs.append(job)
            if len(self._jobs) > self.max_pending:
                victim = self._jobs.popleft()
                self.dropped += 1
            self._cond.notify()
        if victim is not None and self._on_drop is not None:
            self._on_drop(victim)

    def take(self, timeout: float) -> list[CaptionJob]:
        """Every queued job, oldest first; waits up to ``timeout`` s for one."""
        with self._cond:
            if not self._jobs:
                self._cond.wait(timeout)
            jobs = list(self._jobs)
            self._jobs.clear()
            return jobs

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class CaptionModel(Protocol):
    samples: int

    def __call__(self, audio: np.ndarray) -> list[str]: ...


class CaptionWorker:
    """Runs the caption decoder on its own thread and publishes every caption."""

    def __init__(
        self,
        captioner: CaptionModel,
        model_id: str,
        model_version: str,
        sample_rate: int,
        publishers: Sequence[Publisher],
        health: Health,
        max_pending: int = 4,
        withhold: Callable[[str, float, float], bool] | None = None,
    ):
        self.captioner, self.model_id, self.model_version = captioner, model_id, model_version
        self.window_s = captioner.samples / sample_rate
        self.sample_rate, self.publishers, self.health = sample_rate, list(publishers), health
        self.queue = CaptionQueue(max_pending, self._dropped)
        # (source id, start, end) -> True when privacy forbids captioning that audio (``rules.PrivacyGate.withhold``); asked before decoding
        self.withhold = withhold
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ring(self, source_id: str, every_s: float) -> CaptionRing:
        """A ring for one source, sized to the model's caption window."""
        self.health.source(source_id)  # captions_* counters show from the start
        return CaptionRing(source_id, self.sample_rate, self.captioner.samples, round(every_s * self.sample_rate))

    def feed(self, ring: CaptionRing) -> Callable[[np.ndarray, float], None]:
        """The per-block hook for the source thread: write, and queue the job when one is due."""
        put = self.queue.put

        def write(samples: np.ndarray, capture_time: float) -> None:
            job = ring.write(samples, capture_time)
            if job is not None:
                put(job)

        return write

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="captions", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Caption what is queued for up to ``timeout`` s (the job in hand is always finished), then stop."""
        deadline = time.monotonic() + timeout
        while self._thread is not None and len(self.queue) and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        self.queue.wake()
        if self._thread is not None:
            self._thread.join(max(0.5, deadline - time.monotonic()))
            if self._thread.is_alive():
                log.warning("captions: the decoder did not finish within %.1f s; leaving it", timeout)
        for job in self.queue.take(0):
            self._dropped(job)

    def process(self, jobs: list[CaptionJob]) -> None:
        """Caption ``jobs`` as one batch and publish each caption; jobs privacy withholds are never decoded (counted)."""
        if self.withhold is not None:
            kept = []
            for job in jobs:
                if self.withhold(job.source_id, job.start_time, job.end_time):
                    self.health.source(job.source_id).captions_withheld += 1
                else:
                    kept.append(job)
            jobs = kept
            if not jobs:
                return
        texts = self.captioner(np.stack([job.samples for job in jobs]))
        for job, text in zip(jobs, texts):
            latency = (time.monotonic() - job.enqueued) * 1000
            result = CaptionResult(
                job.source_id, self.model_id, self.model_version, job.start_time, job.end_time, text, round(self.window_s, 3), round(latency, 1)
            )
            for publisher in self.publishers:
                publisher.caption(result)
            source = self.health.source(job.source_id)
            source.captions_published += 1
            source.caption_latency_ms.add(latency)

    def _run(self) -> None:
        logs = LogLimiter(log)  # a broken decoder fails every job: one traceback, then a count every 10 s
        while not self._stop.is_set():
            jobs = self.queue.take(0.25)
            if not jobs:
                continue
            try:
                self.process(jobs)
            except Exception:  # a bad job must not kill the daemon: log, count, go on
                logs.exception("decode", "captions: decoding %d job(s) failed; skipped", len(jobs))
                self.health.errors += 1

    def _dropped(self, job: CaptionJob) -> None:
        self.health.source(job.source_id).captions_dropped += 1
