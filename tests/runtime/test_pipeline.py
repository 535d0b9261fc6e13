"""The scheduler: one engine call per tick across sources, fairness, drops when behind, dispatch."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from rtaudio.config.site import EventsConfig, TagsConfig
from rtaudio.contract import ModelDir
from rtaudio.runtime.buffer import RingBuffer
from rtaudio.runtime.engines import OnnxRuntimeEngine
from rtaudio.runtime.events import EventTracker
from rtaudio.runtime.health import Health
from rtaudio.runtime.offline import Collector
from rtaudio.runtime.pipeline import Pipeline, Stream, label_rules
from tests.helpers import wait_until
from tests.tinymodel import tone

SR = 16000


def build(model: ModelDir, n: int, max_batch: int = 32, backlog: int = 8, tags: TagsConfig | None = None):
    info, health, collector = model.info, Health(), Collector()
    streams = [
        Stream(
            f"s{i}",
            RingBuffer(SR, info.window_samples, info.hop_samples, backlog),
            EventTracker(f"s{i}", info.model_id, info.labels, label_rules(info, EventsConfig(median_windows=1)), 1),
            health.source(f"s{i}"),
        )
        for i in range(n)
    ]
    engine = OnnxRuntimeEngine(model)
    engine.open()
    pipeline = Pipeline(engine, info, streams, [collector], health, tags or TagsConfig(), max_batch, health_interval_s=3600)
    return pipeline, streams, collector, health


def test_one_engine_call_for_all_sources(tiny_model: ModelDir) -> None:
    pipeline, streams, collector, health = build(tiny_model, n=4)
    for stream in streams:
        pipeline.sink(stream)(tone(440, 2.0), 1000.0)  # 3 windows each
    pipeline.step(pipeline.gather())
    assert pipeline.engine.calls == 1 and health.batches == 1
    assert len(collector.results) == 12
    assert all(r.labels[0][0] == "tone_440" for r in collector.results)
    assert {r.source_id for r in collector.results} == {"s0", "s1", "s2", "s3"}


def test_max_batch_shares_fairly_and_keeps_the_rest(tiny_model: ModelDir) -> None:
    pipeline, streams, collector, _ = build(tiny_model, n=3, max_batch=4)
    for stream in streams:
        stream.buffer.write(tone(440, 2.0), 0.0)  # 3 windows each, 9 in all
    first = pipeline.gather()
    assert len(first) == 4 and {s.source_id for s, _ in first} == {"s0", "s1", "s2"}
    pipeline.step(first)
    while items := pipeline.gather():
        assert len(items) <= 4
        pipeline.step(items)
    assert len(collector.results) == 9 and all(s.buffer.dropped == 0 for s in streams)


def test_falling_behind_drops_oldest_and_counts(tiny_model: ModelDir) -> None:
    pipeline, streams, collector, health = build(tiny_model, n=1, backlog=2)
    streams[0].buffer.write(tone(440, 5.0), 0.0)  # 9 windows due, room for 2
    pipeline.step(pipeline.gather())
    assert len(collector.results) == 2 and streams[0].buffer.dropped == 7
    pipeline.publish_health()
    assert health.snapshot()["sources"]["s0"]["windows_dropped"] == 7


def test_events_and_tag_floor_top_k_and_rate_limit(tiny_model: ModelDir) -> None:
    pipeline, streams, collector, _ = build(tiny_model, n=1, tags=TagsConfig(floor=0.5, top_k=1, min_interval_s=1.0))
    audio = np.concatenate([np.zeros(SR, np.float32), tone(1000, 3.0), np.zeros(2 * SR, np.float32)])
    for start in range(0, audio.size, SR // 2):
        streams[0].buffer.write(audio[start : start + SR // 2], 100.0 + start / SR)
        pipeline.step(pipeline.gather())
    pipeline.finish()
    assert all(len(r.labels) <= 1 for r in collector.results)
    assert all(score >= 0.5 for r in collector.results for _, score in r.labels)
    ends = [r.end_time for r in collector.results]
    assert all(b - a >= 1.0 - 1e-6 for a, b in zip(ends, ends[1:]))  # rate-limited to one per second
    kinds = [(e.kind, e.label) for e in collector.events]
    assert kinds == [("onset", "tone_1000"), ("offset", "tone_1000")]
    onset, offset = collector.events
    assert 100.5 <= onset.onset_time <= 101.0 and 103.5 <= offset.offset_time <= 105.0


def test_run_loop_serves_live_writers(tiny_model: ModelDir) -> None:
    pipeline, streams, collector, health = build(tiny_model, n=2)
    stop = threading.Event()
    thread = threading.Thread(target=pipeline.run, args=(stop,), daemon=True)
    thread.start()
    for _i in range(25):  # 2.5 s of audio per source, written as it "arrives"
        for stream in streams:
            pipeline.sink(stream)(tone(440, 0.1), time.time())
        time.sleep(0.02)
    wait_until(lambda: len(collector.results) >= 8, 10)
    stop.set()
    thread.join(5)
    assert len(collector.results) == 8  # 4 windows per source
    snap = health.snapshot()
    assert snap["sources"]["s0"]["windows_processed"] == 4
    assert snap["real_time_factor"] > 0 and snap["inference_ms"]["n"] >= 1


def test_inference_error_does_not_stop_the_loop(tiny_model: ModelDir, tmp_path: Path) -> None:
    pipeline, streams, collector, health = build(tiny_model, n=1)

    calls = {"n": 0}
    real = pipeline.engine.infer

    def flaky(batch: np.ndarray):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("device lost")
        return real(batch)

    pipeline.engine.infer = flaky  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=pipeline.run, args=(stop,), daemon=True)
    thread.start()
    pipeline.sink(streams[0])(tone(440, 1.0), 0.0)
    time.sleep(1.0)
    pipeline.sink(streams[0])(tone(440, 1.0), 1.0)
    wait_until(lambda: collector.results, 5)
    stop.set()
    thread.join(5)
    assert health.errors == 1 and collector.results
