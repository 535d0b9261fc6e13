"""The status board: what the local status page (``page.html``, served at ``/``) shows, as ``/api/status``.

``StatusBoard`` is a publisher: the pipeline thread hands it tags, events and levels, the caption thread
captions. Each call only stores a few small values under a lock, so it never holds those threads up.
``snapshot()`` (the HTTP server's thread) reads the ``Health`` record and the checks, and copies the
stored values out as plain JSON-able dicts. Every list in it is bounded and sorted newest first.

Times: every ``*_time`` field and ``now`` is UNIX seconds (UTC, float, milliseconds). The snapshot says
so in ``"times": "unix_s"``. Durations are seconds (``*_s``), levels dB, inference time ms.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rtaudio.runtime.checks import HealthChecks
from rtaudio.runtime.events import CaptionResult, Event, TagResult
from rtaudio.runtime.health import Health
from rtaudio.runtime.level import LevelReading
from rtaudio.runtime.publish.base import Publisher

SCHEMA = "rtaudio.status/1"
MAX_SOURCES = 256  # sources tracked by the board; more than a site holds (health still lists every source's counters)
MAX_TAGS = 32  # labels kept from one tags window
MAX_OPEN = 64  # open events kept per source (one per label at most; a bound all the same)
MAX_FAILING = 64  # failing checks listed
MAX_TEXT = 1000  # characters kept of a caption
MAX_NAME = 200  # characters kept of a label, query text, source id, clip file name


def _text(value: Any, limit: int = MAX_NAME) -> str:
    """``value`` as a string of at most ``limit`` characters (an ellipsis marks a cut)."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _num(value: Any, digits: int = 3) -> float | None:
    """A finite number rounded to ``digits``, else None: JSON has no NaN or infinity."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number, digits) if math.isfinite(number) else None


def _clip(clip: dict[str, Any] | None) -> dict[str, Any] | None:
    """The part of an offset's clip the page needs: a plain file name (no path) and its duration."""
    if not isinstance(clip, dict):
        return None
    name = clip.get("file")
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        return None
    return {"file": _text(name), "duration_s": _num(clip.get("duration_s"))}


@dataclass
class _Source:
    """What the board keeps of one source (guarded by the board's lock)."""

    level: dict[str, Any] | None = None
    tags: dict[str, Any] | None = None
    caption: dict[str, Any] | None = None
    events: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)  # event id -> record, oldest first
    open: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)  # the open ones among them (same dicts)


class StatusBoard(Publisher):
    """The live state of a site for the status page: per source the level, the current tags, the open and
    the last ``max_events`` events (an onset and its offset merged into one record), the latest caption;
    and the health figures. Thread-safe; the publisher calls do O(labels) work under one lock."""

    def __init__(
        self, site: str, model_id: str, health: Health, checks: HealthChecks | None = None, max_events: int = 50, clock: Callable[[], float] = time.time
    ):
        if not 1 <= max_events <= 10_000:
            raise ValueError(f"max_events must be between 1 and 10000, got {max_events}")
        # ``record``, not ``health``: ``Publisher.health`` is the method the pipeline calls with each health snapshot.
        self.site, self.model_id, self.record, self.checks, self.max_events = site, model_id, health, checks, max_events
        self._clock = clock
        self._lock = threading.Lock()
        self._sources: dict[str, _Source] = {}

    def _source(self, source_id: str) -> _Source | None:
        """The board's record of ``source_id`` (created on first sight; None past ``MAX_SOURCES``). Call under the lock."""
        board = self._sources.get(source_id)
        if board is None and len(self._sources) < MAX_SOURCES:
            board = self._sources[source_id] = _Source()
        return board

    # ------------------------------------------------------------------ publisher calls (pipeline and caption threads)

    def tags(self, result: TagResult) -> None:
        """The source's current tags: the latest window's labels above the floor (possibly none)."""
        labels = [{"label": _text(label), "score": _num(score, 4)} for label, score in result.labels[:MAX_TAGS]]
        tags = {"start_time": _num(result.start_time), "end_time": _num(result.end_time), "labels": labels}
        with self._lock:
            board = self._source(result.source_id)
            if board is not None:
                board.tags = tags

    def event(self, event: Event) -> None:
        """An onset opens a record; its offset (same ``event_id``) closes it with the offset time, duration,
        peak score, reason and clip. An offset whose onset is not held (a restart's) makes a closed record."""
        closing = event.kind == "offset"
        fields: dict[str, Any] = {
            "event_id": _text(event.event_id),
            "label": _text(event.label),
            "query": None if event.query is None else _text(event.query),
            "onset_time": _num(event.onset_time),
            "offset_time": _num(event.offset_time) if closing else None,
            "duration_s": _num(event.offset_time - event.onset_time) if closing and event.offset_time is not None else None,
            "peak_score": _num(event.peak_score, 4),
            "mean_score": _num(event.mean_score, 4),
            "reason": event.reason,
            "clip": _clip(event.clip) if closing else None,
            "open": not closing,
        }
        with self._lock:
            board = self._source(event.source_id)
            if board is None:
                return
            record = board.events.get(event.event_id) or board.open.get(event.event_id)
            if record is None:
                record = board.events[event.event_id] = fields
            else:
                record.update(fields)
                board.events[event.event_id] = record  # back in the recent list if it had been pushed out while open
            if closing:
                board.open.pop(event.event_id, None)
            else:
                board.open[event.event_id] = record
                while len(board.open) > MAX_OPEN:
                    board.open.popitem(last=False)
            while len(board.events) > self.max_events:
                board.events.popitem(last=False)

    def caption(self, result: CaptionResult) -> None:
        """The source's latest caption."""
        caption = {"text": _text(result.caption, MAX_TEXT), "start_time": _num(result.start_time), "end_time": _num(result.end_time)}
        with self._lock:
            board = self._source(result.source_id)
            if board is not None:
                board.caption = caption

    def level(self, reading: LevelReading) -> None:
        """The source's latest A-weighted level reading (Leq, Lmax, L90 over its interval)."""
        level = {
            "leq_db": _num(reading.leq_db, 1),
            "lmax_db": _num(reading.lmax_db, 1),
            "l90_db": _num(reading.l90_db, 1),
            "calibrated": bool(reading.calibrated),
            "weighting": _text(reading.weighting, 8),
            "interval_s": _num(reading.interval_s),
            "end_time": _num(reading.end_time),
        }
        with self._lock:
            board = self._source(reading.source_id)
            if board is not None:
                board.level = level

    # ------------------------------------------------------------------ the page's view (HTTP thread)

    def snapshot(self) -> dict[str, Any]:
        """The whole board as plain JSON-able dicts (``/api/status``); lists bounded, newest first; times UNIX seconds."""
        now = self._clock()
        with self._lock:
            copied = {
                source_id: (board.level, board.tags, board.caption, [dict(r) for r in board.events.values()], [dict(r) for r in board.open.values()])
                for source_id, board in self._sources.items()
            }
        health = self.record
        counters = list(health.sources.items())[:MAX_SOURCES]
        order = [source_id for source_id, _ in counters] + [source_id for source_id in copied if source_id not in health.sources]
        known = dict(counters)
        sources = []
        for source_id in order[:MAX_SOURCES]:
            level, tags, caption, events, open_events = copied.get(source_id, (None, None, None, [], []))
            counts = known.get(source_id)
            sources.append(
                {
                    "id": _text(source_id),
                    "connected": None if counts is None else bool(counts.connected),
                    "level_dbfs": None if counts is None else _num(counts.level_dbfs, 1),
                    "seconds_since_data": None if counts is None or not counts.last_data else _num(now - counts.last_data, 1),
                    "windows_processed": None if counts is None else counts.windows_processed,
                    "windows_dropped": None if counts is None else counts.windows_dropped,
                    "clips_saved": None if counts is None else counts.clips_saved,
                    "clips_dropped": None if counts is None else counts.clips_dropped,
                    "level": None if level is None else dict(level),
                    "tags": None if tags is None else {**tags, "labels": [dict(t) for t in tags["labels"]]},
                    "caption": None if caption is None else dict(caption),
                    "open_events": open_events[::-1],
                    "events": events[::-1],
                }
            )
        return {
            "schema": SCHEMA,
            "site": _text(self.site),
            "model": _text(self.model_id),
            "times": "unix_s",
            "now": _num(now),
            "health": self._health(now, counters),
            "sources": sources,
        }

    def _health(self, now: float, counters: list[tuple[str, Any]]) -> dict[str, Any]:
        """The health panel's figures, read from the shared ``Health`` record and the checks."""
        health = self.record
        failing = self.checks.failing() if self.checks is not None else list(health.checks)
        inference = health.inference_ms.summary()
        return {
            "uptime_s": _num(now - health.started, 1),
            "engine": _text(health.engine),
            "inference_ms": {"p50": _num(inference["p50"], 2), "p99": _num(inference["p99"], 2)},
            "busy_fraction": _num(health.busy_fraction, 4),
            "batches": health.batches,
            "errors": health.errors,
            "windows_processed": sum(s.windows_processed for _, s in counters),
            "windows_dropped": sum(s.windows_dropped for _, s in counters),
            "mqtt": {
                "enabled": None if self.checks is None else self.checks.mqtt,
                "connected": bool(health.broker_connected),
                "outbox_depth": health.outbox_depth,
                "reconnects": health.broker_reconnects,
                "dropped": sum(health.messages_dropped.values()),
            },
            "healthy": not failing,
            "failing": [{key: _text(value, MAX_TEXT) for key, value in check.items()} for check in failing[:MAX_FAILING]],
        }
