"""Counters, latency percentiles and histograms, per source and for the engine: the one record that the
MQTT health message, ``/metrics`` and ``/healthz`` all read (``runtime.http``, ``runtime.checks``).

Counters are plain ints bumped from one thread each (source, pipeline, publisher); a
snapshot may be a few samples stale, never inconsistent enough to matter.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Upper bounds (ms) of the latency histograms exported on /metrics (as seconds); +Inf is implied.
LATENCY_BUCKETS_MS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0)


class Percentiles:
    """Bounded reservoir of the most recent values with p50/p99, plus a cumulative histogram of every value
    (count, sum, per-bucket counts) since start, for Prometheus."""

    def __init__(self, size: int = 2048, buckets: tuple[float, ...] = LATENCY_BUCKETS_MS):
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.bounds = buckets
        self._counts = [0] * (len(buckets) + 1)  # the last one: above every bound
        self.count = 0
        self.sum = 0.0

    def add(self, value: float) -> None:
        with self._lock:
            self._values.append(value)
            self._counts[bisect.bisect_left(self.bounds, value)] += 1
            self.count += 1
            self.sum += value

    def histogram(self) -> tuple[list[tuple[float, int]], int, float]:
        """``([(upper bound, cumulative count), ...], count, sum)``; the bounds end with +inf."""
        with self._lock:
            counts, count, total = list(self._counts), self.count, self.sum
        cumulative = list(itertools.accumulate(counts))
        return list(zip([*self.bounds, float("inf")], cumulative)), count, total

    def summary(self) -> dict[str, float | None]:
        with self._lock:
            values = np.fromiter(self._values, dtype=np.float64)
        if values.size == 0:
            return {"p50": None, "p99": None, "n": 0}
        p50, p99 = np.percentile(values, [50, 99])
        return {"p50": round(float(p50), 2), "p99": round(float(p99), 2), "n": int(values.size)}


@dataclass
class SourceHealth:
    """What one source has done since start."""

    source_id: str
    samples: int = 0
    level_dbfs: float = -120.0  # RMS of the latest block
    windows_processed: int = 0
    windows_dropped: int = 0
    windows_gated: int = 0  # below the source's min_level_db: not inferred
    levels_dropped: int = 0  # level readings the pipeline thread did not take in time
    packets_lost: int = 0
    packets_malformed: int = 0  # RTP: unparseable, payload type not decoded here, lone wild sequence number
    packets_rejected: int = 0  # RTP: sender not in allow_from
    packets_late: int = 0  # RTP: arrived after their place was played
    packets_duplicate: int = 0  # RTP: a sequence number already buffered
    discontinuities: int = 0  # RTP: new streams after the first (SSRC change, sequence or timestamp jump)
    restarts: int = 0  # reopen/reconnect/restart of the device, socket or process
    errors: int = 0
    connected: bool = False
    last_data: float = 0.0  # wall time of the latest samples
    latency_ms: Percentiles = field(default_factory=Percentiles)  # capture of last sample -> publish
    captions_published: int = 0
    captions_dropped: int = 0  # caption jobs dropped from the full queue (or left at shutdown)
    captions_withheld: int = 0  # captions not made: a private label active on the source, or the source paused (rules.PrivacyGate)
    caption_latency_ms: Percentiles = field(default_factory=Percentiles)  # caption job queued -> published
    events_opened: dict[str, int] = field(default_factory=dict)  # onsets published, by label (or query name)
    clips_saved: int = 0
    clips_dropped: int = 0  # clips not written: disk full, directory unwritable, ring overrun (runtime.clips)
    silent_after_s: float | None = None  # this source's limit for /healthz (None: the site's health.source_silent_s)

    def on_samples(self, samples: np.ndarray) -> None:
        self.samples += samples.size
        rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
        self.level_dbfs = round(20 * np.log10(max(rms, 1e-6)), 1)
        self.last_data = time.time()
        self.connected = True

    def silent_s(self, now: float, started: float) -> float:
        """Seconds without audio at ``now``: since the latest samples, or since ``started`` when none came yet."""
        return max(0.0, now - (self.last_data or started))

    def snapshot(self) -> dict[str, Any]:
        return {
            "level_dbfs": self.level_dbfs,
            "connected": self.connected,
            "samples": self.samples,
            "windows_processed": self.windows_processed,
            "windows_dropped": self.windows_dropped,
            "windows_gated": self.windows_gated,
            "levels_dropped": self.levels_dropped,
            "packets_lost": self.packets_lost,
            "packets_malformed": self.packets_malformed,
            "packets_rejected": self.packets_rejected,
            "packets_late": self.packets_late,
            "packets_duplicate": self.packets_duplicate,
            "discontinuities": self.discontinuities,
            "restarts": self.restarts,
            "errors": self.errors,
            "seconds_since_data": round(time.time() - self.last_data, 2) if self.last_data else None,
            "latency_ms": self.latency_ms.summary(),
            "captions_published": self.captions_published,
            "captions_dropped": self.captions_dropped,
            "captions_withheld": self.captions_withheld,
            "caption_latency_ms": self.caption_latency_ms.summary(),
            "events_opened": dict(self.events_opened),
            "clips_saved": self.clips_saved,
            "clips_dropped": self.clips_dropped,
        }


@dataclass
class Health:
    """Process-wide health: sources, engine and publisher."""

    sources: dict[str, SourceHealth] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    engine: str = ""
    inference_ms: Percentiles = field(default_factory=Percentiles)
    batches: int = 0
    errors: int = 0  # failed inference batches
    busy_s: float = 0.0  # time spent in inference
    audio_s: float = 0.0  # audio seconds covered by the windows inferred (hop each), summed over every stream
    pipeline_busy_s: float = 0.0  # wall time the pipeline thread spent on batches: gather, inference, dispatch
    busy_fraction: float | None = None  # share of wall time the pipeline thread was busy, latest health interval (set by the pipeline)
    messages_dropped: dict[str, int] = field(default_factory=dict)  # by message kind
    outbox_depth: int = 0
    broker_connected: bool = False
    broker_reconnects: int = 0  # connections after the first
    broker_down_since: float | None = None  # wall time the broker was lost (or first tried); None while connected
    batch_sizes: Percentiles = field(default_factory=lambda: Percentiles(buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)))
    last_batch_ok: float = 0.0  # wall time of the latest batch inferred without error
    last_batch_error: float = 0.0  # wall time of the latest failed batch
    checks: list[dict[str, Any]] = field(default_factory=list)  # failing health checks (runtime.checks), set before each snapshot

    def source(self, source_id: str) -> SourceHealth:
        return self.sources.setdefault(source_id, SourceHealth(source_id))

    def real_time_factor_per_stream(self) -> float | None:
        """Inference time per second of one stream's audio. Batching shares a call among streams,
        so it stays small as streams are added even when the pipeline is saturated: size with
        ``busy_fraction``, not with this."""
        return round(self.busy_s / self.audio_s, 4) if self.audio_s else None

    def snapshot(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "engine": self.engine,
            "inference_ms": self.inference_ms.summary(),
            "batches": self.batches,
            "errors": self.errors,
            "busy_fraction": self.busy_fraction,
            "real_time_factor_per_stream": self.real_time_factor_per_stream(),
            "real_time_factor": self.real_time_factor_per_stream(),  # its first name, kept for subscribers
            "broker_connected": self.broker_connected,
            "outbox_depth": self.outbox_depth,
            "messages_dropped": dict(self.messages_dropped),
            "broker_reconnects": self.broker_reconnects,
            "healthy": not self.checks,
            "failing": list(self.checks),
            "sources": {sid: s.snapshot() for sid, s in self.sources.items()},
        }
