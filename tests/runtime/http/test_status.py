"""The status board (runtime/http/status.py): what /api/status serves the status page, fed as the pipeline and caption threads feed it."""

from __future__ import annotations

import dataclasses
import json
import math
import threading

import numpy as np
import pytest

from rtaudio.config.site import HealthConfig
from rtaudio.runtime.checks import HealthChecks
from rtaudio.runtime.events import CaptionResult, Event, EventTracker, LabelThresholds, TagResult
from rtaudio.runtime.health import Health
from rtaudio.runtime.http.status import MAX_SOURCES, MAX_TAGS, MAX_TEXT, StatusBoard
from rtaudio.runtime.level import LevelReading

T0 = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def onset(event_id: str, label: str = "dog_bark", source: str = "yard", at: float = T0, peak: float = 0.8, query: str | None = None) -> Event:
    return Event("onset", event_id, source, "m1", label, at, None, peak, peak, 3, query=query)


def offset(first: Event, at: float, peak: float = 0.9, **extra: object) -> Event:
    return dataclasses.replace(first, kind="offset", offset_time=at, peak_score=peak, **extra)  # type: ignore[arg-type]


def reading(source: str = "yard", leq: float = -31.26, end: float = T0) -> LevelReading:
    return LevelReading(source, end, 1.0, leq, leq + 6, leq - 4, calibrated=False)


def source_of(snapshot: dict, source_id: str) -> dict:
    matches = [s for s in snapshot["sources"] if s["id"] == source_id]
    assert len(matches) == 1, [s["id"] for s in snapshot["sources"]]
    return matches[0]


def test_an_onset_and_its_offset_make_one_record_that_carries_the_clip() -> None:
    board = StatusBoard("home", "m1", Health())
    first = onset("e1", at=T0 + 1.0, query=None)
    board.event(first)
    yard = source_of(board.snapshot(), "yard")
    assert [e["event_id"] for e in yard["events"]] == ["e1"]
    assert yard["events"][0]["open"] is True and yard["events"][0]["offset_time"] is None and yard["events"][0]["duration_s"] is None
    assert [e["event_id"] for e in yard["open_events"]] == ["e1"]

    clip = {"file": "yard_dog_bark_20270115T080000.000_3f2a9c1e.flac", "start": "2027-01-15T08:00:00.000Z", "duration_s": 7.5, "pre_s": 2.0, "post_s": 3.0}
    board.event(offset(first, T0 + 3.5, peak=0.95, clip=clip))
    yard = source_of(board.snapshot(), "yard")
    assert yard["open_events"] == []
    (record,) = yard["events"]
    assert record == {
        "event_id": "e1",
        "label": "dog_bark",
        "query": None,
        "onset_time": T0 + 1.0,
        "offset_time": T0 + 3.5,
        "duration_s": 2.5,
        "peak_score": 0.95,
        "mean_score": 0.8,
        "reason": None,
        "clip": {"file": clip["file"], "duration_s": 7.5},
        "open": False,
    }


def test_the_event_trackers_real_pairs_merge_and_a_query_keeps_its_text() -> None:
    """Events as EventTracker makes them (uuid ids, onset then offset) end as one closed record each."""
    tracker = EventTracker("yard", "m1", ["leak"], [LabelThresholds(0.5, 0.3, 0.0)], median_windows=1)
    board = StatusBoard("home", "m1", Health())
    events: list[Event] = []
    for i, score in enumerate([0.1, 0.9, 0.9, 0.1, 0.8, 0.1]):
        events += tracker.update(np.array([score], np.float32), T0 + i, T0 + i + 1)
    assert [e.kind for e in events] == ["onset", "offset", "onset", "offset"]
    for event in events:
        board.event(dataclasses.replace(event, query="water from a tap"))
    records = source_of(board.snapshot(), "yard")["events"]
    assert [r["event_id"] for r in records] == [events[2].event_id, events[0].event_id]  # newest first
    assert all(not r["open"] and r["query"] == "water from a tap" and r["duration_s"] is not None for r in records)


def test_events_are_newest_first_and_only_the_last_max_events_are_kept() -> None:
    board = StatusBoard("home", "m1", Health(), max_events=5)
    for i in range(8):
        first = onset(f"e{i}", at=T0 + i)
        board.event(first)
        board.event(offset(first, T0 + i + 0.5))
    yard = source_of(board.snapshot(), "yard")
    assert [e["event_id"] for e in yard["events"]] == ["e7", "e6", "e5", "e4", "e3"]


def test_an_open_event_pushed_out_of_the_recent_list_stays_open_until_its_offset() -> None:
    board = StatusBoard("home", "m1", Health(), max_events=2)
    long = onset("long", label="rain", at=T0)
    board.event(long)
    for i in range(3):
        short = onset(f"s{i}", at=T0 + 1 + i)
        board.event(short)
        board.event(offset(short, T0 + 1.5 + i))
    yard = source_of(board.snapshot(), "yard")
    assert [e["event_id"] for e in yard["events"]] == ["s2", "s1"]
    assert [e["event_id"] for e in yard["open_events"]] == ["long"]
    board.event(offset(long, T0 + 10))
    yard = source_of(board.snapshot(), "yard")
    assert [e["event_id"] for e in yard["events"]] == ["long", "s2"]
    assert yard["events"][0]["duration_s"] == 10.0 and yard["open_events"] == []


def test_an_offset_without_its_onset_is_a_closed_record_with_its_reason() -> None:
    """A killed run's open event is closed at the next start (reason "restart"): its onset was never seen."""
    board = StatusBoard("home", "m1", Health())
    board.event(offset(onset("old", at=T0 - 60), T0 - 30, reason="restart"))
    (record,) = source_of(board.snapshot(), "yard")["events"]
    assert record["reason"] == "restart" and record["open"] is False and record["duration_s"] == 30.0


def test_tags_level_and_caption_are_the_latest_of_each_source() -> None:
    health = Health()
    health.source("yard").level_dbfs = -42.3
    board = StatusBoard("home", "m1", health)
    board.tags(TagResult("yard", "m1", T0, T0 + 1, [("dog_bark", 0.9), ("speech", 0.4)]))
    board.tags(TagResult("yard", "m1", T0 + 0.5, T0 + 1.5, [("speech", 0.7)]))
    board.level(reading(leq=-31.26, end=T0 + 1))
    board.caption(CaptionResult("yard", "m1", "1", T0 - 3, T0 + 1, "a dog barks in the distance", 4.0, 12.0))
    yard = source_of(board.snapshot(), "yard")
    assert yard["tags"] == {"start_time": T0 + 0.5, "end_time": T0 + 1.5, "labels": [{"label": "speech", "score": 0.7}]}
    assert yard["level"] == {"leq_db": -31.3, "lmax_db": -25.3, "l90_db": -35.3, "calibrated": False, "weighting": "A", "interval_s": 1.0, "end_time": T0 + 1}
    assert yard["level_dbfs"] == -42.3
    assert yard["caption"] == {"text": "a dog barks in the distance", "start_time": T0 - 3, "end_time": T0 + 1}
    board.tags(TagResult("yard", "m1", T0 + 1, T0 + 2, []))  # nothing above the floor now: no current tags
    assert source_of(board.snapshot(), "yard")["tags"]["labels"] == []


def test_sources_follow_the_health_record_first_then_those_only_the_board_saw() -> None:
    health = Health()
    for sid in ("mic", "door", "yard"):
        health.source(sid)
    board = StatusBoard("home", "m1", health)
    board.tags(TagResult("extra", "m1", T0, T0 + 1, []))
    board.tags(TagResult("door", "m1", T0, T0 + 1, []))
    snap = board.snapshot()
    assert [s["id"] for s in snap["sources"]] == ["mic", "door", "yard", "extra"]
    mic = source_of(snap, "mic")
    assert mic["tags"] is None and mic["events"] == [] and mic["level"] is None and mic["connected"] is False
    extra = source_of(snap, "extra")
    assert extra["connected"] is None and extra["windows_processed"] is None  # no counters for it


def test_every_list_and_text_is_bounded() -> None:
    board = StatusBoard("home", "m1", Health())
    board.tags(TagResult("yard", "m1", T0, T0 + 1, [(f"label{i}", 0.5) for i in range(MAX_TAGS + 20)]))
    board.caption(CaptionResult("yard", "m1", "1", T0, T0 + 1, "word " * 1000, 4.0, 1.0))
    board.event(onset("e1", label="x" * 5000))
    for i in range(MAX_SOURCES + 10):
        board.level(reading(source=f"s{i}"))
    snap = board.snapshot()
    yard = source_of(snap, "yard")
    assert len(yard["tags"]["labels"]) == MAX_TAGS
    assert len(yard["caption"]["text"]) == MAX_TEXT and yard["caption"]["text"].endswith("…")
    assert len(yard["events"][0]["label"]) <= 200
    assert len(snap["sources"]) == MAX_SOURCES


def test_health_figures_and_the_failing_checks() -> None:
    clock = Clock(T0 + 100)
    health = Health(started=T0)
    health.engine = "onnxruntime-cpu"
    for value in (10.0, 20.0, 30.0):
        health.inference_ms.add(value)
    health.busy_fraction, health.batches, health.errors = 0.25, 3, 1
    mic, yard = health.source("mic"), health.source("yard")
    mic.windows_processed, mic.windows_dropped, yard.windows_processed = 10, 2, 5
    mic.last_data, yard.last_data = T0 + 99, T0 + 50  # yard silent for 50 s
    health.outbox_depth, health.messages_dropped = 7, {"tags": 2, "level": 1}
    checks = HealthChecks(HealthConfig(source_silent_s=30), health, mqtt=False, clock=clock)
    board = StatusBoard("home", "m1", health, checks, clock=clock)
    snap = board.snapshot()
    assert snap["times"] == "unix_s" and snap["now"] == T0 + 100 and snap["site"] == "home" and snap["model"] == "m1"
    h = snap["health"]
    assert h["uptime_s"] == 100.0 and h["engine"] == "onnxruntime-cpu" and h["inference_ms"]["p50"] == 20.0
    assert (h["busy_fraction"], h["batches"], h["errors"], h["windows_processed"], h["windows_dropped"]) == (0.25, 3, 1, 15, 2)
    assert h["mqtt"] == {"enabled": False, "connected": False, "outbox_depth": 7, "reconnects": 0, "dropped": 3}
    assert h["healthy"] is False
    assert [(c["check"], c.get("source")) for c in h["failing"]] == [("source_silent", "yard")]
    assert source_of(snap, "yard")["seconds_since_data"] == 50.0
    yard.last_data = T0 + 99.5
    assert board.snapshot()["health"] | {"failing": None} == h | {"failing": None, "healthy": True}


def test_without_checks_the_health_records_last_judgement_is_shown() -> None:
    health = Health()
    health.checks = [{"check": "outbox_full", "detail": "6000 messages waiting (limit 5000)"}]
    snap = StatusBoard("home", "m1", health).snapshot()
    assert snap["health"]["failing"] == health.checks and snap["health"]["healthy"] is False and snap["health"]["mqtt"]["enabled"] is None


def test_the_snapshot_is_strict_json_even_with_nonfinite_numbers() -> None:
    board = StatusBoard("home", "m1", Health())
    board.level(LevelReading("yard", T0, 1.0, float("nan"), float("inf"), -math.inf, False))
    board.event(onset("e1", peak=float("nan")))
    text = json.dumps(board.snapshot(), allow_nan=False)
    yard = source_of(json.loads(text), "yard")
    assert yard["level"]["leq_db"] is None and yard["events"][0]["peak_score"] is None


@pytest.mark.parametrize("name", ["../site.yaml", "a/b.flac", "", None, ".."])
def test_a_clip_without_a_plain_file_name_is_left_out(name: object) -> None:
    board = StatusBoard("home", "m1", Health())
    first = onset("e1")
    board.event(first)
    board.event(offset(first, T0 + 1, clip={"file": name, "duration_s": 3.0}))
    assert source_of(board.snapshot(), "yard")["events"][0]["clip"] is None


def test_the_pipelines_health_call_is_taken_and_the_board_reads_the_record_itself() -> None:
    """``Publisher.health(snapshot)`` is called on every publisher each health interval: the board must take it."""
    health = Health()
    board = StatusBoard("home", "m1", health)
    board.health(health.snapshot())
    health.batches = 9
    assert board.snapshot()["health"]["batches"] == 9


def test_max_events_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="max_events must be between 1 and 10000, got 0"):
        StatusBoard("home", "m1", Health(), max_events=0)


def test_feeding_threads_and_a_snapshot_thread_at_once() -> None:
    """The pipeline and caption threads feed while the HTTP thread reads: no error, bounds hold, the end state is exact."""
    board = StatusBoard("home", "m1", Health(), max_events=10)
    errors: list[BaseException] = []
    done = threading.Event()

    def feed(source: str) -> None:
        try:
            for i in range(2000):
                first = onset(f"{source}{i}", source=source, at=T0 + i)
                board.event(first)
                board.tags(TagResult(source, "m1", T0 + i, T0 + i + 1, [("dog_bark", 0.5)]))
                board.event(offset(first, T0 + i + 0.5))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    def read() -> None:
        try:
            while not done.is_set():
                for source in board.snapshot()["sources"]:
                    assert len(source["events"]) <= 10
                json.dumps(board.snapshot(), allow_nan=False)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    feeders = [threading.Thread(target=feed, args=(sid,)) for sid in ("a", "b")]
    for thread in feeders:
        thread.start()
    for thread in feeders:
        thread.join()
    done.set()
    reader.join()
    assert not errors, errors
    snap = board.snapshot()
    for sid in ("a", "b"):
        source = source_of(snap, sid)
        assert [e["event_id"] for e in source["events"]] == [f"{sid}{i}" for i in range(1999, 1989, -1)]
        assert source["open_events"] == []
