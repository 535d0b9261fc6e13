"""Scores -> events: median smoothing, hysteresis, minimum duration, per label and source.

Decision delay: an onset is reported when the median over ``median_windows`` windows
crosses the on-threshold AND the event has lasted ``min_duration_s``; so the delay after the
true onset is at most ``(median_windows // 2) * hop + min_duration_s + hop`` plus one window's
inference. The onset *time* in the message is the stream time of the first window above
threshold, not the time of the decision.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class TagResult:
    """One window's scores for one source."""

    source_id: str
    model_id: str
    start_time: float  # capture time of the window's first sample
    end_time: float  # capture time of the window's last sample
    labels: list[tuple[str, float]]  # (label, score) above the floor, best first


@dataclass(frozen=True)
class CaptionResult:
    """One caption of one source's caption window."""

    source_id: str
    model_id: str
    model_version: str
    start_time: float  # capture time of the window's first sample
    end_time: float  # capture time of the window's last sample
    caption: str
    window_s: float
    latency_ms: float  # job queued -> handed to the publishers


@dataclass
class Event:
    """An onset or offset of one label on one source; the same id links the pair."""

    kind: Literal["onset", "offset"]
    event_id: str
    source_id: str
    model_id: str
    label: str
    onset_time: float
    offset_time: float | None  # None for an onset
    peak_score: float
    mean_score: float
    windows: int
    query: str | None = None  # the query text, for a free-text query's event (label = query name)
    # An offset not decided by the audio: "restart" closes one a killed run left open; "schedule" one whose label a schedule switched off;
    # "control" one a remote command switched off; "reload" one a reloaded site.yaml no longer reports.
    reason: Literal["restart", "schedule", "control", "reload"] | None = None
    # An offset's clip when event clips keep one (``runtime.clips``): {"file", "start", "duration_s", "pre_s", "post_s"}.
    clip: dict[str, Any] | None = None

    def to_json(self) -> str:
        """This event as JSON, to persist it (the disk outbox keeps open events across a crash)."""
        return json.dumps(dataclasses.asdict(self), allow_nan=False)

    @staticmethod
    def from_json(text: str) -> Event:
        """An event persisted by ``to_json``; ValueError when the text is not one."""
        try:
            fields = json.loads(text)
            event = Event(**fields)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a persisted event: {exc}") from None
        numbers = (event.onset_time, event.peak_score, event.mean_score, event.windows)
        if not all(isinstance(x, (int, float)) for x in numbers) or not all(isinstance(x, str) for x in (event.event_id, event.source_id, event.label)):
            raise ValueError(f"not a persisted event: wrong field types in {text[:200]!r}")
        return event

    def interrupted(self, last_time: float) -> Event:
        """The offset of this (open) event for a process that died: at ``last_time``, the last
        stream time its source reached (never before the onset), with ``reason="restart"``."""
        return dataclasses.replace(self, kind="offset", offset_time=max(float(last_time), self.onset_time), reason="restart")


@dataclass
class _Track:
    active: bool = False
    pending_since: float = 0.0  # stream time of the first window above the on-threshold
    last_end: float = 0.0  # end time of the latest window above the off-threshold
    event_id: str = ""
    reported: bool = False
    scores: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class LabelThresholds:
    """Decision parameters of one label."""

    on: float
    off: float
    min_duration_s: float
    median_windows: int | None = None  # this label's median smoothing (odd); None: the tracker's; 1 keeps a one-window sound (a glass break)


class EventTracker:
    """Turns one source's per-window scores into onset/offset events for every label."""

    def __init__(self, source_id: str, model_id: str, labels: list[str], rules: list[LabelThresholds | None], median_windows: int = 3):
        if len(rules) != len(labels):
            raise ValueError(f"{len(rules)} rules for {len(labels)} labels")
        if median_windows < 1 or median_windows % 2 == 0:
            raise ValueError(f"median_windows must be an odd number >= 1, got {median_windows}")
        self.source_id, self.model_id, self.labels, self.median_windows = source_id, model_id, labels, median_windows
        self._history: deque[tuple[np.ndarray, float, float]] = deque(maxlen=median_windows)
        self.rules = rules  # the setter groups the labels by their median length
        self._tracks = [_Track() for _ in labels]
        self.skip: set[int] = set()  # label indices not tracked for now (switched off by a schedule); see ``close``
        # Told (source_id, end time) after every window: how far the stream got, so open events
        # can be closed there after a crash (the MQTT disk outbox persists it). Must be O(1).
        self.on_progress: Callable[[str, float], None] | None = None

    @property
    def rules(self) -> list[LabelThresholds | None]:
        return self._rules

    @rules.setter
    def rules(self, rules: list[LabelThresholds | None]) -> None:
        """New per-label rules (a reload or a remote command may swap them live); the score history grows to the
        longest median asked for, keeping what it holds."""
        lengths: set[int] = set()  # the median lengths in use: each is computed once per window
        for index, rule in enumerate(rules):
            if rule is not None:
                k = rule.median_windows or self.median_windows
                if k < 1 or k % 2 == 0:
                    raise ValueError(f"{self.labels[index]}: median_windows must be an odd number >= 1, got {k}")
                lengths.add(k)
        self._rules, self._lengths = rules, lengths
        longest = max([self.median_windows, *lengths])
        if longest != self._history.maxlen:
            self._history = deque(self._history, maxlen=longest)

    def update(self, scores: np.ndarray, start_time: float, end_time: float) -> list[Event]:
        """Feed one window's scores (``[classes]``); return the events it decides. Each label's score is the
        median of its last ``median_windows`` windows, timed as their middle window."""
        self._history.append((np.asarray(scores, dtype=np.float32), start_time, end_time))
        smoothed: dict[int, tuple[np.ndarray, float, float]] = {}
        for k in self._lengths:
            recent = list(self._history)[-k:]
            # Lower median: while the history is still filling (even count) never round up.
            median = np.sort(np.stack([h[0] for h in recent]), axis=0)[(len(recent) - 1) // 2]
            _, t_start, t_end = recent[(len(recent) - 1) // 2]  # the median is centred on the middle window
            smoothed[k] = (median, t_start, t_end)
        events: list[Event] = []
        for index, rule in enumerate(self._rules):  # label order, whatever the lengths
            if rule is not None and index not in self.skip:
                median, t_start, t_end = smoothed[rule.median_windows or self.median_windows]
                events.extend(self._step(index, rule, float(median[index]), t_start, t_end))
        if self.on_progress is not None:
            self.on_progress(self.source_id, end_time)
        return events

    def finish(self) -> list[Event]:
        """Close every open event at the last window seen (shutdown, end of file)."""
        events = []
        for index, track in enumerate(self._tracks):
            if track.active and track.reported:
                events.append(self._event("offset", index, track, track.last_end))
            self._tracks[index] = _Track()
        return events

    def active(self, index: int) -> bool:
        """Whether label ``index`` is above its onset threshold now (reported or still pending its minimum duration)."""
        return self._tracks[index].active

    def close(self, indices: list[int], at: float, reason: Literal["schedule", "control", "reload"] = "schedule") -> list[Event]:
        """End the open events of labels ``indices`` at stream time ``at`` (never before their onset),
        e.g. when a schedule switches them off; their tracks start afresh."""
        events = []
        for index in indices:
            track = self._tracks[index]
            if track.active and track.reported:
                offset = self._event("offset", index, track, max(at, track.pending_since))
                events.append(dataclasses.replace(offset, reason=reason))
            self._tracks[index] = _Track()
        return events

    def _step(self, index: int, rule: LabelThresholds, score: float, t_start: float, t_end: float) -> list[Event]:
        track = self._tracks[index]
        if not track.active:
            if score < rule.on:
                return []
            track.active, track.pending_since, track.event_id = True, t_start, str(uuid.uuid4())
        if score < rule.off:
            done = [self._event("offset", index, track, track.last_end)] if track.reported else []
            self._tracks[index] = _Track()
            return done
        track.scores.append(score)
        track.last_end = t_end
        if not track.reported and t_end - track.pending_since >= rule.min_duration_s:
            track.reported = True
            return [self._event("onset", index, track, None)]
        return []

    def _event(self, kind: Literal["onset", "offset"], index: int, track: _Track, offset: float | None) -> Event:
        scores = track.scores or [0.0]
        return Event(
            kind=kind,
            event_id=track.event_id,
            source_id=self.source_id,
            model_id=self.model_id,
            label=self.labels[index],
            onset_time=track.pending_since,
            offset_time=offset,
            peak_score=round(max(scores), 4),
            mean_score=round(float(np.mean(scores)), 4),
            windows=len(track.scores),
        )
