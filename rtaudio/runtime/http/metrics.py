"""``/metrics``: a prometheus-client ``Collector`` that reads the ``Health`` record at scrape time.

Nothing here counts: the sources, the pipeline and the publishers bump ``Health`` as they always
have, and each scrape turns the current values into metric families. So the MQTT health message,
``/metrics`` and ``/healthz`` read the same counters and cannot disagree. Names follow Prometheus
conventions: ``rtaudio_..._total`` counters, base units (seconds, not the ms the reservoirs keep).
Every metric is documented in docs/metrics.md; keep the two together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from rtaudio.runtime.checks import HealthChecks
from rtaudio.runtime.health import Health, Percentiles

# (attribute of SourceHealth, metric name, help): per-source counters, label {source}
SOURCE_COUNTERS = (
    ("windows_processed", "rtaudio_windows", "Windows inferred (processed) per source."),
    ("windows_dropped", "rtaudio_windows_dropped", "Windows dropped from the source's full ring buffer before inference."),
    ("windows_gated", "rtaudio_windows_gated", "Windows quieter than the source's min_level_db: counted, not inferred."),
    ("levels_dropped", "rtaudio_levels_dropped", "Level readings the pipeline thread did not take in time."),
    ("samples", "rtaudio_samples", "Audio samples received (at the model's sample rate)."),
    ("packets_lost", "rtaudio_packets_lost", "RTP packets never received (sequence gaps)."),
    ("packets_late", "rtaudio_packets_late", "RTP packets that arrived after their place was played."),
    ("packets_malformed", "rtaudio_packets_malformed", "RTP packets unparseable, of a payload type not decoded, or with a lone wild sequence number."),
    ("packets_rejected", "rtaudio_packets_rejected", "RTP packets from a sender not in allow_from."),
    ("packets_duplicate", "rtaudio_packets_duplicate", "RTP packets whose sequence number was already buffered."),
    ("discontinuities", "rtaudio_stream_discontinuities", "New RTP streams after the first (SSRC change, sequence or timestamp jump)."),
    ("restarts", "rtaudio_source_restarts", "Reopens, reconnects or restarts of the source's device, socket or process."),
    ("errors", "rtaudio_source_errors", "Errors of the source (each followed by a restart with backoff)."),
    ("captions_published", "rtaudio_captions_published", "Captions published."),
    ("captions_dropped", "rtaudio_captions_dropped", "Caption jobs dropped from the full caption queue (or left at shutdown)."),
    ("captions_withheld", "rtaudio_captions_withheld", "Captions not made: a private label active on the source, or the source paused."),
    ("clips_saved", "rtaudio_clips_saved", "Event clips written."),
    ("clips_dropped", "rtaudio_clips_dropped", "Event clips not written: disk full, directory unwritable, ring overrun."),
)

# the checks of runtime.checks that /metrics reports as 0 or 1 even while they pass, so an alert has a series to watch
SITE_CHECKS = ("engine_failing",)
MQTT_CHECKS = ("mqtt_disconnected", "outbox_full")


def histogram_buckets(values: Percentiles, per_unit: float = 1.0) -> tuple[list[tuple[str, float]], float]:
    """``values``' cumulative histogram as prometheus-client buckets ``[(le, count), ..., ("+Inf", n)]``
    and its sum, each bound and the sum divided by ``per_unit`` (1000: ms to seconds)."""
    buckets, _count, total = values.histogram()
    return [(floatToGoString(bound / per_unit), float(count)) for bound, count in buckets], total / per_unit


def os_threads() -> int:
    """Threads of this process as the OS counts them (native ones included); Python's count off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return threading.active_count()


class HealthCollector(Collector):
    """Every rtaudio metric, built from ``health`` (and ``checks``) on each scrape.

    ``mqtt``: export the MQTT metrics (default: ``checks.mqtt``, or True without checks).
    Reads only; never blocks the threads that write ``health``.
    """

    def __init__(self, health: Health, checks: HealthChecks | None = None, mqtt: bool | None = None):
        self.health, self.checks = health, checks
        self.mqtt = mqtt if mqtt is not None else (checks.mqtt if checks is not None else True)

    def collect(self) -> Iterator[Metric]:
        yield from self._sources()
        yield from self._engine()
        if self.mqtt:
            yield from self._mqtt()
        yield from self._health()
        threads = GaugeMetricFamily("rtaudio_threads", "Threads of the rtaudio process (OS threads, native ones included).")
        threads.add_metric([], os_threads())
        yield threads

    def _sources(self) -> Iterator[Metric]:
        health, now = self.health, time.time()
        sources = sorted(list(health.sources.items()))
        counters = {attr: CounterMetricFamily(name, doc, labels=["source"]) for attr, name, doc in SOURCE_COUNTERS}
        level = GaugeMetricFamily("rtaudio_input_level_dbfs", "RMS level of the latest block of audio, dBFS (-120 when silent or none yet).", labels=["source"])
        connected = GaugeMetricFamily(
            "rtaudio_source_connected", "1 while the source delivers audio (device open, stream received), else 0.", labels=["source"]
        )
        silence = GaugeMetricFamily(
            "rtaudio_seconds_since_audio", "Seconds since the source's latest audio (since start when none has come yet).", labels=["source"]
        )
        limit = GaugeMetricFamily("rtaudio_source_silent_limit_seconds", "The silence after which /healthz fails for this source.", labels=["source"])
        events = CounterMetricFamily("rtaudio_events_opened", "Events opened (onsets published), by label or query name.", labels=["source", "label"])
        latency = HistogramMetricFamily(
            "rtaudio_capture_to_publish_seconds", "Capture of a window's last sample to its tags being published.", labels=["source"]
        )
        caption_latency = HistogramMetricFamily("rtaudio_caption_latency_seconds", "Caption job queued to caption published.", labels=["source"])
        for source_id, source in sources:
            for attr, _name, _doc in SOURCE_COUNTERS:
                counters[attr].add_metric([source_id], getattr(source, attr))
            level.add_metric([source_id], source.level_dbfs)
            connected.add_metric([source_id], 1.0 if source.connected else 0.0)
            silence.add_metric([source_id], source.silent_s(now, health.started))
            source_limit = self.checks.silence_limit(source) if self.checks is not None else source.silent_after_s
            if source_limit is not None:
                limit.add_metric([source_id], source_limit)
            for label, count in sorted(dict(source.events_opened).items()):
                events.add_metric([source_id, label], count)
            latency.add_metric([source_id], *histogram_buckets(source.latency_ms, 1000))
            caption_latency.add_metric([source_id], *histogram_buckets(source.caption_latency_ms, 1000))
        yield from counters.values()
        yield from (level, connected, silence, limit, events, latency, caption_latency)

    def _engine(self) -> Iterator[Metric]:
        health = self.health
        info = GaugeMetricFamily("rtaudio_engine_info", "The inference backend in use (always 1; the backend is the label).", labels=["backend"])
        info.add_metric([health.engine or "none"], 1)
        yield info
        inference = HistogramMetricFamily("rtaudio_inference_seconds", "Wall time of one inference call (one batch).")
        inference.add_metric([], *histogram_buckets(health.inference_ms, 1000))
        yield inference
        sizes = HistogramMetricFamily("rtaudio_inference_batch_size", "Windows per inference batch (bucket bounds are window counts).")
        sizes.add_metric([], *histogram_buckets(health.batch_sizes))
        yield sizes
        yield CounterMetricFamily("rtaudio_inference_batches", "Inference batches run.", value=health.batches)
        yield CounterMetricFamily("rtaudio_inference_errors", "Inference batches that failed.", value=health.errors)
        yield CounterMetricFamily("rtaudio_inference_busy_seconds", "Time spent inside inference calls.", value=health.busy_s)
        yield CounterMetricFamily(
            "rtaudio_pipeline_busy_seconds", "Wall time the pipeline thread spent on batches (gather, inference, dispatch).", value=health.pipeline_busy_s
        )
        yield CounterMetricFamily(
            "rtaudio_audio_inferred_seconds", "Audio seconds covered by the windows inferred (one hop each), summed over sources.", value=health.audio_s
        )
        if health.busy_fraction is not None:
            busy = GaugeMetricFamily("rtaudio_pipeline_busy_ratio", "Share of wall time the pipeline thread was busy over the latest health interval (0-1).")
            busy.add_metric([], health.busy_fraction)
            yield busy

    def _mqtt(self) -> Iterator[Metric]:
        health = self.health
        connected = GaugeMetricFamily("rtaudio_mqtt_connected", "1 while connected to the MQTT broker, else 0.")
        connected.add_metric([], 1.0 if health.broker_connected else 0.0)
        yield connected
        depth = GaugeMetricFamily("rtaudio_mqtt_outbox_messages", "MQTT messages waiting in the outbox to be sent.")
        depth.add_metric([], health.outbox_depth)
        yield depth
        dropped = CounterMetricFamily("rtaudio_mqtt_messages_dropped", "MQTT messages dropped (outbox full, expired), by message kind.", labels=["kind"])
        for kind, count in sorted(dict(health.messages_dropped).items()):
            dropped.add_metric([kind], count)
        yield dropped
        yield CounterMetricFamily("rtaudio_mqtt_reconnects", "Connections to the broker after the first.", value=health.broker_reconnects)

    def _health(self) -> Iterator[Metric]:
        failing = self.checks.failing() if self.checks is not None else list(self.health.checks)
        healthy = GaugeMetricFamily("rtaudio_healthy", "1 when every health check passes (/healthz answers 200), else 0.")
        healthy.add_metric([], 0.0 if failing else 1.0)
        yield healthy
        per_check = GaugeMetricFamily(
            "rtaudio_health_check_failing", "1 while the named check fails, else 0; source is empty for site-wide checks.", labels=["check", "source"]
        )
        series: dict[tuple[str, str], float] = {("source_silent", source_id): 0.0 for source_id in list(self.health.sources)}
        series.update({(check, ""): 0.0 for check in SITE_CHECKS + (MQTT_CHECKS if self.mqtt else ())})
        for failure in failing:
            series[(str(failure["check"]), str(failure.get("source", "")))] = 1.0
        for (check, source_id), value in sorted(series.items()):
            per_check.add_metric([check, source_id], value)
        yield per_check
        if self.checks is not None:
            ready = GaugeMetricFamily("rtaudio_ready", "1 when /readyz answers 200 (engine running, every source has delivered audio), else 0.")
            ready.add_metric([], 0.0 if self.checks.unready() else 1.0)
            yield ready


def build_registry(health: Health, checks: HealthChecks | None = None, mqtt: bool | None = None) -> CollectorRegistry:
    """A fresh registry (never the global one) with rtaudio's collector, the process (RSS, CPU, fds) and the platform (Python version)."""
    registry = CollectorRegistry()
    registry.register(HealthCollector(health, checks, mqtt))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
