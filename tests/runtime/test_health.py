"""Health that tells the truth: the site-level busy fraction of the pipeline thread beside the per-stream real-time factor."""

from __future__ import annotations

import threading
import time
from typing import ClassVar

import numpy as np
import pytest

from rtaudio.config.site import EventsConfig, TagsConfig
from rtaudio.contract import ModelDir
from rtaudio.runtime.buffer import RingBuffer
from rtaudio.runtime.engines.base import Engine
from rtaudio.runtime.events import EventTracker
from rtaudio.runtime.health import Health
from rtaudio.runtime.pipeline import Pipeline, Stream, label_rules
from tests.helpers import wait_until


class FakeClock:
    """A clock that moves only when told: the engine's latency and the idle time between hops."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class SlowEngine(Engine):
    """Scores zero; every call takes ``latency_s``: on the fake clock when given one, else really (sleep)."""

    name: ClassVar[str] = ""  # unnamed: stays out of the engine registry (and ``engine: auto``)

    def __init__(self, model: ModelDir, latency_s: float, clock: FakeClock | None = None):
        super().__init__(model)
        self.latency_s, self.clock = latency_s, clock

    @classmethod
    def available(cls, model: ModelDir) -> tuple[bool, str]:
        return True, "a test double"

    def open(self) -> None:
        pass

    def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self.clock is not None:
            self.clock.now += self.latency_s
        else:
            threading.Event().wait(self.latency_s)
        return {"scores": np.zeros((len(batch), len(self.model.info.labels)), np.float32)}

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outputs = super().infer(batch)
        if self.clock is not None:
            self.last_ms = self.latency_s * 1000  # the known latency, not the few microseconds the fake took
        return outputs


def build(model: ModelDir, sources: int, engine: Engine, max_batch: int, clock: FakeClock | None = None, health_interval_s: float = 3600):
    info, health = model.info, Health()
    streams = [
        Stream(
            f"s{i}",
            RingBuffer(info.sample_rate, info.window_samples, info.hop_samples, 8),
            EventTracker(f"s{i}", info.model_id, info.labels, label_rules(info, EventsConfig(median_windows=1)), 1),
            health.source(f"s{i}"),
        )
        for i in range(sources)
    ]
    pipeline = Pipeline(engine, info, streams, [], health, TagsConfig(), max_batch, health_interval_s=health_interval_s, clock=clock or time.perf_counter)
    return pipeline, streams, health


def simulate(pipeline: Pipeline, streams: list[Stream], clock: FakeClock, hops: int) -> None:
    """``hops`` hops of live audio on the fake clock: each hop every source delivers a hop of samples,
    then the pipeline runs batches until the hop's time is used up or nothing is due."""
    hop_s = pipeline.info.hop_s
    block = np.zeros(streams[0].buffer.hop, np.float32)
    arrival = clock.now
    for _ in range(hops):  # audio arrives on its own schedule, however long the batches take
        for stream in streams:
            pipeline.sink(stream)(block, arrival)
        arrival += hop_s
        while clock.now < arrival and pipeline.tick():
            pass
        clock.now = max(clock.now, arrival)


def test_busy_fraction_of_a_light_load_is_latency_over_hop(tiny_model: ModelDir) -> None:
    clock = FakeClock()
    pipeline, streams, health = build(tiny_model, sources=2, engine=SlowEngine(tiny_model, 0.05, clock), max_batch=32, clock=clock)
    simulate(pipeline, streams, clock, hops=2)  # until windows are due
    pipeline.update_busy_fraction()
    simulate(pipeline, streams, clock, hops=40)
    pipeline.publish_health()
    snap = health.snapshot()
    hop_s = tiny_model.info.hop_s
    assert snap["busy_fraction"] == pytest.approx(0.05 / hop_s, abs=1e-3)  # one 50 ms batch per hop
    assert snap["real_time_factor_per_stream"] == pytest.approx(0.05 / (2 * hop_s), abs=1e-3)  # the batch is shared by 2 streams
    assert snap["real_time_factor"] == snap["real_time_factor_per_stream"]  # the old name still works
    assert all(s.buffer.dropped == 0 for s in streams)


def test_busy_fraction_shows_saturation_the_per_stream_factor_hides(tiny_model: ModelDir) -> None:
    """16 streams, batches of 4 at 250 ms: each stream's factor reads 0.125 ("keeps up") while the
    pipeline thread is never idle and half the windows are dropped: the 60-camera report in small."""
    clock = FakeClock()
    pipeline, streams, health = build(tiny_model, sources=16, engine=SlowEngine(tiny_model, 0.25, clock), max_batch=4, clock=clock)
    simulate(pipeline, streams, clock, hops=2)
    pipeline.update_busy_fraction()
    simulate(pipeline, streams, clock, hops=60)
    pipeline.publish_health()
    snap = health.snapshot()
    dropped = sum(s["windows_dropped"] for s in snap["sources"].values())
    processed = sum(s["windows_processed"] for s in snap["sources"].values())
    assert snap["real_time_factor_per_stream"] == pytest.approx(0.25 / (4 * tiny_model.info.hop_s), abs=1e-3)
    assert snap["busy_fraction"] >= 0.95
    assert dropped > 0.3 * (dropped + processed)


def test_busy_fraction_covers_only_the_latest_interval(tiny_model: ModelDir) -> None:
    clock = FakeClock()
    pipeline, streams, health = build(tiny_model, sources=16, engine=SlowEngine(tiny_model, 0.15, clock), max_batch=4, clock=clock)
    simulate(pipeline, streams, clock, hops=20)
    pipeline.update_busy_fraction()
    assert health.busy_fraction is not None and health.busy_fraction >= 0.9
    while pipeline.tick():  # the backlog drains; then the sources go quiet for 10 s
        pass
    pipeline.update_busy_fraction()
    clock.now += 10.0
    pipeline.update_busy_fraction()
    assert health.busy_fraction == 0.0


def test_snapshot_before_any_interval_has_no_busy_fraction() -> None:
    snap = Health().snapshot()
    assert snap["busy_fraction"] is None
    assert snap["real_time_factor_per_stream"] is None and snap["real_time_factor"] is None


def test_run_loop_measures_busy_time_on_the_real_clock(tiny_model: ModelDir) -> None:
    """The live loop with an engine that really takes 20 ms a batch, fed 50x faster than real time
    (100 windows/s for a capacity of 50): busy near 1; fed nothing: busy near 0."""
    pipeline, streams, health = build(tiny_model, sources=1, engine=SlowEngine(tiny_model, 0.02), max_batch=1, health_interval_s=0.5)
    stop, feeding = threading.Event(), threading.Event()
    feeding.set()
    block = np.zeros(streams[0].buffer.hop, np.float32)

    def feed() -> None:
        while not stop.is_set():
            if feeding.is_set():
                pipeline.sink(streams[0])(block, 0.0)
            stop.wait(0.01)

    threads = [threading.Thread(target=pipeline.run, args=(stop,), daemon=True), threading.Thread(target=feed, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        assert wait_until(lambda: (health.busy_fraction or 0.0) > 0.7, 10), f"busy fraction {health.busy_fraction} under a saturating feed"
        assert streams[0].buffer.dropped > 0
        feeding.clear()
        assert wait_until(lambda: health.busy_fraction is not None and health.busy_fraction < 0.2, 10), f"busy fraction {health.busy_fraction} when idle"
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
