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

import functools
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtaudio.config.check import text_head_problems
from rtaudio.config.site import SiteConfig
from rtaudio.contract import ModelDir, ModelInfo, load_model_dir
from rtaudio.runtime.buffer import RingBuffer
from rtaudio.runtime.captions import CaptionWorker
from rtaudio.runtime.checks import HealthChecks
from rtaudio.runtime.control import Controller
from rtaudio.runtime.engines import create_engine
from rtaudio.runtime.events import EventTracker
from rtaudio.runtime.health import Health
from rtaudio.runtime.level import build_meter
from rtaudio.runtime.pipeline import Pipeline, QuerySet, Stream
from rtaudio.runtime.publish.base import Publisher
from rtaudio.runtime.publish.homeassistant import SourceEntities
from rtaudio.runtime.rules import PrivacyGate, SourceRules, build_rules
from rtaudio.runtime.sources import Source, create_source
from rtaudio.runtime.sources.file import FileSource
from rtaudio.runtime.watchdog import build_watchdog

if TYPE_CHECKING:  # imported where used: paho only loads with mqtt: configured
    from rtaudio.runtime.publish.mqtt import MqttPublisher

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
        publishers.append(MqttPublisher(mqtt, config.site, health, model_id, entities, config.homeassistant, version, control=config.control.enabled))
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


def build_clip_recorder(config: SiteConfig, info: ModelInfo, health: Health, rules: dict[str, SourceRules]) -> Any:
    """The event-clip recorder (``runtime.clips.ClipRecorder``, not started), or None when clips are off; its
    rings hold the audio of the latest onset decision a clipped label can take (``clip_lag_s``)."""
    if config.clips is None:
        return None
    from rtaudio.runtime.clips import ClipRecorder

    lag = clip_lag_s(config, info, rules)
    return ClipRecorder(config.clips, info.sample_rate, health, private=config.privacy.private_labels, lag_s=lag)


def clip_lag_s(config: SiteConfig, info: ModelInfo, rules: dict[str, SourceRules]) -> float:
    """How long after its stream time an onset of a clipped label may be decided, so its pre-roll must still
    be in the ring: the longest minimum duration plus median delay of a clipped label on any source (or query),
    one window, the backlog of windows a source may queue, and 5 s for the writer; at least ``DEFAULT_LAG_S``."""
    from rtaudio.runtime.clips import DEFAULT_LAG_S

    assert config.clips is not None
    window_s, hop_s = (n / info.sample_rate for n in window_sizes(config, info))
    clipped, worst = set(config.clips.labels), 0.0
    for source_rules in rules.values():
        for label, rule in zip(info.labels, source_rules.thresholds()):
            if rule is not None and label in clipped:
                k = rule.median_windows or config.events.median_windows
                worst = max(worst, rule.min_duration_s + (k // 2 + 1) * hop_s)
    for name, query in config.active_queries().items():
        if name in clipped:
            min_duration = query.min_duration_s if query.min_duration_s is not None else config.events.min_duration_s
            worst = max(worst, min_duration + (config.events.median_windows // 2 + 1) * hop_s)
    return max(DEFAULT_LAG_S, worst + window_s + config.window.max_backlog * hop_s + 5.0)


def build_http(config: SiteConfig, info: ModelInfo, health: Health, checks: HealthChecks) -> tuple[Any, Publisher] | None:
    """The HTTP server (``runtime.http.server.HttpServer``, not started) and its status board (a publisher),
    or None when ``http`` is off."""
    if config.http is None:
        return None
    from rtaudio.runtime.http.server import HttpServer
    from rtaudio.runtime.http.status import StatusBoard

    board = StatusBoard(config.site, info.model_id, health, checks)
    clips_dir = config.clips.dir if config.clips is not None else None
    return HttpServer(config.http, health, checks, board, clips_dir), board


def run_site(
    config: SiteConfig,
    duration_s: float | None = None,
    install_signals: bool = True,
    health: Health | None = None,
    extra_publishers: Sequence[Publisher] = (),
    config_path: Path | None = None,
) -> int:
    """Run until signalled (or ``duration_s``, or every finite source has ended); return the exit code.

    ``health`` (filled in place) and ``extra_publishers`` let a caller such as ``rtaudio bench``
    run the whole site and read its counters afterwards. With ``config_path`` (and signals), SIGHUP
    reloads that file (``Reloader``) and a pid file for ``rtaudio reload`` is written (``pid_path``).
    """
    model = load_model_dir(config.model)
    info = model.info
    problems = text_head_problems(config)
    if problems:
        raise ValueError("; ".join(problems))
    window, hop = window_sizes(config, info)
    engine = create_engine(config.engine, model)
    health = health if health is not None else Health()
    checks = HealthChecks(config.health, health, mqtt=config.mqtt is not None)
    stop = threading.Event()
    if install_signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())

    with ExitStack() as stack:
        engine.open()
        stack.callback(engine.close)
        health.engine = engine.description
        publishers = build_publishers(config, info.model_id, health, stack, info) + list(extra_publishers)
        http = build_http(config, info, health, checks)
        if http is not None:
            server, board = http
            server.start()  # binds now: a taken port stops the start here, with the address named
            stack.callback(server.close)
            publishers.append(board)
            host, port = server.address
            log.info("http: status page, /metrics, /healthz on http://%s:%d/", f"[{host}]" if ":" in host else host, port)
        progress = close_interrupted_events(publishers) if config.mqtt is not None else None
        source_rules = build_rules(config, info)  # per source: labels, thresholds, schedules, privacy
        clips = build_clip_recorder(config, info, health, source_rules)
        scheduled = any(r.scheduled for r in source_rules.values())
        remote = config.control.enabled and config.mqtt is not None  # commands can pause a source: the caption gate must know
        privacy = PrivacyGate(config.privacy.private_labels) if config.privacy.private_labels or scheduled or remote else None
        queries = build_queries(config, info)
        captions = build_caption_worker(config, model, publishers, health, privacy)
        enabled = [s for s in config.sources if s.enabled]
        streams = [build_stream(config, sc, info, source_rules[sc.id], health, queries, progress, clips, captions) for sc in enabled]
        flush_s = config.mqtt.shutdown_flush_s if config.mqtt else 1.0
        health_s = config.mqtt.health_interval_s if config.mqtt else 10.0
        pipeline = Pipeline(
            engine,
            info,
            streams,
            publishers,
            health,
            config.tags,
            config.window.max_batch,
            health_s,
            queries,
            privacy=privacy,
            clips=clips,
            checks=checks.failing,
        )
        if remote:
            attach_control(config, pipeline, publishers)
        sources: list[Source] = [build_source(sc, info, pipeline, stream) for sc, stream in zip(enabled, streams)]
        for publisher in publishers:
            publisher.start()
        wait_for_broker(publishers, BROKER_WAIT_S)
        if captions is not None:
            captions.start()
            stack.callback(captions.close, 1.0)  # a no-op after the orderly close below
        if clips is not None:
            clips.start()
            stack.callback(clips.close, 1.0)  # a no-op after the orderly close below
        thread = threading.Thread(target=pipeline.run, args=(stop,), name="pipeline", daemon=True)
        thread.start()
        for source in sources:
            source.start()
        checks.started = True
        watchdog = build_watchdog(checks.failing, config.health.watchdog) if install_signals else None
        if watchdog is not None:
            watchdog.ready()
        log.info(
            "site %s: %d source(s) started, model %s %s, window %.2f s hop %.2f s",
            config.site,
            len(sources),
            info.model_id,
            info.version,
            window / info.sample_rate,
            hop / info.sample_rate,
        )
        reloader = Reloader(config, config_path, info, pipeline, publishers, sources, health, queries, progress, privacy, clips, checks, captions)
        reload = threading.Event()
        if install_signals and config_path is not None and hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, lambda *_: reload.set())  # the handler only sets a flag; the loop below does the work
        pid_file = write_pid_file(config) if install_signals and config_path is not None else None
        if pid_file is not None:
            stack.callback(_remove_pid_file, pid_file)
        _wait(stop, sources, pipeline.streams, duration_s, reload, reloader.reload)
        log.info("stopping: sources, then pipeline, then publishers (flush up to %.1f s)", flush_s)
        checks.stopping = True
        if watchdog is not None:
            watchdog.stopping()
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
        if clips is not None:  # clips still open end where the audio ended
            clips.close(flush_s)
        pipeline.publish_health()
        for publisher in publishers:
            publisher.close(flush_s)
    return 0


def build_stream(
    config: SiteConfig,
    sc: Any,
    info: ModelInfo,
    rules: SourceRules,
    health: Health,
    queries: QuerySet | None,
    progress: Callable[[str, float], None] | None,
    clips: Any = None,
    captions: CaptionWorker | None = None,
) -> Stream:
    """One source's pipeline state: ring buffer, event tracker (and query tracker), level meter, rules, and the
    clip and caption feeds when those are on (at start, and for a source a reload adds)."""
    window, hop = window_sizes(config, info)
    buffer = RingBuffer(info.sample_rate, window, hop, config.window.max_backlog)
    tracker = EventTracker(sc.id, info.model_id, info.labels, rules.thresholds(), config.events.median_windows)
    tracker.on_progress = progress  # the query tracker sees the same windows: one hook per source is enough
    stream = Stream(sc.id, buffer, tracker, health.source(sc.id), rules=rules)
    if queries is not None:
        stream.query_tracker = queries.tracker(sc.id, info.model_id, config.events.median_windows)
    stream.meter = build_meter(sc, config.level, info.sample_rate, (buffer.capacity + hop) / info.sample_rate)
    stream.min_level_db = sc.min_level_db
    stream.health.silent_after_s = sc.silent_after_s
    if clips is not None:
        stream.clip_feed = clips.feed(sc.id)
    if captions is not None and config.captions is not None and sc.id in config.captioned_sources():
        stream.caption_feed = captions.feed(captions.ring(sc.id, config.captions.every_s))
    return stream


def build_source(sc: Any, info: ModelInfo, pipeline: Pipeline, stream: Stream) -> Source:
    """The source thread (not started) writing into ``stream``."""
    source = create_source(sc, info.sample_rate, pipeline.sink(stream), stream.health)
    if isinstance(source, FileSource):  # a file can wait for the pipeline; live audio cannot
        source.ready = _has_room(stream.buffer)
    return source


# Settings a reload does not apply (the engine stays open, the broker connection and trackers stay as they are).
RESTART_KEYS = ("site", "model", "engine", "window", "mqtt", "homeassistant", "control", "captions", "queries", "level", "console", "http", "clips")


def restart_keys(old: SiteConfig, new: SiteConfig) -> list[str]:
    """The changed settings that only a restart applies, as dotted keys (``mqtt.port``, ``engine``)."""
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    keys: list[str] = []
    for key in RESTART_KEYS:
        a, b = before.get(key), after.get(key)
        if a == b:
            continue
        if key in ("mqtt", "window") and isinstance(a, dict) and isinstance(b, dict):
            keys += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            keys.append(key)
    if before["events"]["median_windows"] != after["events"]["median_windows"]:
        keys.append("events.median_windows")
    if before["privacy"] != after["privacy"]:
        keys.append("privacy")
    return keys


class Reloader:
    """SIGHUP's work, on the main thread: re-read site.yaml and apply what can change without reopening the engine.

    Sources added are started and sources removed stopped (their open events closed, reason ``reload``;
    their states OFF and discovery configs cleared); a source whose settings changed is restarted; rules,
    thresholds, schedules, tags and the health limits are swapped in on the pipeline thread (remote-control changes are
    dropped: the file wins). Changes only a restart applies (``restart_keys``) are logged in one line and
    not applied; an invalid file is logged in one line and changes nothing.
    """

    def __init__(
        self,
        config: SiteConfig,
        path: Path | None,
        info: ModelInfo,
        pipeline: Pipeline,
        publishers: Sequence[Publisher],
        sources: list[Source],
        health: Health,
        queries: QuerySet | None,
        progress: Callable[[str, float], None] | None,
        privacy: PrivacyGate | None,
        clips: Any = None,
        checks: HealthChecks | None = None,
        captions: CaptionWorker | None = None,
    ):
        self.clips, self.checks, self.captions = clips, checks, captions
        self.config, self.path, self.info, self.pipeline, self.publishers = config, path, info, pipeline, list(publishers)
        self.sources, self.health, self.queries, self.progress, self.privacy = sources, health, queries, progress, privacy
        self.reloads = 0

    def reload(self) -> bool:
        """Apply the file now; False (one log line, nothing changed) when it cannot be read or is invalid."""
        from rtaudio.config.load import load_site_config
        from rtaudio.config.loader import ConfigError

        if self.path is None:
            return False
        try:
            new = load_site_config(self.path)
            new_rules = build_rules(new, self.info)
        except ConfigError as exc:
            more = f" (and {len(exc.problems) - 1} more problem(s))" if len(exc.problems) > 1 else ""
            log.error("reload: %s not applied, still running with the previous settings: %s%s", self.path, exc.problems[0] if exc.problems else exc, more)
            return False
        except (ValueError, OSError) as exc:
            log.error("reload: %s not applied, still running with the previous settings: %s", self.path, " ".join(str(exc).split()))
            return False
        pending = restart_keys(self.config, new)
        if pending:
            log.warning("reload: not applied until a restart: %s (everything else in %s was applied)", ", ".join(pending), self.path)
        old = {sc.id: sc for sc in self.config.sources if sc.enabled}
        wanted = {sc.id: sc for sc in new.sources if sc.enabled}
        remove = [sid for sid, sc in old.items() if sid not in wanted or wanted[sid].model_dump() != sc.model_dump()]
        add = [sid for sid, sc in wanted.items() if sid not in old or sid in remove]
        for sid in remove:  # stop the thread first, then the pipeline judges what it delivered and closes its events
            for source in [s for s in self.sources if s.config.id == sid]:
                source.stop()
                self.sources.remove(source)
            self.pipeline.call(functools.partial(self.pipeline.remove_stream, sid))
            self.health.sources.pop(sid, None)  # a source gone is not silent: health checks and /metrics forget it
        effective = new.model_copy(update={k: getattr(self.config, k) for k in RESTART_KEYS})
        effective = effective.model_copy(update={"privacy": self.config.privacy})
        if new.events.median_windows != self.config.events.median_windows:
            effective = effective.model_copy(update={"events": new.events.model_copy(update={"median_windows": self.config.events.median_windows})})
        new_rules = build_rules(effective, self.info)

        def swap() -> None:
            self.pipeline.tags_config = effective.tags
            self.pipeline.swap_rules(new_rules, "reload")

        self.pipeline.call(swap)
        if self.checks is not None:  # the health limits apply from the next check on (/healthz, watchdog, health message)
            self.checks.config = effective.health
        started = []
        for sid in add:
            sc = wanted[sid]
            stream = build_stream(effective, sc, self.info, new_rules[sid], self.health, self.queries, self.progress, self.clips, self.captions)
            self.pipeline.call(functools.partial(self.pipeline.add_stream, stream))
            source = build_source(sc, self.info, self.pipeline, stream)
            source.start()
            self.sources.append(source)
            started.append(sid)
        self._update_entities(effective)
        self.config = effective
        self.reloads += 1
        log.info(
            "reload: %s applied: %d source(s) running%s%s",
            self.path,
            len(self.sources),
            f", started {', '.join(started)}" if started else "",
            f", stopped {', '.join(s for s in remove if s not in started)}" if [s for s in remove if s not in started] else "",
        )
        return True

    def _update_entities(self, config: SiteConfig) -> None:
        keeper = mqtt_publisher(self.publishers)
        if keeper is not None:
            keeper.update_entities(state_entities(config, self.info))


def pid_path(config: SiteConfig) -> Path:
    """Where ``rtaudio run`` keeps its process id for ``rtaudio reload``: ``$XDG_RUNTIME_DIR/rtaudio-{site}.pid``,
    else the system temp dir (``rtaudio-{site}-{uid}.pid``: one per user)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / f"rtaudio-{config.site}.pid"
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"rtaudio-{config.site}-{uid}.pid"


def write_pid_file(config: SiteConfig) -> Path | None:
    """Write this process's id to ``pid_path`` (mode 0644); None (logged) when it cannot."""
    path = pid_path(config)
    try:
        path.write_text(f"{os.getpid()}\n")
    except OSError as exc:
        log.warning("cannot write the pid file %s (%s); rtaudio reload needs --pid", path, exc.strerror or exc)
        return None
    return path


def _remove_pid_file(path: Path) -> None:
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass


def mqtt_publisher(publishers: Sequence[Publisher]) -> MqttPublisher | None:
    """The site's MQTT publisher (there is at most one), or None without ``mqtt:``."""
    from rtaudio.runtime.publish.mqtt import MqttPublisher

    return next((p for p in publishers if isinstance(p, MqttPublisher)), None)


def attach_control(config: SiteConfig, pipeline: Pipeline, publishers: Sequence[Publisher]) -> Controller | None:
    """Remote control: the MQTT publisher's commands queue into a ``Controller`` that the pipeline drains at every tick."""
    keeper = mqtt_publisher(publishers)
    if keeper is None:
        return None
    controller = Controller(config.site, pipeline.rules, pipeline.swap_rules, keeper.ack, config.control.max_pending)
    keeper.on_command = controller.submit
    pipeline.hooks.append(controller.drain)
    log.info("control: accepting commands on %s (acks on %s)", keeper.set_topic, keeper.ack_topic)
    return controller


BROKER_WAIT_S = 2.0  # at start, the longest wait for the broker before the sources start


def wait_for_broker(publishers: Sequence[Publisher], timeout: float) -> None:
    """Give the MQTT connection up to ``timeout`` s before audio flows: state topics hold one unsent value per
    topic, so an event that begins and ends before the first OFF is sent would never show ON (its events still
    would). A broker that does not answer in time is logged and retried with backoff as ever; the site starts."""
    keeper = mqtt_publisher(publishers)
    if keeper is not None and not keeper.wait_ready(timeout):
        log.info("MQTT: no broker connection within %.0f s of start; starting the sources anyway (messages wait in the outbox)", timeout)


def close_interrupted_events(publishers: Sequence[Publisher]) -> Callable[[str, float], None] | None:
    """Publish the offsets of the events a killed previous run left open (the MQTT disk outbox
    keeps them) to every publisher; return the MQTT publisher's stream-time hook for this run's
    trackers (None without one). Call it before any source starts."""
    keeper = mqtt_publisher(publishers)
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


def _wait(
    stop: threading.Event,
    sources: list[Source],
    streams: list[Stream],
    duration_s: float | None,
    reload: threading.Event | None = None,
    on_reload: Callable[[], object] | None = None,
) -> None:
    deadline = time.monotonic() + duration_s if duration_s else None
    while not stop.wait(0.2):
        if deadline is not None and time.monotonic() >= deadline:
            return
        if reload is not None and reload.is_set() and on_reload is not None:
            reload.clear()
            try:
                on_reload()
            except Exception as exc:  # a reload that fails half-way (a new source that will not open) must not stop the site
                log.error("reload: failed part-way, the site keeps running with what was applied: %s", " ".join(str(exc).split()) or type(exc).__name__)
                log.debug("reload failed", exc_info=True)
        if not any(s.alive for s in sources) and not any(s.buffer.pending() for s in streams):
            log.info("every source has ended")
            return
