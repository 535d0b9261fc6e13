"""Per-source rules, schedules and privacy: what a source may publish, when, and what never leaves."""

from __future__ import annotations

import datetime
import json
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from rtaudio.config.site import SiteConfig, validate_site
from rtaudio.contract import ModelInfo
from rtaudio.runtime.buffer import Window
from rtaudio.runtime.captions import CaptionJob, CaptionWorker
from rtaudio.runtime.events import CaptionResult, EventTracker
from rtaudio.runtime.health import Health
from rtaudio.runtime.offline import Collector
from rtaudio.runtime.pipeline import Pipeline, Stream
from rtaudio.runtime.rules import PrivacyGate, build_rules, query_matches_private, schedule_active
from tests.helpers import REPO, Broker, Subscriber, spawn_rtaudio

LABELS = ["speech", "dog", "glass_break", "music"]
INFO = ModelInfo(model_id="fake", version="1", labels=LABELS, sample_rate=8000, window_s=0.1, hop_s=0.1, thresholds=[0.5, 0.5, 0.5, 0.5], onnx_sha256="0" * 64)
UTC = datetime.timezone.utc


def site(**over: Any) -> SiteConfig:
    data: dict[str, Any] = {"site": "lab", "model": "m", "mqtt": None, "sources": [{"id": "a", "type": "file", "path": "x.wav"}]}
    data.update(over)
    return validate_site(data)


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


# ---------------------------------------------------------------- schedules


def test_a_daytime_window_by_local_time_and_day() -> None:
    schedule = site(schedules={"lunch": {"days": ["mon"], "from": "12:00", "to": "13:00", "timezone": "Europe/Berlin"}}).schedules["lunch"]
    assert schedule_active(schedule, at("2024-01-15T11:30:00+00:00"))  # Monday 12:30 in Berlin (UTC+1)
    assert not schedule_active(schedule, at("2024-01-15T12:00:00+00:00"))  # 13:00 Berlin: the end is exclusive
    assert not schedule_active(schedule, at("2024-01-16T11:30:00+00:00"))  # Tuesday
    assert schedule_active(schedule, at("2024-07-15T10:30:00+00:00"))  # summer time: UTC+2


def test_an_overnight_window_wraps_into_the_next_day() -> None:
    schedule = site(schedules={"night": {"days": ["fri"], "from": "22:00", "to": "06:00", "timezone": "UTC"}}).schedules["night"]
    assert schedule_active(schedule, at("2024-01-19T23:00:00+00:00"))  # Friday night
    assert schedule_active(schedule, at("2024-01-20T05:59:00+00:00"))  # Saturday morning: Friday's window
    assert not schedule_active(schedule, at("2024-01-20T22:30:00+00:00"))  # Saturday night: not listed
    assert not schedule_active(schedule, at("2024-01-19T05:00:00+00:00"))  # Friday morning: Thursday's window


def test_an_empty_window_is_refused() -> None:
    with pytest.raises(Exception, match="equals from, an empty window"):
        site(schedules={"x": {"from": "08:00", "to": "08:00", "timezone": "UTC"}})


def test_build_rules_refuses_an_unknown_time_zone_or_schedule() -> None:
    with pytest.raises(ValueError, match="not a known time zone"):
        build_rules(site(schedules={"x": {"from": "08:00", "to": "09:00", "timezone": "Mars/Base"}}), INFO)
    with pytest.raises(ValueError, match="schedule\\(s\\) nope not defined"):
        build_rules(site(when=[{"schedule": "nope", "source": "disable"}]), INFO)


# ---------------------------------------------------------------- labels and thresholds


def test_reported_labels_site_disable_source_narrowing_and_privacy() -> None:
    config = site(
        events={"labels": {"music": {"enabled": False}}},
        privacy={"private_labels": ["speech"]},
        sources=[
            {"id": "a", "type": "file", "path": "x.wav"},
            {"id": "b", "type": "file", "path": "x.wav", "labels": {"include": ["speech", "dog", "music"]}},
            {"id": "c", "type": "file", "path": "x.wav", "labels": {"exclude": ["dog"]}, "events": {"labels": {"glass_break": {"enabled": False}}}},
            {"id": "off", "type": "file", "path": "x.wav", "enabled": False},
        ],
    )
    rules = build_rules(config, INFO)
    assert set(rules) == {"a", "b", "c"}
    assert rules["a"].reported_labels() == ["dog", "glass_break"]
    assert rules["b"].reported_labels() == ["dog"]  # include cannot bring back a disabled or private label
    assert rules["c"].reported_labels() == []
    # the private label is still tracked (for the privacy gate); the disabled ones are not
    tracked = [label for label, rule in zip(LABELS, rules["c"].thresholds()) if rule is not None]
    assert tracked == ["speech"]


def test_source_overrides_win_key_by_key() -> None:
    config = site(
        events={"off_ratio": 0.5, "min_duration_s": 1.0, "labels": {"dog": {"threshold": 0.8, "min_duration_s": 2.0}}},
        sources=[{"id": "a", "type": "file", "path": "x.wav", "events": {"labels": {"dog": {"threshold": 0.6}, "music": {"off_threshold": 0.1}}}}],
    )
    rules = build_rules(config, INFO)["a"].thresholds()
    dog, music, speech = rules[1], rules[3], rules[0]
    assert dog is not None and (dog.on, dog.off, dog.min_duration_s) == (0.6, 0.3, 2.0)  # threshold from the source, duration from the site
    assert music is not None and (music.on, music.off, music.min_duration_s) == (0.5, 0.1, 1.0)
    assert speech is not None and (speech.on, speech.off) == (0.5, 0.25)


def test_median_smoothing_per_label_model_then_site_then_source() -> None:
    info = INFO.model_copy(update={"median_windows": {"glass_break": 1, "music": 1}})
    config = site(
        events={"median_windows": 5, "labels": {"music": {"median_windows": 3}}},
        sources=[{"id": "a", "type": "file", "path": "x.wav", "events": {"labels": {"dog": {"median_windows": 7}}}}],
    )
    rules = build_rules(config, info)["a"].thresholds()
    assert [r.median_windows for r in rules if r is not None] == [None, 7, 1, 3]  # speech: the site's 5 (the tracker's)
    assert build_rules(config, info)["a"].with_threshold("glass_break", 0.9).thresholds()[2].median_windows == 1  # kept by a remote threshold
    with pytest.raises(ValueError, match="odd"):
        site(events={"labels": {"dog": {"median_windows": 2}}})
    with pytest.raises(ValueError, match="median_windows"):
        INFO.model_validate({**INFO.model_dump(), "median_windows": {"glass": 1}})  # not a label of the model


def test_schedule_rules_enable_disable_and_pause() -> None:
    config = site(
        schedules={
            "day": {"from": "08:00", "to": "18:00", "timezone": "UTC"},
            "night": {"from": "22:00", "to": "06:00", "timezone": "UTC"},
        },
        when=[{"schedule": "day", "labels": {"disable": ["glass_break"]}}],
        sources=[
            {"id": "a", "type": "file", "path": "x.wav", "when": [{"schedule": "night", "labels": {"enable": ["dog"]}}]},
            {"id": "b", "type": "file", "path": "x.wav", "when": [{"schedule": "night", "source": "disable"}]},
            {"id": "c", "type": "file", "path": "x.wav", "when": [{"schedule": "day", "source": "enable"}]},
        ],
    )
    rules = build_rules(config, INFO)
    noon, midnight, evening = at("2024-01-15T12:00:00+00:00"), at("2024-01-15T23:00:00+00:00"), at("2024-01-15T20:00:00+00:00")
    assert rules["a"].active_labels(noon) == {"speech", "music"}  # dog only at night; glass_break off by day
    assert rules["a"].active_labels(midnight) == {"speech", "dog", "glass_break", "music"}
    assert rules["b"].source_active(noon) and not rules["b"].source_active(midnight) and rules["b"].active_labels(midnight) == set()
    assert rules["c"].source_active(noon) and not rules["c"].source_active(evening)


def test_query_matching_private_words() -> None:
    assert query_matches_private("Loud speech nearby", ["speech"])
    assert not query_matches_private("a dog barking", ["speech"])
    assert query_matches_private("a child speech in class", ["child_speech"])
    assert not query_matches_private("a child crying", ["child_speech"])


# ---------------------------------------------------------------- through the pipeline


class ScriptedEngine:
    """Scores set by the test: every window of a batch gets ``self.scores``."""

    description = "scripted"

    def __init__(self) -> None:
        self.scores = np.zeros(len(LABELS), dtype=np.float32)
        self.last_ms = 0.1
        self.calls = 0

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        return {"scores": np.tile(self.scores, (len(batch), 1))}


class Clock:
    def __init__(self, now: datetime.datetime):
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now


def rig(config: SiteConfig, now: datetime.datetime) -> tuple[Pipeline, Stream, ScriptedEngine, Collector, Clock, PrivacyGate]:
    rules = build_rules(config, INFO)["a"]
    from rtaudio.runtime.buffer import RingBuffer

    health, collector, engine, clock = Health(), Collector(), ScriptedEngine(), Clock(now)
    tracker = EventTracker("a", INFO.model_id, LABELS, rules.thresholds(), median_windows=1)
    stream = Stream("a", RingBuffer(8000, 800, 800, 8), tracker, health.source("a"), rules=rules)
    gate = PrivacyGate(config.privacy.private_labels, wait_s=0.0)
    pipeline = Pipeline(engine, INFO, [stream], [collector], health, config.tags, health_interval_s=3600, privacy=gate, now=clock)  # type: ignore[arg-type]
    return pipeline, stream, engine, collector, clock, gate


def feed(pipeline: Pipeline, stream: Stream, t: float) -> None:
    """One window ending at stream time ``t``, then a tick (schedules read, the window judged)."""
    pipeline.apply_rules()
    pipeline.step([(stream, Window(np.zeros(800, np.float32), 0, t - 0.1, t))])


def test_disabled_and_private_labels_never_reach_a_publisher() -> None:
    config = site(events={"labels": {"music": {"enabled": False}}}, privacy={"private_labels": ["speech"]}, tags={"floor": 0.0, "top_k": 10})
    pipeline, stream, engine, collector, _, gate = rig(config, at("2024-01-15T12:00:00+00:00"))
    engine.scores[:] = [1.0, 0.9, 0.0, 1.0]  # speech and music loudest
    for k in range(1, 4):
        feed(pipeline, stream, float(k))
    pipeline.finish()
    seen = {label for r in collector.results for label, _ in r.labels} | {e.label for e in collector.events}
    assert seen == {"dog", "glass_break"}
    assert [e.kind for e in collector.events] == ["onset", "offset"] and collector.events[0].label == "dog"
    assert gate.active("a")  # speech is heard: the gate knows, nothing was published


def test_a_schedule_switching_a_label_off_closes_its_open_event_at_the_switch() -> None:
    config = site(
        schedules={"quiet": {"from": "12:00", "to": "13:00", "timezone": "UTC"}},
        when=[{"schedule": "quiet", "labels": {"disable": ["dog"]}}],
    )
    pipeline, stream, engine, collector, clock, _ = rig(config, at("2024-01-15T11:59:00+00:00"))
    engine.scores[:] = [0.0, 0.9, 0.0, 0.0]
    feed(pipeline, stream, 1.0)
    feed(pipeline, stream, 2.0)
    assert [(e.kind, e.label) for e in collector.events] == [("onset", "dog")]
    clock.now = at("2024-01-15T12:00:00+00:00")
    feed(pipeline, stream, 3.0)  # the switch is read before this window is judged
    onset, offset = collector.events
    assert (offset.kind, offset.label, offset.event_id, offset.reason, offset.offset_time) == ("offset", "dog", onset.event_id, "schedule", 2.0)
    feed(pipeline, stream, 4.0)
    assert len(collector.events) == 2  # dog, still loud, is not tracked while switched off
    assert all("dog" not in dict(r.labels) for r in collector.results if r.end_time >= 3.0)
    clock.now = at("2024-01-15T13:00:00+00:00")
    feed(pipeline, stream, 5.0)
    assert [(e.kind, e.label) for e in collector.events[2:]] == [("onset", "dog")]  # a new event after the window


def test_a_paused_source_closes_everything_and_judges_nothing() -> None:
    config = site(
        schedules={"night": {"from": "22:00", "to": "06:00", "timezone": "UTC"}},
        sources=[{"id": "a", "type": "file", "path": "x.wav", "when": [{"schedule": "night", "source": "disable"}]}],
    )
    pipeline, stream, engine, collector, clock, gate = rig(config, at("2024-01-15T21:59:00+00:00"))
    engine.scores[:] = [0.9, 0.9, 0.0, 0.0]
    feed(pipeline, stream, 1.0)
    clock.now = at("2024-01-15T22:00:00+00:00")
    calls, results = engine.calls, len(collector.results)
    feed(pipeline, stream, 2.0)
    assert engine.calls == calls and len(collector.results) == results
    assert sorted((e.kind, e.label, e.reason) for e in collector.events) == sorted(
        [("onset", "speech", None), ("onset", "dog", None), ("offset", "speech", "schedule"), ("offset", "dog", "schedule")]
    )
    assert gate.withhold("a", 0.0, 2.0)  # no captions of a paused source


def test_captions_are_withheld_while_a_private_label_is_active() -> None:
    gate = PrivacyGate(["speech"], wait_s=0.0)
    gate.update("a", False, 10.0)
    assert not gate.withhold("a", 6.0, 10.0)
    assert gate.withhold("a", 8.0, 12.0)  # not judged yet: fail closed
    gate.update("a", True, 12.0)
    gate.update("a", False, 14.0)
    assert gate.withhold("a", 10.0, 14.0)  # speech during the caption's window
    assert not gate.withhold("a", 12.5, 14.0)

    class Captioner:
        samples = 100

        def __call__(self, audio: np.ndarray) -> list[str]:
            return ["people talking"] * len(audio)

    class Keep(Collector):
        def __init__(self) -> None:
            super().__init__()
            self.captions: list[CaptionResult] = []

        def caption(self, result: CaptionResult) -> None:
            self.captions.append(result)

    health, keep = Health(), Keep()
    worker = CaptionWorker(Captioner(), "fake", "1", 100, [keep], health, withhold=gate.withhold)
    job = CaptionJob("a", 10.0, 14.0, np.zeros(100, np.float32), 0.0)
    worker.process([job, CaptionJob("a", 12.5, 14.0, np.zeros(100, np.float32), 0.0)])
    assert [c.start_time for c in keep.captions] == [12.5]
    assert health.source("a").captions_withheld == 1 and health.snapshot()["sources"]["a"]["captions_withheld"] == 1


def test_queries_about_a_private_label_are_withheld_while_it_is_active() -> None:
    config = site(privacy={"private_labels": ["speech"]})
    pipeline, stream, _, collector, _, gate = rig(config, at("2024-01-15T12:00:00+00:00"))
    pipeline._query_text = {"talk": "loud speech", "bark": "dog barking"}
    pipeline._private_queries = {"talk"}
    stream.query_tracker = EventTracker("a", "fake", ["talk", "bark"], build_rules(config, INFO)["a"].thresholds()[:2], 1)
    gate.update("a", True, 1.0)  # speech is active on the source
    pipeline._publish_query_events(stream.query_tracker.update(np.array([0.9, 0.9]), 0.0, 1.0), stream)
    gate.update("a", False, 2.0)  # the offset of a withheld onset stays withheld after speech ends
    pipeline._publish_query_events(stream.query_tracker.finish(), stream)
    assert [(e.kind, e.label, e.query) for e in collector.events] == [("onset", "bark", "dog barking"), ("offset", "bark", "dog barking")]
    assert stream.withheld == set()


# ---------------------------------------------------------------- the daemon, a real broker, the demo recording


@pytest.mark.integration
def test_private_and_disabled_labels_never_leave_and_a_schedule_closes_events_mid_run(tmp_path: Path) -> None:
    """The demo recording (speech at 0.5-3.5 s, dog at 13-15.5 s) in real time through the shipped model to a real
    mosquitto, with speech private, dog disabled and a schedule that switches four busy labels off 8 s after start."""
    broker = Broker(tmp_path / "broker").start()
    switch = datetime.datetime.now(UTC) + datetime.timedelta(seconds=8)
    busy = ["hvac_hum", "doorbell", "knock", "smoke_alarm"]  # between them, open through most of the recording's first 16 s
    site_file = tmp_path / "site.yaml"
    site_file.write_text(
        yaml.safe_dump(
            {
                "site": "lab",
                "model": str(REPO / "engines" / "default"),
                "sources": [{"id": "hall", "type": "file", "path": str(REPO / "config" / "demo.flac"), "realtime": True, "loop": True}],
                "events": {"labels": {"dog": {"enabled": False}}},
                "tags": {"floor": 0.0, "top_k": 32},  # every label a source may publish is in every tag message
                "privacy": {"private_labels": ["speech"]},
                "captions": {"every_s": 4},
                "schedules": {
                    "quiet": {"from": switch.strftime("%H:%M:%S"), "to": (switch + datetime.timedelta(hours=1)).strftime("%H:%M:%S"), "timezone": "UTC"}
                },
                "when": [{"schedule": "quiet", "labels": {"disable": busy}}],
                "mqtt": {"broker": "127.0.0.1", "port": broker.port, "health_interval_s": 1},
            }
        )
    )
    sub = Subscriber(broker, "#")
    proc = spawn_rtaudio("run", "--config", str(site_file))
    try:
        events = "rtaudio/lab/hall/events"

        def scheduled() -> list[dict[str, Any]]:
            return [p for p in (json.loads(m.payload) for m in sub.on(events)) if p.get("reason") == "schedule"]

        assert sub.wait_for(lambda: scheduled() and time.time() > switch.timestamp() + 4, timeout=60), proc.poll()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        sub.close()
        broker.stop()
    assert proc.returncode == 0, err[-3000:]
    messages = list(sub.messages)
    assert messages
    for message in messages:  # the private label: its name appears nowhere, topic or payload, captions included
        assert "speech" not in message.topic and b"speech" not in message.payload, (message.topic, message.payload[:300])
    for message in messages:  # the disabled label: no topic, no tag, event or state; a caption's free text may say "dog"
        assert "dog" not in message.topic
        if not message.topic.endswith("/caption"):
            assert b'"dog"' not in message.payload, (message.topic, message.payload[:300])
    tags = [json.loads(m.payload) for m in messages if m.topic == "rtaudio/lab/hall/tags"]
    published = {label["label"] for t in tags for label in t["labels"]}
    assert {"hvac_hum", "doorbell"} <= published  # other labels do get through
    # the schedule: each switched-off label's open event ends with reason "schedule", after its onset ...
    payloads = [(m.topic, json.loads(m.payload)) for m in messages if m.topic == events]
    onsets = {p["event_id"]: p for _, p in payloads if p["kind"] == "onset"}
    closed = scheduled()
    assert closed and all(p["label"] in busy and p["event_id"] in onsets for p in closed)
    # ... and after the switch none of those labels is published again
    first = min(i for i, m in enumerate(messages) if m.topic == events and json.loads(m.payload).get("reason") == "schedule")
    later = [json.loads(m.payload) for m in messages[first + 1 :] if m.topic in (events, "rtaudio/lab/hall/tags")]
    later = [p for p in later if p.get("reason") != "schedule"]  # the other labels' offsets of the same switch
    assert later
    for payload in later:
        names = {label["label"] for label in payload.get("labels", [])} | {payload.get("label")}
        assert not names & set(busy), payload
    health = [json.loads(m.payload) for m in messages if m.topic == "rtaudio/lab/health"]
    assert health[-1]["sources"]["hall"]["captions_withheld"] >= 1  # the caption windows over the speech
