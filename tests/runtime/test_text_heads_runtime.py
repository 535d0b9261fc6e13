"""Captions and free-text queries in `rtaudio run`: config, the caption ring and queue, the worker,
and the whole site against a real mosquitto with a real subscriber (real ORT text heads)."""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import soundfile as sf
import yaml

from rtaudio.config.load import load_site_config
from rtaudio.config.loader import ConfigError
from rtaudio.config.site import EventsConfig, QueryRule, validate_site
from rtaudio.contract import load_model_dir
from rtaudio.runtime.captions import CaptionJob, CaptionQueue, CaptionRing, CaptionWorker
from rtaudio.runtime.events import CaptionResult, Event, TagResult
from rtaudio.runtime.health import Health
from rtaudio.runtime.pipeline import QuerySet
from rtaudio.runtime.publish.base import Publisher
from rtaudio.runtime.publish.messages import load_schema
from rtaudio.runtime.site import run_site
from rtaudio.runtime.text_heads import Captioner, TextSpace
from tests.helpers import iso_seconds, tiny_site, wait_until

SR = 16000
SCENE_S = 12.0


def site_data(**extra: Any) -> dict[str, Any]:
    return {
        "site": "lab",
        "model": "model",
        "sources": [{"id": "hall", "type": "file", "path": "a.wav"}, {"id": "yard", "type": "file", "path": "a.wav"}],
        **extra,
    }


def problems(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        validate_site(data)
    return str(info.value)


class Collect(Publisher):
    """A publisher that keeps what it is given (the real interface, in memory)."""

    def __init__(self) -> None:
        self.captions: list[CaptionResult] = []
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def tags(self, result: TagResult) -> None:
        pass

    def event(self, event: Event) -> None:
        self.events.append(event)

    def caption(self, result: CaptionResult) -> None:
        with self.lock:
            self.captions.append(result)


# ---------------------------------------------------------------- config


def test_captions_and_queries_config_defaults_and_shorthand() -> None:
    config = validate_site(
        site_data(captions={}, queries={"leak": "water dripping or leaking", "bell": {"text": " a doorbell ", "threshold": 0.4, "enabled": False}})
    )
    assert config.captions is not None and config.captions.every_s == 10 and config.captions.max_pending == 4
    assert config.captions.threads == 1 and config.captioned_sources() == ["hall", "yard"]
    assert config.queries["leak"] == QueryRule(text="water dripping or leaking")
    assert config.queries["bell"].text == "a doorbell" and config.queries["bell"].threshold == 0.4
    assert list(config.active_queries()) == ["leak"]
    off = validate_site(site_data())
    assert off.captions is None and off.queries == {} and off.captioned_sources() == []
    assert validate_site(site_data(captions={"sources": ["yard"]})).captioned_sources() == ["yard"]


def test_invalid_captions_and_queries_blocks_are_reported() -> None:
    assert "captions.every_s" in problems(site_data(captions={"every_s": 0.5}))
    assert "captions.max_pending" in problems(site_data(captions={"max_pending": 0}))
    text = problems(site_data(captions={"sources": ["hall", "garage"]}))
    assert "'garage' not a source id; expected one of hall, yard" in text
    assert "unknown key; allowed keys: every_s, sources, max_pending, threads" in problems(site_data(captions={"every": 2}))
    assert "query name(s) 'bad name' not allowed" in problems(site_data(queries={"bad name": "a knock"}))
    assert "queries.leak.text" in problems(site_data(queries={"leak": ""}))
    assert "empty query text is not allowed" in problems(site_data(queries={"leak": {"text": "   "}}))
    assert "queries.leak.threshold" in problems(site_data(queries={"leak": {"text": "drip", "threshold": 1.5}}))


def test_load_site_config_names_label_clashes_and_missing_heads(tmp_path: Path) -> None:
    tiny_site(tmp_path, "a.wav", np.zeros(SR, np.float32))  # the tiny model has no text heads
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site_data(captions={"every_s": 2}, queries={"noise": "white noise"})))
    with pytest.raises(ConfigError) as info:
        load_site_config(tmp_path / "site.yaml")
    text = str(info.value)
    assert "queries.noise: the name is a label of the model" in text
    assert "has no caption decoder (caption_audio.onnx, caption_cross.onnx, caption_step.onnx, tokenizer.json missing); retrain with captions:" in text
    assert "has no audio-text space (text_encoder.onnx, audio_text.onnx, vocab.json missing)" in text


def test_model_without_heads_fails_at_start(tmp_path: Path) -> None:
    tiny_site(tmp_path, "a.wav", np.zeros(SR, np.float32))
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site_data(captions={"every_s": 2})))
    config = load_site_config(tmp_path / "site.yaml", check_model=False)
    with pytest.raises(ValueError, match="has no caption decoder .*caption_audio.onnx.*retrain with captions:"):
        run_site(config, install_signals=False)


# ---------------------------------------------------------------- ring, queue, worker


def test_caption_ring_schedules_by_audio_time_with_capture_times() -> None:
    ring = CaptionRing("hall", sample_rate=100, window=400, every=200)
    stream = np.arange(1200, dtype=np.float32)
    jobs = []
    for start in range(0, 1200, 50):  # 0.5 s blocks; capture time = 1000 + stream seconds
        job = ring.write(stream[start : start + 50], 1000.0 + start / 100)
        if job is not None:
            jobs.append((start + 50, job))
    assert [written for written, _ in jobs] == [400, 600, 800, 1000, 1200]  # full window, then every 2 s of audio
    for written, job in jobs:
        np.testing.assert_array_equal(job.samples, stream[written - 400 : written])
        assert job.start_time == pytest.approx(1000 + (written - 400) / 100)
        assert job.end_time == pytest.approx(1000 + (written - 1) / 100)
    late = CaptionRing("hall", sample_rate=100, window=400, every=200)
    job = late.write(stream[:1100], 0.0)  # one huge block: one caption of its end, the skipped ones are not owed
    assert job is not None and job.end_time == pytest.approx(10.99)
    assert late.write(stream[:50], 11.0) is None and late.write(stream[:50], 11.5) is not None  # next due at 1200


def test_caption_queue_drops_the_oldest_and_counts() -> None:
    dropped: list[CaptionJob] = []
    queue = CaptionQueue(2, dropped.append)
    jobs = [CaptionJob("hall", float(i), float(i) + 4, np.zeros(4, np.float32), 0.0) for i in range(5)]
    for job in jobs:
        queue.put(job)
    assert queue.dropped == 3 and dropped == jobs[:3]
    assert queue.take(0) == jobs[3:] and len(queue) == 0
    assert queue.take(0.01) == []


def test_worker_captions_batches_and_survives_a_bad_job(text_model_dir: Path) -> None:
    info = load_model_dir(text_model_dir).info
    captioner = Captioner(text_model_dir, 16, threads=1)
    assert captioner.samples == round(info.extra["text"]["caption_window_s"] * info.sample_rate)
    health, sink = Health(), Collect()
    worker = CaptionWorker(captioner, info.model_id, info.version, info.sample_rate, [sink], health, max_pending=8)
    rng = np.random.default_rng(0)
    good = [CaptionJob(s, 10.0, 14.0, rng.normal(0, 0.1, captioner.samples).astype(np.float32), 0.0) for s in ("hall", "yard")]
    bad = CaptionJob("hall", 20.0, 24.0, np.zeros(100, np.float32), 0.0)  # wrong length: the decoder refuses it
    worker.start()
    try:
        worker.queue.put(bad)
        assert wait_until(lambda: health.errors == 1)
        for job in good:
            worker.queue.put(job)
    finally:
        worker.close(30)
    assert [r.source_id for r in sink.captions] == ["hall", "yard"] and all(r.caption for r in sink.captions)
    assert sink.captions[0].window_s == pytest.approx(info.extra["text"]["caption_window_s"])
    assert health.sources["hall"].captions_published == 1 and health.sources["yard"].caption_latency_ms.summary()["n"] == 1
    assert not worker._thread.is_alive()  # type: ignore[union-attr]


def test_query_set_warns_on_unknown_words_and_refuses_unknown_queries(text_model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    info = load_model_dir(text_model_dir).info
    space = TextSpace(text_model_dir)
    with caplog.at_level(logging.WARNING):
        queries = QuerySet(
            space, {"knocking": QueryRule(text="knock zzyzxqq"), "bell": QueryRule(text="doorbell", threshold=0.3)}, info, EventsConfig(off_ratio=0.5)
        )
    assert "queries.knocking: word(s) zzyzxqq unknown" in caplog.text
    scores = queries.scores(np.random.default_rng(0).normal(size=(3, info.embedding_dim)).astype(np.float32))
    assert scores.shape == (3, 2) and np.all(np.abs(scores) <= 1.0001)
    default = info.extra["text"].get("query_threshold", 0.5)
    assert queries.rules[0].on == pytest.approx(default) and queries.rules[1].on == 0.3 and queries.rules[1].off == pytest.approx(0.15)
    with pytest.raises(ValueError, match=rf"queries.leak: none of the words .*\(vocabulary of {len(space.vocab)} words\)"):
        QuerySet(space, {"leak": QueryRule(text="zzyzxqq qqxyzzy")}, info, EventsConfig())


# ---------------------------------------------------------------- the whole site


def test_site_publishes_captions_and_query_events_over_mqtt(text_model_dir: Path, tmp_path: Path, mosquitto, make_subscriber) -> None:
    from rtaudio.train.synth import make_scene

    audio, _ = make_scene(np.random.default_rng(3), SCENE_S, ["knock", "doorbell", "water_running", "dog_bark"])
    sf.write(tmp_path / "scene.wav", audio, SR)
    (tmp_path / "site.yaml").write_text(
        yaml.safe_dump(
            {
                "site": "lab",
                "model": str(text_model_dir),
                "sources": [{"id": "hall", "type": "file", "path": "scene.wav", "realtime": False}],
                "mqtt": {"broker": "127.0.0.1", "port": mosquitto.port, "health_interval_s": 1, "shutdown_flush_s": 10},
                "console": {"tags": False},
                "captions": {"every_s": 2, "max_pending": 16},
                "queries": {"always": {"text": "knock", "threshold": -1.0}, "never": {"text": "dog bark", "threshold": 1.0}},
            }
        )
    )
    config = load_site_config(tmp_path / "site.yaml")
    sub = make_subscriber(mosquitto, "rtaudio/#")
    health = Health()
    started = datetime.now().timestamp()
    assert run_site(config, install_signals=False, health=health) == 0
    assert sub.wait_for(lambda: len(sub.on("rtaudio/lab/hall/caption")) >= 5 and sub.on("rtaudio/lab/status")[-1].payload == b"offline")
    captions = [json.loads(m.payload) for m in sub.on("rtaudio/lab/hall/caption")]
    for body in captions:
        jsonschema.validate(body, load_schema("captions"))
        assert body["caption"].strip() and body["model"] == "text-test" and body["window_s"] == pytest.approx(4.0)
    ends = [iso_seconds(c["end"]) for c in captions]
    assert np.allclose(np.diff(ends), 2.0, atol=0.06)  # every 2 s of audio, not of wall time
    first_start = iso_seconds(captions[0]["start"])
    assert first_start >= started - 1 and ends[-1] - first_start <= SCENE_S + 0.01
    assert len(captions) == 5  # windows ending at 4, 6, 8, 10, 12 s of the 12 s file
    events = [json.loads(m.payload) for m in sub.on("rtaudio/lab/hall/events")]
    for body in events:
        jsonschema.validate(body, load_schema("events"))
    always = [e for e in events if e["label"] == "always"]
    assert [e["kind"] for e in always] == ["onset", "offset"] and always[0]["query"] == "knock"
    assert not [e for e in events if e["label"] == "never"]
    assert all("query" not in e for e in events if e["label"] not in ("always", "never"))
    assert health.sources["hall"].captions_published == 5 and health.sources["hall"].captions_dropped == 0
    last_health = json.loads(sub.on("rtaudio/lab/health")[-1].payload)
    jsonschema.validate(last_health, load_schema("health"))
    assert last_health["sources"]["hall"]["captions_published"] == 5


def test_query_event_payload_carries_the_text_and_may_score_below_zero() -> None:
    from rtaudio.runtime.publish import messages as msgs

    event = Event("onset", "e1", "hall", "m", "leak", 100.0, None, -0.2, -0.25, 2, query="water dripping")
    body = json.loads(msgs.stamp(msgs.encode(msgs.event_payload("lab", event)), 101.0))
    jsonschema.validate(body, load_schema("events"))
    assert body["query"] == "water dripping" and body["peak_score"] == -0.2
    label = json.loads(msgs.stamp(msgs.encode(msgs.event_payload("lab", Event("onset", "e2", "hall", "m", "knock", 100.0, None, 0.9, 0.8, 2))), 101.0))
    assert "query" not in label
    jsonschema.validate(label, load_schema("events"))
    with pytest.raises(jsonschema.ValidationError):  # a label's score is a probability
        jsonschema.validate(label | {"peak_score": -0.2}, load_schema("events"))


def test_the_runtime_text_path_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, rtaudio.runtime.site, rtaudio.runtime.captions, rtaudio.runtime.text_heads, rtaudio.runtime.publish.mqtt; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
