"""Scores -> events: median smoothing, hysteresis, minimum duration, per label and source.

Decision delay: an onset is reported when the median over ``median_windows`` windows
crosses the on-threshold AND the event has lasted ``min_duration_s``; so the delay after the
true onset is at most ``(median_windows // 2) * hop + min_duration_s + hop`` plus one window's
inference. The onset *time* in the message is the stream time of the first window above
threshold, not the time of the decision.
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class TagResult:
    """One window's scores for one source."""

    source_id: str
    model_id: str
    start_time: float  # capture time of the window's first sample
    end_time: float  # capture time of the window's last sample
    labels: list[tuple[str, float]]  # (label, score) above the floor, best first


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


@dataclass
class _Track:
    active: bool = False
    pending_since: float | None = None  # stream time of the first window above the on-threshold
    event_id: str = ""
    reported: bool = False
    scores: list[float] = field(default_factory=list)
