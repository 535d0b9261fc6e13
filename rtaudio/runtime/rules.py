"""Per-source rules: which labels a source may publish, with which thresholds, and when.

``build_rules(config, info)`` gives every enabled source a ``SourceRules``:

- ``reported_labels()``: the labels this source may ever publish, in model order: enabled at site
  level (``events.labels.X.enabled``), narrowed by the source's ``labels: {include, exclude}`` and
  its own ``events.labels.X.enabled``, minus ``privacy.private_labels``;
- ``active_labels(now)``: those reported labels the schedules allow at ``now`` (site ``when:`` and
  the source's ``when:``; ``labels.disable`` switches labels off inside a window, ``labels.enable``
  keeps them on only inside it);
- ``source_active(now)``: whether the source publishes at all at ``now`` (``source: disable`` pauses
  it inside a window, ``source: enable`` runs it only inside one);
- ``thresholds()``: the event tracker's per-label decision parameters (model, then site, then
  source overrides, field by field); private labels are tracked too (never published) so that
  ``PrivacyGate`` knows when one is active.

``PrivacyGate`` is the shared, thread-safe record of which sources have a private label active
(set by the pipeline thread, read by the caption thread), with the rule for free-text queries
that match a private label's words.
"""

from __future__ import annotations

import datetime
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from zoneinfo import ZoneInfo

from rtaudio.config.base import LabelRule, ScheduleRule
from rtaudio.config.check import zone_problem
from rtaudio.config.site import EventsConfig, ScheduleConfig, SiteConfig
from rtaudio.contract import ModelInfo
from rtaudio.contract.vocab import words
from rtaudio.runtime.events import LabelThresholds

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _seconds(text: str) -> int:
    """``"HH:MM"`` or ``"HH:MM:SS"`` -> seconds after midnight (``"24:00"`` is 86400)."""
    parts = [int(p) for p in text.split(":")] + [0]
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


def schedule_active(schedule: ScheduleConfig, now: datetime.datetime) -> bool:
    """Whether ``now`` (aware; naive is taken as UTC) lies in the window. ``days`` name the day a window
    starts on; a window whose ``to`` is not after ``from`` runs overnight into the next day."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.timezone.utc)
    local = now.astimezone(ZoneInfo(schedule.timezone or "UTC"))  # build_rules refuses a schedule without one
    second = local.hour * 3600 + local.minute * 60 + local.second
    start, end = _seconds(schedule.from_), _seconds(schedule.to)
    today, yesterday = DAYS[local.weekday()], DAYS[(local.weekday() - 1) % 7]
    days = set(schedule.days)
    if start < end:
        return today in days and start <= second < end
    return (today in days and second >= start) or (yesterday in days and second < end)


@dataclass
class SourceRules:
    """One source's labels, thresholds and schedules (see the module docstring)."""

    source_id: str
    labels: list[str]  # every model label, in model order
    reported: list[str]  # labels this source may ever publish, model order
    private: list[str]  # privacy.private_labels (tracked, never published)
    rules: list[LabelThresholds | None]  # per model label; None: not tracked at all
    schedules: dict[str, ScheduleConfig] = field(default_factory=dict)
    when: list[ScheduleRule] = field(default_factory=list)  # the site's rules, then the source's
    disabled: frozenset[str] = frozenset()  # reported labels switched off at run time (remote control)
    paused: bool = False  # the whole source switched off at run time (remote control)

    def reported_labels(self) -> list[str]:
        """The labels this source may ever publish, in model order."""
        return list(self.reported)

    def _on(self, name: str, now: datetime.datetime) -> bool:
        return schedule_active(self.schedules[name], now)

    def active_labels(self, now: datetime.datetime) -> set[str]:
        """The reported labels the schedules enable at ``now`` (empty while the source is inactive)."""
        if not self.source_active(now):
            return set()
        active = set(self.reported) - self.disabled
        enable_windows: dict[str, bool] = {}
        for rule in self.when:
            if rule.labels is None:
                continue
            on = self._on(rule.schedule, now)
            if on:
                active.difference_update(rule.labels.disable)
            for label in rule.labels.enable:
                enable_windows[label] = enable_windows.get(label, False) or on
        return {label for label in active if enable_windows.get(label, True)}

    def source_active(self, now: datetime.datetime) -> bool:
        """Whether this source publishes at ``now``: no ``source: disable`` window is on, and, when it
        has ``source: enable`` windows, one of them is on."""
        if self.paused:
            return False
        enables = [self._on(r.schedule, now) for r in self.when if r.source == "enable"]
        if any(self._on(r.schedule, now) for r in self.when if r.source == "disable"):
            return False
        return any(enables) if enables else True

    def thresholds(self) -> list[LabelThresholds | None]:
        """The event tracker's rule per model label (None: not tracked)."""
        return list(self.rules)

    def with_threshold(self, label: str, on: float) -> SourceRules:
        """A copy whose ``label`` turns on at ``on`` (its off threshold scaled to keep its ratio to ``on``)."""
        index = self.labels.index(label)
        old = self.rules[index]
        if old is None:
            raise ValueError(f"label {label} is not tracked on source {self.source_id}")
        off = old.off * on / old.on if old.on > 0 else on
        rules = list(self.rules)
        rules[index] = replace(old, on=on, off=min(off, on))
        return replace(self, rules=rules)

    @property
    def scheduled(self) -> bool:
        """Whether any schedule rule applies to this source (otherwise ``active_labels`` never changes)."""
        return bool(self.when)


def merge_rule(model_threshold: float, model_median: int | None, events: EventsConfig, site: LabelRule | None, source: LabelRule | None) -> LabelThresholds:
    """Model default, then the site's override, then the source's, key by key."""

    def pick(key: str) -> float | None:
        for rule in (source, site):
            value = getattr(rule, key) if rule is not None else None
            if value is not None:
                return float(value)
        return None

    on = pick("threshold")
    on = model_threshold if on is None else on
    off = pick("off_threshold")
    off = on * events.off_ratio if off is None else off
    min_duration = pick("min_duration_s")
    median = pick("median_windows")
    median = model_median if median is None else median
    return LabelThresholds(
        on=on,
        off=min(off, on),
        min_duration_s=events.min_duration_s if min_duration is None else min_duration,
        median_windows=None if median is None else int(median),
    )


def build_rules(config: SiteConfig, info: ModelInfo) -> dict[str, SourceRules]:
    """Every enabled source's rules, by source id."""
    for name, schedule in config.schedules.items():
        if (why := zone_problem(schedule.timezone)) is not None:
            raise ValueError(f"schedules.{name}: {why}")
    missing = sorted({r.schedule for r in [*config.when, *(r for s in config.sources for r in s.when)]} - set(config.schedules))
    if missing:
        raise ValueError(f"when: schedule(s) {', '.join(missing)} not defined; expected keys of schedules: ({', '.join(config.schedules) or 'none'})")
    private = [label for label in info.labels if label in set(config.privacy.private_labels)]
    out: dict[str, SourceRules] = {}
    for source in config.sources:
        if not source.enabled:
            continue
        include = set(source.labels.include) if source.labels is not None and source.labels.include else None
        exclude = set(source.labels.exclude) if source.labels is not None else set()
        own = source.events.labels if source.events is not None else {}
        reported, rules = [], []
        for label, threshold in zip(info.labels, info.thresholds):
            site_rule, source_rule = config.events.labels.get(label), own.get(label)
            enabled = (site_rule is None or site_rule.enabled) and (source_rule is None or source_rule.enabled)
            wanted = enabled and (include is None or label in include) and label not in exclude
            if wanted and label not in private:
                reported.append(label)
            tracked = wanted or label in private  # a private label is tracked for the privacy gate, whatever else says
            rules.append(merge_rule(threshold, info.median_windows.get(label), config.events, site_rule, source_rule) if tracked else None)
        out[source.id] = SourceRules(source.id, list(info.labels), reported, private, rules, dict(config.schedules), [*config.when, *source.when])
    return out


_SPLIT = re.compile(r"[^a-z0-9']+")


def label_words(label: str) -> list[str]:
    """A label's words: ``"Child_speech"`` -> ``["child", "speech"]``."""
    return [w for w in _SPLIT.split(label.lower()) if w]


def query_matches_private(text: str, private_labels: Iterable[str]) -> bool:
    """Whether a free-text query is about a private label: its words include every word of that label
    (``speech`` matches "loud speech nearby"; ``child_speech`` matches "a child speech", not "child crying")."""
    said = set(words(text))
    return any(parts and set(parts) <= said for parts in (label_words(label) for label in private_labels))


class PrivacyGate:
    """Which sources have a private label active, and since/until when (stream time).

    The pipeline thread calls ``update`` after every window; the caption thread asks ``withhold``.
    A caption is withheld while a schedule pauses its source, and, with private labels, when one is
    active on its source now, was active at any time during the caption's window, or the pipeline
    has not judged the caption's audio within ``wait_s`` (failing closed).
    """

    def __init__(self, private_labels: Sequence[str], wait_s: float = 2.0):
        self.private_labels = list(private_labels)
        self.wait_s = wait_s
        self._lock = threading.Condition()
        self._open: dict[str, bool] = {}
        self._last_private: dict[str, float] = {}  # end time of the latest window with a private label active
        self._progress: dict[str, float] = {}  # end time of the latest window judged
        self._paused: set[str] = set()  # sources a schedule pauses: no captions at all
        self._closed = False

    @property
    def enabled(self) -> bool:
        return bool(self.private_labels)

    def update(self, source_id: str, private_active: bool, end_time: float) -> None:
        """Record one judged window of ``source_id`` (pipeline thread)."""
        with self._lock:
            self._open[source_id] = private_active
            if private_active:
                self._last_private[source_id] = end_time
            self._progress[source_id] = max(end_time, self._progress.get(source_id, float("-inf")))
            self._lock.notify_all()

    def set_paused(self, source_id: str, paused: bool) -> None:
        """Record whether a schedule pauses ``source_id`` (pipeline thread)."""
        with self._lock:
            (self._paused.add if paused else self._paused.discard)(source_id)

    def active(self, source_id: str) -> bool:
        """Whether a private label is active on ``source_id`` now."""
        with self._lock:
            return self._open.get(source_id, False)

    def close(self) -> None:
        """Stop waiting (shutdown): later ``withhold`` calls do not wait for judgement."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def withhold(self, source_id: str, start_time: float, end_time: float) -> bool:
        """Whether a caption of ``source_id`` covering ``[start_time, end_time]`` must not be published."""
        with self._lock:
            if source_id in self._paused:
                return True
            if not self.enabled:
                return False
            self._lock.wait_for(lambda: self._closed or self._progress.get(source_id, float("-inf")) >= end_time, timeout=self.wait_s)
            if self._progress.get(source_id, float("-inf")) < end_time:
                return True  # not judged in time: fail closed
            return self._open.get(source_id, False) or self._last_private.get(source_id, float("-inf")) >= start_time
