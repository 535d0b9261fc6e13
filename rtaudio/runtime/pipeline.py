"""The scheduler: gather the due windows of every source, run ONE batch, dispatch the results.

Threading contract: ``run`` is the only thread that touches the engine. Sources only write
into their ring buffers and set ``ready``; publishers only queue. Nothing waits here but
the engine: when it falls behind, ring buffers drop their oldest windows (counted).

Free-text queries (``QuerySet``) are scored here too, from the batch's ``embedding`` output
(one small projection graph per batch); captions are not: the sink only copies each block
into the source's caption ring, and ``CaptionWorker`` decodes on its own thread.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from rtaudio.config.site import EventsConfig, QueryRule, TagsConfig
from rtaudio.contract import ModelInfo
from rtaudio.runtime.buffer import RingBuffer, Window
from rtaudio.runtime.engines.base import Engine
from rtaudio.runtime.events import Event, EventTracker, LabelThresholds, TagResult
from rtaudio.runtime.health import Health, SourceHealth
from rtaudio.runtime.level import LevelMeter
from rtaudio.runtime.logs import LogLimiter
from rtaudio.runtime.publish.base import Publisher
from rtaudio.runtime.rules import PrivacyGate, SourceRules, merge_rule, query_matches_private

log = logging.getLogger(__name__)


def label_rules(info: ModelInfo, events: EventsConfig) -> list[LabelThresholds | None]:
    """Per-label rules of the site's ``events`` alone (no per-source settings: ``rtaudio tag``): model defaults,
    site overrides; None for disabled labels."""
    rules: list[LabelThresholds | None] = []
    for label, model_threshold in zip(info.labels, info.thresholds):
        rule = events.labels.get(label)
        enabled = rule is None or rule.enabled
        rules.append(merge_rule(model_threshold, info.median_windows.get(label), events, rule, None) if enabled else None)
    return rules


DEFAULT_QUERY_THRESHOLD = 0.5  # cosine, when model.json has no extra.text.query_threshold


class QuerySet:
    """Free-text queries embedded once; scores windows by cosine similarity in the audio-text space.

    ``space`` is a ``rtaudio.runtime.text_heads.TextSpace`` (or anything with ``texts``/``audio``/``unknown_words``).
    Raises ValueError for a query none of whose words the model knows.
    """

    def __init__(self, space: Any, queries: dict[str, QueryRule], info: ModelInfo, events: EventsConfig):
        from rtaudio.contract.vocab import words

        self.space, self.names = space, list(queries)
        self.texts = [rule.text for rule in queries.values()]
        vocab_size = len(getattr(space, "vocab", ()))
        for name, text in zip(self.names, self.texts):
            unknown = space.unknown_words(text)
            if unknown and len(unknown) >= len(words(text)):
                raise ValueError(
                    f"queries.{name}: none of the words of {text!r} is known to model {info.model_id} "
                    f"(vocabulary of {vocab_size} words); describe the sound in other words"
                )
            if unknown:
                log.warning("queries.%s: word(s) %s unknown to model %s are ignored", name, ", ".join(unknown), info.model_id)
        self.matrix = np.asarray(space.texts(self.texts), dtype=np.float32) if self.names else np.zeros((0, 1), np.float32)
        default = float(info.extra.get("text", {}).get("query_threshold", DEFAULT_QUERY_THRESHOLD))
        self.rules = []
        for rule in queries.values():
            on = rule.threshold if rule.threshold is not None else default
            off = rule.off_threshold if rule.off_threshold is not None else on * events.off_ratio
            min_duration = rule.min_duration_s if rule.min_duration_s is not None else events.min_duration_s
            self.rules.append(LabelThresholds(on=on, off=min(off, on), min_duration_s=min_duration))

    def scores(self, embedding: np.ndarray) -> np.ndarray:
        """Window embeddings ``[B, E]`` -> cosine similarity to every query ``[B, Q]``."""
        return np.asarray(self.space.audio(embedding), dtype=np.float32) @ self.matrix.T

    def tracker(self, source_id: str, model_id: str, median_windows: int) -> EventTracker:
        """A per-source event tracker over the query names."""
        return EventTracker(source_id, model_id, self.names, list(self.rules), median_windows)


@dataclass
class Stream:
    """One source's state inside the pipeline."""

    source_id: str
    buffer: RingBuffer
    tracker: EventTracker
    health: SourceHealth
    last_tags: float = field(default=-1e18)
    query_tracker: EventTracker | None = None  # free-text queries, when configured
    caption_feed: Callable[[np.ndarray, float], None] | None = None  # the caption ring's writer, when captioned
    clip_feed: Callable[[np.ndarray, float], None] | None = None  # the clip ring's writer, when event clips are on
    meter: LevelMeter | None = None  # A-weighted level (fed by the sink), when levels or the gate are on
    min_level_db: float | None = None  # windows quieter than this (meter units) are not inferred
    rules: SourceRules | None = None  # labels, schedules and privacy of this source (None: every tracked label, always)
    active: set[str] | None = None  # labels published now (set by ``Pipeline.apply_rules``; None: no rules)
    on: bool = True  # False while a schedule pauses the source
    last_end: float | None = None  # stream time of the latest window judged (a schedule's switch closes events here)
    withheld: set[str] = field(default_factory=set)  # ids of query onsets withheld for privacy (their offsets are too)
    applied: SourceRules | None = None  # the rules ``apply_rules`` last read (a swapped snapshot is read again)


class EventHook(Protocol):
    """Sees each event before the publishers and may return it amended (``runtime.clips.ClipRecorder``)."""

    def on_event(self, event: Event) -> Event: ...


class Pipeline:
    """Windows in, one engine call per tick, tags/events/health out to every publisher."""

    def __init__(
        self,
        engine: Engine,
        info: ModelInfo,
        streams: Sequence[Stream],
        publishers: Sequence[Publisher],
        health: Health,
        tags: TagsConfig,
        max_batch: int = 32,
        health_interval_s: float = 10.0,
        queries: QuerySet | None = None,
        clock: Callable[[], float] = time.perf_counter,
        privacy: PrivacyGate | None = None,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.timezone.utc),
        clips: EventHook | None = None,
        checks: Callable[[], list[dict[str, Any]]] | None = None,
    ):
        self.engine, self.info, self.streams, self.publishers = engine, info, list(streams), list(publishers)
        self.queries = queries if queries is not None and queries.names else None
        self._query_text = dict(zip(self.queries.names, self.queries.texts)) if self.queries else {}
        self.health, self.tags_config, self.max_batch, self.health_interval_s = health, tags, max_batch, health_interval_s
        self.ready = threading.Event()  # set by sinks when a window may be due
        self._rotation = 0
        self._hop_s = streams[0].buffer.hop / info.sample_rate if streams else info.hop_s
        self._next_health = time.monotonic() + health_interval_s
        self._clock = clock  # measures busy time (a fake one in tests)
        self._busy_mark = (clock(), health.pipeline_busy_s)  # start of the current busy_fraction interval
        self.privacy, self._now = privacy, now  # ``now``: the wall clock the schedules read (a fake one in tests)
        private = privacy.private_labels if privacy is not None else []
        self._private_queries = {name for name, text in self._query_text.items() if query_matches_private(text, private)}
        self.hooks: list[Callable[[], None]] = []  # run on this thread at every tick, before the rules are read (remote control)
        self._hook_logs = LogLimiter(log)
        self._calls: queue.Queue[tuple[Callable[[], None], threading.Event, list[BaseException]]] = queue.Queue(8)
        self.clips = clips  # sees every event before the publishers (event clips)
        self.checks = checks  # the failing health checks, read into every health snapshot (``runtime.checks``)
        self.apply_rules()

    def sink(self, stream: Stream):
        """The callable a source writes into: buffer the samples, wake the pipeline when a window is due."""
        buffer, ready, caption_feed, meter, clip_feed = stream.buffer, self.ready, stream.caption_feed, stream.meter, stream.clip_feed

        def write(samples: np.ndarray, capture_time: float) -> None:
            if meter is not None:  # before the buffer: a window's level is known once it is due (the gate reads it)
                meter.feed(samples, capture_time)
            buffer.write(samples, capture_time)
            if buffer.pending():
                ready.set()
            if caption_feed is not None:  # O(block) copy; the decoding happens on the caption thread
                caption_feed(samples, capture_time)
            if clip_feed is not None:  # O(block) copy; clips are written on the clip thread
                clip_feed(samples, capture_time)

        return write

    def gather(self) -> list[tuple[Stream, Window]]:
        """Take up to ``max_batch`` due windows, round-robin across sources so none starves."""
        pending = [s.buffer.pending() for s in self.streams]
        quota = [0] * len(self.streams)
        budget, n = self.max_batch, len(self.streams)
        while budget and any(q < p for q, p in zip(quota, pending)):
            for k in range(n):
                i = (self._rotation + k) % n
                if budget and quota[i] < pending[i]:
                    quota[i] += 1
                    budget -= 1
        self._rotation = (self._rotation + 1) % max(n, 1)
        items: list[tuple[Stream, Window]] = []
        for stream, q in zip(self.streams, quota):
            if q:
                items.extend((stream, w) for w in stream.buffer.due_windows(q))
                stream.health.windows_dropped = stream.buffer.dropped  # drops happen only in due_windows: exact at any scrape
        return items

    def tick(self) -> int:
        """Gather the due windows and run them as one batch; the wall time this takes (inference and
        dispatch) is the pipeline's busy time (``health.pipeline_busy_s``). Returns the windows run."""
        start = self._clock()
        self._run_calls()
        for hook in self.hooks:
            try:
                hook()
            except Exception:  # a faulty hook must not stop inference
                self._hook_logs.exception("hook", "pipeline: a tick hook failed")
        self.apply_rules()
        items = self.gather()
        try:
            self.step(items)
        finally:
            if items:
                self.health.pipeline_busy_s += self._clock() - start
        return len(items)

    def step(self, items: list[tuple[Stream, Window]]) -> None:
        """Run the engine once on ``items`` and dispatch scores, tags and events."""
        items = self._drop_paused(items)
        gated = self.gate(items)
        if not items:
            return
        run = [item for i, item in enumerate(items) if i not in gated]
        rows: list[np.ndarray] = []
        query_rows: list[np.ndarray] = []
        if run:
            batch = np.stack([w.samples for _, w in run])
            outputs = self.engine.infer(batch)
            self.health.inference_ms.add(self.engine.last_ms)
            self.health.batch_sizes.add(len(run))
            self.health.last_batch_ok = time.time()
            self.health.batches += 1
            self.health.busy_s += self.engine.last_ms / 1000
            self.health.audio_s += self._hop_s * len(run)
            rows = list(outputs["scores"])
            if self.queries is not None:
                query_rows = list(self.queries.scores(outputs["embedding"]))
        k = 0
        for i, (stream, window) in enumerate(items):  # in order: a gated window is judged as silence where it falls
            if i in gated:
                self._dispatch(stream, window, np.zeros(len(self.info.labels), dtype=np.float32), tags=False)
                if stream.query_tracker is not None:
                    quiet = np.full(len(stream.query_tracker.labels), -1.0, dtype=np.float32)
                    self._publish_query_events(stream.query_tracker.update(quiet, window.start_time, window.end_time), stream)
                continue
            stream.health.windows_processed += 1
            self._dispatch(stream, window, rows[k])
            if query_rows and stream.query_tracker is not None:
                self._publish_query_events(stream.query_tracker.update(query_rows[k], window.start_time, window.end_time), stream)
            k += 1

    def _emit(self, stream: Stream | None, event: Event) -> None:
        """Hand one event to every publisher: an onset is counted (``events_opened``); with event clips on,
        the clip recorder sees it first and names its clip in the offset (``runtime.clips``)."""
        if stream is not None and event.kind == "onset":
            stream.health.events_opened[event.label] = stream.health.events_opened.get(event.label, 0) + 1
        if self.clips is not None:
            event = self.clips.on_event(event)
        for publisher in self.publishers:
            publisher.event(event)

    def _publish_query_events(self, events: list[Event], stream: Stream | None = None) -> None:
        """Hand a query tracker's events to every publisher, each with its query text; a query about a
        private label's words is withheld (onset and its offset) while that label is active on the source."""
        for event in events:
            if stream is not None and event.label in self._private_queries:
                if event.event_id in stream.withheld:
                    if event.kind == "offset":
                        stream.withheld.discard(event.event_id)
                    continue
                if event.kind == "onset" and self.privacy is not None and self.privacy.active(stream.source_id):
                    stream.withheld.add(event.event_id)
                    continue
            self._emit(stream, dataclasses.replace(event, query=self._query_text[event.label]))

    def apply_rules(self, reason: Literal["schedule", "control", "reload"] = "schedule") -> None:
        """Read the schedules now (once per tick, so at least once per hop): a label switched off has its
        open event closed at the source's latest stream time (offset reason "schedule") and is no longer
        tracked; a paused source has every event closed, queries included."""
        now: datetime.datetime | None = None
        for stream in self.streams:
            rules = stream.rules
            if rules is None or (stream.active is not None and not rules.scheduled and stream.applied is rules):
                continue
            stream.applied = rules
            now = now or self._now()
            on = rules.source_active(now)
            active = rules.active_labels(now) if on else set()
            before = stream.active if stream.active is not None else set(rules.reported_labels())
            stream.active, stream.on = active, on
            if self.privacy is not None:
                self.privacy.set_paused(stream.source_id, not on)
            tracked = active | set(rules.private)
            stream.tracker.skip = {i for i, label in enumerate(self.info.labels) if label not in tracked}
            off = [i for i, label in enumerate(self.info.labels) if label in before and label not in active]
            at = stream.last_end
            if at is None:
                continue
            for event in stream.tracker.close(off, at, reason):
                self._emit(stream, event)
            if not on and stream.query_tracker is not None:
                closed = stream.query_tracker.close(list(range(len(stream.query_tracker.labels))), at, reason)
                self._publish_query_events(closed, stream)

    def call(self, fn: Callable[[], None], timeout: float = 10.0) -> None:
        """Run ``fn`` on the pipeline thread at its next tick and wait for it (another thread: reload adding or
        removing streams). Re-raises what ``fn`` raised; TimeoutError when the pipeline did not get to it."""
        done, errors = threading.Event(), []  # type: ignore[var-annotated]
        self._calls.put((fn, done, errors), timeout=timeout)
        self.ready.set()
        if not done.wait(timeout):
            raise TimeoutError(f"the pipeline did not run the change within {timeout:.0f} s")
        if errors:
            raise errors[0]

    def _run_calls(self) -> None:
        while True:
            try:
                fn, done, errors = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            except Exception as exc:  # handed back to the caller
                errors.append(exc)
            finally:
                done.set()

    def add_stream(self, stream: Stream) -> None:
        """Start judging ``stream``'s windows (pipeline thread)."""
        self.streams.append(stream)
        self.apply_rules()

    def remove_stream(self, source_id: str, reason: Literal["reload"] = "reload") -> None:
        """Stop judging a source (pipeline thread): its last windows judged, its open events closed at its latest stream time."""
        stream = next((s for s in self.streams if s.source_id == source_id), None)
        if stream is None:
            return
        self.step([(stream, w) for w in stream.buffer.due_windows(stream.buffer.pending())])
        at = stream.last_end
        if at is not None:
            tracked = [i for i in range(len(self.info.labels)) if stream.tracker.active(i)]
            for event in stream.tracker.close(tracked, at, reason):
                if stream.active is None or event.label in stream.active:
                    self._emit(stream, event)
            if stream.query_tracker is not None:
                self._publish_query_events(stream.query_tracker.close(list(range(len(stream.query_tracker.labels))), at, reason), stream)
        if stream.meter is not None:
            for reading in stream.meter.take_readings():
                for publisher in self.publishers:
                    publisher.level(reading)
        self.streams.remove(stream)
        self._rotation = 0

    def rules(self) -> dict[str, SourceRules]:
        """The rules snapshot of every stream that has one, by source id (pipeline thread)."""
        return {s.source_id: s.rules for s in self.streams if s.rules is not None}

    def swap_rules(self, rules: dict[str, SourceRules], reason: Literal["control", "reload"] = "control") -> None:
        """Replace the rules of the streams named in ``rules`` (pipeline thread) and apply them at once: new
        thresholds reach the trackers, labels or sources switched off have their open events closed."""
        for stream in self.streams:
            new = rules.get(stream.source_id)
            if new is None or new is stream.rules:
                continue
            if stream.rules is None or new.labels != stream.rules.labels:
                raise ValueError(f"source {stream.source_id}: new rules must cover the same model labels")
            stream.rules = new
            stream.tracker.rules = new.thresholds()
        self.apply_rules(reason)

    def _drop_paused(self, items: list[tuple[Stream, Window]]) -> list[tuple[Stream, Window]]:
        """Windows of sources a schedule pauses are not judged (nothing of them is published)."""
        kept = []
        for stream, window in items:
            if stream.on:
                kept.append((stream, window))
            elif self.privacy is not None:
                self.privacy.update(stream.source_id, False, window.end_time)  # judged: nothing to publish
        return kept

    def gate(self, items: list[tuple[Stream, Window]]) -> set[int]:
        """Indices of the windows not to infer: those of a source with ``min_level_db`` whose A-weighted level is
        below it (counted in ``windows_gated``); ``step`` judges them as silence (no tags), so open events still end."""
        gated: set[int] = set()
        for i, (stream, window) in enumerate(items):
            meter, floor = stream.meter, stream.min_level_db
            if meter is None or floor is None:
                continue
            level = meter.window_level(window.end_index - stream.buffer.window, window.end_index)
            if level is not None and level < floor:
                gated.add(i)
                stream.health.windows_gated += 1
        return gated

    def publish_levels(self) -> None:
        """Hand every source's completed level readings to the publishers (pipeline thread)."""
        for stream in self.streams:
            if stream.meter is None:
                continue
            for reading in stream.meter.take_readings():
                for publisher in self.publishers:
                    publisher.level(reading)
            stream.health.levels_dropped = stream.meter.dropped

    def _dispatch(self, stream: Stream, window: Window, row: np.ndarray, tags: bool = True) -> None:
        stream.last_end = window.end_time
        rules, active = stream.rules, stream.active
        for event in stream.tracker.update(row, window.start_time, window.end_time):
            if active is None or event.label in active:
                self._emit(stream, event)
        if rules is not None and self.privacy is not None:
            private = any(stream.tracker.active(self.info.labels.index(label)) for label in rules.private)
            self.privacy.update(stream.source_id, private, window.end_time)
        if tags and window.end_time - stream.last_tags >= self.tags_config.min_interval_s:
            stream.last_tags = window.end_time
            allowed = np.arange(row.shape[0]) if active is None else np.array([i for i, label in enumerate(self.info.labels) if label in active], dtype=int)
            order = allowed[np.argsort(-row[allowed], kind="stable")][: self.tags_config.top_k]
            labels = [(self.info.labels[i], round(float(row[i]), 4)) for i in order if row[i] >= self.tags_config.floor]
            result = TagResult(stream.source_id, self.info.model_id, window.start_time, window.end_time, labels)
            for publisher in self.publishers:
                publisher.tags(result)

    def finish(self) -> None:
        """Close open events (offsets at the last window seen) and publish them."""
        for stream in self.streams:
            for event in stream.tracker.finish():
                if stream.active is None or event.label in stream.active:
                    self._emit(stream, event)
            if stream.query_tracker is not None:
                self._publish_query_events(stream.query_tracker.finish(), stream)

    def update_busy_fraction(self) -> None:
        """Set ``health.busy_fraction``: busy time / wall time since the previous update (the
        health interval). Near 1 the pipeline cannot keep up and windows are dropped."""
        now, busy = self._clock(), self.health.pipeline_busy_s
        since, busy_then = self._busy_mark
        if now > since:
            self.health.busy_fraction = round(min(1.0, max(0.0, (busy - busy_then) / (now - since))), 4)
        self._busy_mark = (now, busy)

    def publish_health(self) -> None:
        self.update_busy_fraction()
        for stream in self.streams:
            stream.health.windows_dropped = stream.buffer.dropped
        if self.checks is not None:
            self.health.checks = self.checks()
        snapshot = self.health.snapshot()
        for publisher in self.publishers:
            publisher.health(snapshot)

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop``: wait for due windows, infer, dispatch, publish health on time."""
        log.info("pipeline: %d source(s), engine %s, max batch %d", len(self.streams), self.engine.description, self.max_batch)
        logs = LogLimiter(log)  # a persistent fault fails every batch: one traceback, then a count every 10 s
        while not stop.is_set():
            if not any(s.buffer.pending() for s in self.streams):
                self.ready.wait(timeout=min(self._hop_s, 0.25))
                self.ready.clear()
            try:
                self.tick()
                self.publish_levels()
            except Exception:  # keep listening; a bad batch must not kill the daemon
                logs.exception("infer", "pipeline: inference failed; batch skipped")
                self.health.errors += 1
                self.health.last_batch_error = time.time()
                stop.wait(0.5)
            if time.monotonic() >= self._next_health:
                self._next_health = time.monotonic() + self.health_interval_s
                self.publish_health()
