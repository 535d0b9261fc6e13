"""Assemble and run a site: model -> engine, sources -> ring buffers -> pipeline -> publishers.

Optional text heads: free-text ``queries`` are scored in the pipeline (one small graph per
batch); ``captions`` run on their own worker thread, fed by the sources' sinks.

``run_site`` owns the lifecycle: start everything, wait for SIGINT/SIGTERM (or the end of
every finite source, or ``duration``), then stop sources, close open events, flush the
outbox for ``mqtt.shutdown_flush_s``, publish ``offline`` and return 0. A run that was
killed instead leaves its open events in the disk outbox; the next start closes each
(``"reason": "restart"``) before its sources start (``close_interrupted_events``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack

from rtaudio.config.check import text_head_problems
from rtaudio.config.site import SiteConfig
from rtaudio.contract import ModelDir, ModelInfo, load_model_dir
from rtaudio.runtime.buffer import RingBuffer
from rtaudio.runtime.captions import CaptionWorker
from rtaudio.runtime.engines import create_engine
from rtaudio.runtime.events import EventTracker
from rtaudio.runtime.health import Health
from rtaudio.runtime.level import build_meter
from rtaudio.runtime.pipeline import Pipeline, QuerySet, Stream
from rtaudio.runtime.publish.base import Publisher
from rtaudio.runtime.publish.homeassistant import SourceEntities
from rtaudio.runtime.rules import PrivacyGate, build_rules
from rtaudio.runtime.sources import Source, create_source
from rtaudio.runtime.sources.file import FileSource

log = logging.getLogger(__name__)


def window_sizes(config: SiteConfig, info: ModelInfo) -> tuple[int, int]:
    """(window, hop) in samples: the model's, unless the site overrides them."""
    window_s = config.window.window_s or info.window_s
    hop_s = config.window.hop_s or info.hop_s
    return round(window_s * info.sample_rate), round(hop_s * info.sample_rate)


def state_entities(config: SiteConfig, info: ModelInfo) -> list[SourceEntities]:
    """Per enabled source, what gets a state topic (and, with discovery, a Home Assistant entity):
    its reported labels (``rules.build_rules``) and the enabled queries; plus its caption and level flags."""
    rules = build_rules(config, info)
    queries = tuple(config.active_queries())
    captioned = set(config.captioned_sources())
    return [
        SourceEntities(sc.id, tuple(rules[sc.id].reported_labels()), queries, captions=sc.id in captioned, level=config.level.enabled)
        for sc in config.sources
        if sc.enabled and sc.id in rules
    ]


def build_publishers(config: SiteConfig, model_id: str, health: Health, stack: ExitStack, info: ModelInfo | None = None) -> list[Publisher]:
    """Console and MQTT publishers as configured (the embedded broker started first); with ``info``,
    MQTT also publishes per-label state topics (and Home Assistant discovery when configured)."""
    from rtaudio.runtime.publish.console import ConsolePublisher

    publishers: list[Publisher] = [ConsolePublisher(config.console)]
    if config.mqtt is not None:
        from rtaudio.runtime.publish.mqtt import MqttPublisher

        mqtt = config.mqtt
        if mqtt.broker == "embedded":
            from rtaudio.runtime.publish.embedded import start_embedded_broker

            broker = start_embedded_broker(mqtt.port)
            stack.callback(broker.stop)
        entities = state_entities(config, info) if info is not None else []
        version = info.version if info is not None else ""
        publishers.append(MqttPublisher(mqtt, config.site, health, model_id, entities, config.homeassistant, version))
    return publishers


def build_queries(config: SiteConfig, info: ModelInfo) -> QuerySet | None:
    """The enabled free-text queries, embedded once (None when there are none); ValueError when unusable."""
    queries = config.active_queries()
    if not queries:
        return None
    from rtaudio.runtime.text_heads import TextSpace

    clash = [name for name in queries if name in info.labels]
    if clash:
        raise ValueError(f"queries: {', '.join(clash)} is a label of model {info.model_id}; events would clash, pick another name")
    if info.embedding_dim is None:
        raise ValueError(f"queries: model {info.model_id} has no embedding output; free-text queries need one")
    return QuerySet(TextSpace(config.model), queries, info, config.events)


def build_caption_worker(
    config: SiteConfig, model: ModelDir, publishers: Sequence[Publisher], health: Health, privacy: PrivacyGate | None = None
) -> CaptionWorker | None:
    """The caption decoder's worker, its ORT sessions loaded now (None when captions are off)."""
    if config.captions is None or not config.captioned_sources():
        return None
    from rtaudio.runtime.text_heads import Captioner

    info = model.info
    captioner = Captioner(config.model, threads=config.captions.threads)
    withhold = privacy.withhold if privacy is not None else None
    return CaptionWorker(captioner, info.model_id, info.version, info.sample_rate, publishers, health, config.captions.max_pending, withhold)


def run_site(
    config: SiteConfig, duration_s: float | None = None, install_signals: bool = True, health: Health | None = None, extra_publishers: Sequence[Publisher] = ()
) -> int:
    """Run until signalled (or ``duration_s``, or every finite source has ended); return the exit code.

    ``health`` (filled in place) and ``extra_publishers`` let a caller such as ``rtaudio bench``
    run the whole site and read its counters afterwards.
    """
    model = load_model_dir(config.model)
    info = model.info
    problems = text_head_problems(config)
    if problems:
        raise ValueError("; ".join(problems))
    window, hop = window_sizes(config, info)
    engine = create_engine(config.engine, model)
    health = health if health is not None else Health()
    stop = threading.Event()
    if install_signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())

    with ExitStack() as stack:
        engine.open()
        stack.callback(engine.close)
        health.engine = engine.description
        publishers = build_publishers(config, info.model_id, health, stack, info) + list(extra_publishers)
        progress = close_interrupted_events(publishers) if config.mqtt is not None else None
        source_rules = build_rules(config, info)  # per source: labels, thresholds, schedules, privacy
        scheduled = any(r.scheduled for r in source_rules.values())
        privacy = PrivacyGate(config.privacy.private_labels) if config.privacy.private_labels or scheduled else None
        queries = build_queries(config, info)
        captions = build_caption_worker(config, model, publishers, health, privacy)
        captioned = set(config.captioned_sources())
        enabled = [s for s in config.sources if s.enabled]
        streams: list[Stream] = []
        for sc in enabled:
            buffer = RingBuffer(info.sample_rate, window, hop, config.window.max_backlog)
            tracker = EventTracker(sc.id, info.model_id, info.labels, source_rules[sc.id].thresholds(), config.events.median_windows)
            tracker.on_progress = progress  # the query tracker sees the same windows: one hook per source is enough
            stream = Stream(sc.id, buffer, tracker, health.source(sc.id), rules=source_rules[sc.id])
            if queries is not None:
                stream.query_tracker = queries.tracker(sc.id, info.model_id, config.events.median_windows)
            if captions is not None and config.captions is not None and sc.id in captioned:
                stream.caption_feed = captions.feed(captions.ring(sc.id, config.captions.every_s))
            stream.meter = build_meter(sc, config.level, info.sample_rate, (buffer.capacity + hop) / info.sample_rate)
            stream.min_level_db = sc.min_level_db
            streams.append(stream)
        flush_s = config.mqtt.shutdown_flush_s if config.mqtt else 1.0
        health_s = config.mqtt.health_interval_s if config.mqtt else 10.0
        pipeline = Pipeline(engine, info, streams, publishers, health, config.tags, config.window.max_batch, health_s, queries, privacy=privacy)
        sources: list[Source] = []
        for sc, stream in zip(enabled, streams):
            source = create_source(sc, info.sample_rate, pipeline.sink(stream), stream.health)
            if isinstance(source, FileSource):  # a file can wait for the pipeline; live audio cannot
                source.ready = _has_room(stream.buffer)
            sources.append(source)
        for publisher in publishers:
            publisher.start()
        if captions is not None:
            captions.start()
            stack.callback(captions.close, 1.0)  # a no-op after the orderly close below
        thread = threading.Thread(target=pipeline.run, args=(stop,), name="pipeline", daemon=True)
        thread.start()
        for source in sources:
            source.start()
        log.info(
            "site %s: %d source(s) started, model %s %s, window %.2f s hop %.2f s",
            config.site,
            len(sources),
            info.model_id,
            info.version,
            window / info.sample_rate,
            hop / info.sample_rate,
        )
        _wait(stop, sources, streams, duration_s)
        log.info("stopping: sources, then pipeline, then publishers (flush up to %.1f s)", flush_s)
        for source in sources:
            source.stop()
        stop.set()
        thread.join(10)
        pipeline.step(pipeline.gather())  # what the sources delivered before they stopped
        pipeline.finish()
        pipeline.publish_levels()  # the intervals completed before the sources stopped
        if privacy is not None:  # every window is judged: the caption thread need not wait any more
            privacy.close()
        if captions is not None:  # the last captions before the final health and the publishers' flush
            captions.close(flush_s)
        pipeline.publish_health()
        for publisher in publishers:
            publisher.close(flush_s)
    return 0


def close_interrupted_events(publishers: Sequence[Publisher]) -> Callable[[str, float], None] | None:
    """Publish the offsets of the events a killed previous run left open (the MQTT disk outbox
    keeps them) to every publisher; return the MQTT publisher's stream-time hook for this run's
    trackers (None without one). Call it before any source starts."""
    from rtaudio.runtime.publish.mqtt import MqttPublisher

    keeper = next((p for p in publishers if isinstance(p, MqttPublisher)), None)
    if keeper is None:
        return None
    interrupted = keeper.interrupted_events()
    if interrupted:
        log.warning("closing %d event(s) left open by a run that did not stop cleanly (offset reason: restart)", len(interrupted))
    for event in interrupted:
        for publisher in publishers:
            publisher.event(event)
    return keeper.stream_time


def _has_room(buffer: RingBuffer) -> Callable[[], bool]:
    """Backpressure for files read faster than real time."""
    return lambda: buffer.pending() < buffer.max_backlog


def _wait(stop: threading.Event, sources: list[Source], streams: list[Stream], duration_s: float | None) -> None:
    deadline = time.monotonic() + duration_s if duration_s else None
    while not stop.wait(0.2):
        if deadline is not None and time.monotonic() >= deadline:
            return
        if not any(s.alive for s in sources) and not any(s.buffer.pending() for s in streams):
            log.info("every source has ended")
            return
