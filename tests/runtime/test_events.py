"""Scores -> events: thresholds, hysteresis, minimum duration, median smoothing, ids and times."""

from __future__ import annotations

import numpy as np
import pytest

from rtaudio.config.site import EventsConfig, LabelRule
from rtaudio.contract import ModelInfo
from rtaudio.runtime.events import EventTracker, LabelThresholds
from rtaudio.runtime.pipeline import label_rules

HOP = 0.5


def feed(tracker: EventTracker, scores: list[float]) -> list:
    events = []
    for i, s in enumerate(scores):
        events += tracker.update(np.array([s], dtype=np.float32), i * HOP, i * HOP + 1.0)
    return events


def tracker(on: float = 0.5, off: float = 0.3, min_dur: float = 0.0, median: int = 1) -> EventTracker:
    return EventTracker("src", "m", ["alarm"], [LabelThresholds(on, off, min_dur)], median)


def test_onset_and_offset_with_times_peak_and_mean() -> None:
    events = feed(tracker(), [0.1, 0.8, 0.9, 0.6, 0.1, 0.1])
    assert [e.kind for e in events] == ["onset", "offset"]
    onset, offset = events
    assert onset.event_id == offset.event_id
    assert onset.onset_time == 0.5 and onset.offset_time is None
    assert offset.onset_time == 0.5 and offset.offset_time == 1.5 + 1.0  # end of the last window above off
    assert offset.peak_score == pytest.approx(0.9) and offset.mean_score == pytest.approx((0.8 + 0.9 + 0.6) / 3, abs=1e-4)


def test_hysteresis_keeps_event_between_thresholds() -> None:
    events = feed(tracker(on=0.5, off=0.3), [0.6, 0.4, 0.35, 0.45, 0.2])
    assert [e.kind for e in events] == ["onset", "offset"]
    events = feed(tracker(on=0.5, off=0.5), [0.6, 0.4, 0.6, 0.2])
    assert [e.kind for e in events] == ["onset", "offset", "onset", "offset"]


def test_minimum_duration_suppresses_short_events_and_delays_onset() -> None:
    assert feed(tracker(min_dur=2.0), [0.9, 0.9, 0.1]) == []  # lasted 1.5 s
    events = feed(tracker(min_dur=2.0), [0.9, 0.9, 0.9, 0.1])
    assert [e.kind for e in events] == ["onset", "offset"] and events[0].onset_time == 0.0


def test_median_smoothing_removes_single_window_spikes() -> None:
    assert feed(tracker(median=3), [0.1, 0.9, 0.1, 0.1, 0.9, 0.1]) == []
    events = feed(tracker(median=3), [0.1, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1])
    assert [e.kind for e in events] == ["onset", "offset"]


def test_finish_closes_open_events() -> None:
    t = tracker()
    assert [e.kind for e in feed(t, [0.9, 0.9])] == ["onset"]
    (offset,) = t.finish()
    assert offset.kind == "offset" and offset.offset_time == 1.5
    assert t.finish() == []


def test_each_event_has_a_new_id() -> None:
    events = feed(tracker(), [0.9, 0.1, 0.9, 0.1])
    assert len({e.event_id for e in events}) == 2


def test_label_rules_model_defaults_and_site_overrides() -> None:
    info = ModelInfo(
        model_id="m", version="1", labels=["a", "b", "c"], sample_rate=16000, window_s=1, hop_s=0.5, thresholds=[0.4, 0.6, 0.5], onnx_sha256="0" * 64
    )
    cfg = EventsConfig(
        off_ratio=0.5, min_duration_s=1.0, labels={"b": LabelRule(threshold=0.8, off_threshold=0.7, min_duration_s=0), "c": LabelRule(enabled=False)}
    )
    a, b, c = label_rules(info, cfg)
    assert a == LabelThresholds(0.4, 0.2, 1.0)
    assert b == LabelThresholds(0.8, 0.7, 0.0)
    assert c is None


def test_a_one_window_sound_raises_an_event_only_for_a_label_without_median() -> None:
    """A glass break tops one window: a 3-window median erases it, a label with median_windows=1 keeps it,
    and events come out in label order whatever each label's smoothing."""
    rules = [LabelThresholds(0.5, 0.3, 0.0, median_windows=1), LabelThresholds(0.5, 0.3, 0.0)]
    tracker = EventTracker("src", "m", ["glass_break", "music"], rules, median_windows=3)
    spike = [[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    events = []
    for i, row in enumerate(spike):
        events += tracker.update(np.array(row, dtype=np.float32), i * HOP, i * HOP + 1.0)
    assert [(e.label, e.kind, e.onset_time) for e in events] == [("glass_break", "onset", 0.5), ("glass_break", "offset", 0.5)]
    tracker.rules = [LabelThresholds(0.5, 0.3, 0.0, median_windows=1), LabelThresholds(0.5, 0.3, 0.0, median_windows=1)]  # a reload
    for i, row in enumerate(spike, start=4):
        events += tracker.update(np.array(row, dtype=np.float32), i * HOP, i * HOP + 1.0)
    assert [(e.label, e.kind) for e in events[2:]] == [("glass_break", "onset"), ("music", "onset"), ("glass_break", "offset"), ("music", "offset")]


def test_a_longer_median_swapped_in_grows_the_history() -> None:
    tracker = EventTracker("src", "m", ["alarm"], [LabelThresholds(0.5, 0.3, 0.0)], median_windows=1)
    assert [e.kind for e in feed(tracker, [0.0, 0.9, 0.0])] == ["onset", "offset"]  # no smoothing: a spike is an event
    tracker.rules = [LabelThresholds(0.5, 0.3, 0.0, median_windows=5)]
    assert feed(tracker, [0.0, 0.0, 0.0, 0.0, 0.9, 0.0, 0.0, 0.0]) == []  # a median of 5 (the history grew) erases it
    with pytest.raises(ValueError, match="odd"):
        tracker.rules = [LabelThresholds(0.5, 0.3, 0.0, median_windows=2)]
