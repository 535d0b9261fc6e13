"""Capacity: the most real-time streams the whole runtime sustains, and its latency at that load.

Each trial runs the real site (``run_site``: file sources paced in real time at the model's
hop, ring buffers, the pipeline and its engine, the console publisher silenced) with N
sources for a few seconds. N *sustains* when no window is dropped with a backlog bound of
``backlog`` windows per source (2 by default: a window may wait one hop, not more), no batch
fails and every source was served. N doubles from 1 until a trial fails, then the gap is
bisected. Latency is capture of a window's last sample -> its tags handed to the publishers
(no broker: the network is not the runtime's cost).

The sources start together, so their windows fall due together and batch fully, as the
channels of one audio interface do; unsynchronised network streams batch less well.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtaudio.config.site import SiteConfig
from rtaudio.contract import load_model_dir
from rtaudio.runtime.events import Event, TagResult
from rtaudio.runtime.health import Health, Percentiles
from rtaudio.runtime.publish.base import Publisher
from rtaudio.runtime.site import run_site

log = logging.getLogger(__name__)

MAX_STREAMS = 256  # the most sources a site config takes
SYNTHETIC_AUDIO_S = 10.0


class LatencyPublisher(Publisher):
    """Publishes nothing; records capture -> publish latency of every tags result."""

    def __init__(self) -> None:
        self.latency_ms = Percentiles(size=1 << 20)

    def tags(self, result: TagResult) -> None:
        self.latency_ms.add((time.time() - result.end_time) * 1000)

    def event(self, event: Event) -> None:
        """Events cost the pipeline nothing more to hand over than tags; they are not timed."""


@dataclass
class Trial:
    """One run of the site with ``streams`` sources."""

    streams: int
    seconds: float
    engine: str
    windows: int
    dropped: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    real_time_factor: float | None  # inference time / audio time covered
    sustained: bool


@dataclass
class Capacity:
    """The search's answer: ``streams`` sustained (0: not even one), latency at that load."""

    streams: int
    limit_reached: bool  # ``max_streams`` was sustained: the machine may take more
    p50_ms: float | None
    p99_ms: float | None
    engine: str
    window_s: float
    hop_s: float
    backlog: int
    audio: str
    trials: list[Trial] = field(default_factory=list)


def site_config(model: Path, audio: Path, streams: int, engine: str, max_batch: int, backlog: int) -> SiteConfig:
    """A site of ``streams`` looping real-time file sources, no MQTT, every window reported to the publishers."""
    return SiteConfig.model_validate(
        {
            "site": "bench",
            "model": str(model),
            "engine": engine,
            "window": {"max_batch": max_batch, "max_backlog": backlog},
            "sources": [{"id": f"s{i}", "type": "file", "path": str(audio), "realtime": True, "loop": True} for i in range(streams)],
            "tags": {"floor": 0.0, "top_k": 1, "min_interval_s": 0.0},
            "mqtt": None,
            "console": {"tags": False, "events": False},
        }
    )


@contextlib.contextmanager
def _quiet_runtime() -> Iterator[None]:
    """The runtime logs every start and stop at INFO; a search runs dozens of them."""
    logger = logging.getLogger("rtaudio.runtime")
    level = logger.level
    logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logger.setLevel(level)


def run_trial(model: Path, audio: Path, streams: int, seconds: float, engine: str = "auto", max_batch: int = 32, backlog: int = 2) -> Trial:
    """Run the site with ``streams`` sources for the first window plus ``seconds``; read its counters."""
    config = site_config(model, audio, streams, engine, max_batch, backlog)
    window_s = config.window.window_s or load_model_dir(model).info.window_s
    health, latency = Health(), LatencyPublisher()
    with _quiet_runtime():
        run_site(config, duration_s=window_s + seconds, install_signals=False, health=health, extra_publishers=[latency])
    sources = health.sources.values()
    windows = sum(s.windows_processed for s in sources)
    dropped = sum(s.windows_dropped for s in sources)
    errors = health.errors + sum(s.errors for s in sources)
    served = len(health.sources) == streams and all(s.windows_processed for s in sources)
    summary = latency.latency_ms.summary()
    rtf = round(health.busy_s / health.audio_s, 4) if health.audio_s else None
    return Trial(
        streams, seconds, health.engine, windows, dropped, errors, summary["p50"], summary["p99"], rtf, sustained=dropped == 0 and errors == 0 and served
    )


def find_capacity(
    model: Path, audio: Path | None = None, engine: str = "auto", seconds: float = 3.0, max_batch: int = 32, backlog: int = 2, max_streams: int = MAX_STREAMS
) -> Capacity:
    """Grow N (doubling, then bisecting) to the largest sustained; ``audio`` None plays synthetic sound."""
    if not 1 <= max_streams <= MAX_STREAMS:
        raise ValueError(f"max streams {max_streams} must lie in 1..{MAX_STREAMS} (the most sources a site takes)")
    info = load_model_dir(model).info
    played = str(audio) if audio is not None else f"synthetic ({SYNTHETIC_AUDIO_S:g} s of noise and a tone, looped)"
    with tempfile.TemporaryDirectory(prefix="rtaudio-bench-") as tmp:
        if audio is None:
            audio = _synthetic_audio(Path(tmp) / "bench.wav", info.sample_rate)
        _check_audio(audio)
        trials: dict[int, Trial] = {}

        def trial(n: int) -> Trial:
            result = trials[n] = run_trial(model, audio, n, seconds, engine, max_batch, backlog)
            log.info(
                "capacity: %3d stream(s) %s: %d windows, %d dropped, p50 %s ms, p99 %s ms, RTF %s",
                n,
                "sustained" if result.sustained else "NOT sustained",
                result.windows,
                result.dropped,
                result.p50_ms,
                result.p99_ms,
                result.real_time_factor,
            )
            return result

        good, bad, n = 0, None, 1
        while bad is None:
            if trial(n).sustained:
                good = n
                if n == max_streams:
                    break
                n = min(2 * n, max_streams)
            else:
                bad = n
        while bad is not None and bad - good > 1:
            mid = (good + bad) // 2
            if trial(mid).sustained:
                good = mid
            else:
                bad = mid
    best = trials.get(good)
    return Capacity(
        good,
        good == max_streams,
        best.p50_ms if best else None,
        best.p99_ms if best else None,
        (best or trials[1]).engine,
        info.window_s,
        info.hop_s,
        backlog,
        played,
        [trials[k] for k in sorted(trials)],
    )


def _synthetic_audio(path: Path, sample_rate: int, seconds: float = SYNTHETIC_AUDIO_S) -> Path:
    """Noise with a few tones: what it sounds like does not change what inference costs."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    audio = 0.05 * rng.standard_normal(t.size) + 0.1 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 0.3 * t) > 0)
    sf.write(path, audio.astype(np.float32), sample_rate)
    return path


def _check_audio(path: Path) -> None:
    import soundfile as sf

    try:
        sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise ValueError(f"capacity audio {path}: not readable ({exc}); expected a WAV, FLAC or OGG file") from None
