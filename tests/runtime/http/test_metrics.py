"""``/metrics`` over a real socket, read with prometheus-client's own text parser: names, labels and values
follow the ``Health`` record the test fills in, histograms are cumulative and in seconds, every metric is
documented in docs/metrics.md, and MQTT health, ``/metrics`` and ``/healthz`` agree."""

from __future__ import annotations

import json
import math
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rtaudio.config.site import HealthConfig, HttpConfig
from rtaudio.runtime.checks import HealthChecks
from rtaudio.runtime.health import Health
from rtaudio.runtime.http.server import HttpServer

DOCS = Path(__file__).parents[3] / "docs" / "metrics.md"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Site:
    """A Health, its HealthChecks and an HttpServer serving them on a free loopback port."""

    def __init__(self, mqtt: bool, clock: list[float] | None = None):
        self.health = Health(engine="onnxruntime", started=1000.0 if clock else Health().started)
        now = (lambda: clock[0]) if clock else None
        self.checks = HealthChecks(HealthConfig(source_silent_s=5), self.health, mqtt=mqtt, **({"clock": now} if now else {}))
        config = HttpConfig().model_copy(update={"listen": "127.0.0.1:0"})
        self.server = HttpServer(config, self.health, self.checks)
        self.server.start()
        self.base = f"http://127.0.0.1:{self.server.address[1]}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read()

    def scrape(self) -> tuple[dict[str, str], Samples]:
        """({family name: type}, {(sample name, sorted labels): value}) of one scrape."""
        status, body = self.get("/metrics")
        assert status == 200
        types: dict[str, str] = {}
        samples: Samples = {}
        for family in text_string_to_metric_families(body.decode()):
            types[family.name] = family.type
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return types, samples


@pytest.fixture
def site() -> Iterator[Site]:
    made = Site(mqtt=True)
    yield made
    made.server.close()


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_counters_and_gauges_follow_health_at_each_scrape(site: Site) -> None:
    lobby, yard = site.health.source("lobby"), site.health.source("yard")
    lobby.windows_processed, yard.windows_processed, yard.windows_dropped = 5, 7, 2
    lobby.packets_lost, lobby.restarts, lobby.level_dbfs, lobby.connected = 3, 1, -31.5, True
    lobby.events_opened["glass_break"] = 2
    types, samples = site.scrape()
    assert types["rtaudio_windows"] == "counter" and types["rtaudio_input_level_dbfs"] == "gauge"
    assert value(samples, "rtaudio_windows_total", source="lobby") == 5 and value(samples, "rtaudio_windows_total", source="yard") == 7
    assert value(samples, "rtaudio_windows_dropped_total", source="yard") == 2
    assert value(samples, "rtaudio_packets_lost_total", source="lobby") == 3 and value(samples, "rtaudio_source_restarts_total", source="lobby") == 1
    assert value(samples, "rtaudio_input_level_dbfs", source="lobby") == -31.5
    assert value(samples, "rtaudio_source_connected", source="lobby") == 1 and value(samples, "rtaudio_source_connected", source="yard") == 0
    assert value(samples, "rtaudio_events_opened_total", source="lobby", label="glass_break") == 2
    assert value(samples, "rtaudio_engine_info", backend="onnxruntime") == 1

    lobby.windows_processed += 4  # as the pipeline does between scrapes
    lobby.events_opened["glass_break"] += 1
    lobby.events_opened["dog_bark"] = 1
    site.health.batches, site.health.errors = 10, 1
    _, samples = site.scrape()
    assert value(samples, "rtaudio_windows_total", source="lobby") == 9
    assert value(samples, "rtaudio_events_opened_total", source="lobby", label="glass_break") == 3
    assert value(samples, "rtaudio_events_opened_total", source="lobby", label="dog_bark") == 1
    assert value(samples, "rtaudio_inference_batches_total") == 10 and value(samples, "rtaudio_inference_errors_total") == 1


def test_histograms_are_cumulative_and_in_seconds(site: Site) -> None:
    lobby = site.health.source("lobby")
    for ms in (3.0, 7.0, 30.0, 20000.0):
        lobby.latency_ms.add(ms)
    for ms in (12.0, 12.0):
        site.health.inference_ms.add(ms)
    for size in (1, 3, 3, 8):
        site.health.batch_sizes.add(size)
    types, samples = site.scrape()
    assert types["rtaudio_capture_to_publish_seconds"] == "histogram"

    def buckets(name: str, **labels: str) -> list[tuple[float, float]]:
        return sorted(
            (float(dict(k[1])["le"]), v) for k, v in samples.items() if k[0] == f"{name}_bucket" and all(dict(k[1]).get(a) == b for a, b in labels.items())
        )

    latency = buckets("rtaudio_capture_to_publish_seconds", source="lobby")
    assert latency == [(0.005, 1), (0.01, 2), (0.025, 2), (0.05, 3), (0.1, 3), (0.25, 3), (0.5, 3), (1.0, 3), (2.5, 3), (5.0, 3), (10.0, 3), (math.inf, 4)]
    assert value(samples, "rtaudio_capture_to_publish_seconds_count", source="lobby") == 4
    assert value(samples, "rtaudio_capture_to_publish_seconds_sum", source="lobby") == pytest.approx(20.040)
    inference = buckets("rtaudio_inference_seconds")
    assert inference[:3] == [(0.005, 0), (0.01, 0), (0.025, 2)] and value(samples, "rtaudio_inference_seconds_sum") == pytest.approx(0.024)
    sizes = buckets("rtaudio_inference_batch_size")
    assert sizes[:4] == [(1.0, 1), (2.0, 1), (4.0, 3), (8.0, 4)] and value(samples, "rtaudio_inference_batch_size_sum") == 15
    for name in ("rtaudio_capture_to_publish_seconds", "rtaudio_caption_latency_seconds", "rtaudio_inference_seconds", "rtaudio_inference_batch_size"):
        counts = [count for _, count in buckets(name)]
        assert counts == sorted(counts), name  # cumulative: never decreasing

    lobby.latency_ms.add(4.0)
    _, samples = site.scrape()
    assert value(samples, "rtaudio_capture_to_publish_seconds_bucket", source="lobby", le="0.005") == 2
    assert value(samples, "rtaudio_capture_to_publish_seconds_count", source="lobby") == 5


def test_mqtt_metrics_only_with_mqtt() -> None:
    with_mqtt, without = Site(mqtt=True), Site(mqtt=False)
    try:
        with_mqtt.health.broker_connected, with_mqtt.health.outbox_depth, with_mqtt.health.broker_reconnects = True, 12, 2
        with_mqtt.health.messages_dropped.update({"tags": 4, "level": 1})
        _, samples = with_mqtt.scrape()
        assert value(samples, "rtaudio_mqtt_connected") == 1 and value(samples, "rtaudio_mqtt_outbox_messages") == 12
        assert value(samples, "rtaudio_mqtt_reconnects_total") == 2
        assert (
            value(samples, "rtaudio_mqtt_messages_dropped_total", kind="tags") == 4 and value(samples, "rtaudio_mqtt_messages_dropped_total", kind="level") == 1
        )
        assert value(samples, "rtaudio_health_check_failing", check="outbox_full", source="") == 0
        types, samples = without.scrape()
        assert not [name for name in types if name.startswith("rtaudio_mqtt")]
        assert ("rtaudio_health_check_failing", (("check", "outbox_full"), ("source", ""))) not in samples
    finally:
        with_mqtt.server.close()
        without.server.close()


def test_process_and_platform_metrics(site: Site) -> None:
    types, samples = site.scrape()
    assert "python_info" in types
    assert value(samples, "rtaudio_threads") >= threading.active_count()
    if Path("/proc/self/stat").exists():
        assert value(samples, "process_resident_memory_bytes") > 10_000_000 and value(samples, "process_open_fds") > 0


def test_health_on_mqtt_metrics_and_healthz_agree() -> None:
    clock = [1000.0]
    site = Site(mqtt=True, clock=clock)
    try:
        lobby = site.health.source("lobby")
        lobby.last_data, lobby.windows_processed, lobby.windows_dropped = 1000.0, 42, 3
        site.health.messages_dropped["events"] = 2
        for now, healthy in ((1002.0, True), (1010.0, False)):
            clock[0] = now
            site.health.checks = site.checks.failing()  # as the site does before each MQTT health message
            mqtt = site.health.snapshot()
            status, body = site.get("/healthz")
            _, samples = site.scrape()
            assert mqtt["healthy"] is healthy and (status == 200) is healthy and value(samples, "rtaudio_healthy") == healthy
            assert mqtt["failing"] == json.loads(body)["checks"]
            assert value(samples, "rtaudio_health_check_failing", check="source_silent", source="lobby") == (not healthy)
            source = mqtt["sources"]["lobby"]
            assert value(samples, "rtaudio_windows_total", source="lobby") == source["windows_processed"] == 42
            assert value(samples, "rtaudio_windows_dropped_total", source="lobby") == source["windows_dropped"] == 3
            assert value(samples, "rtaudio_mqtt_messages_dropped_total", kind="events") == mqtt["messages_dropped"]["events"] == 2
    finally:
        site.server.close()


def test_every_metric_is_documented_and_every_documented_metric_exists() -> None:
    site = Site(mqtt=True)
    try:
        lobby = site.health.source("lobby")
        lobby.events_opened["glass_break"] = 1
        site.health.busy_fraction = 0.25
        site.health.messages_dropped["tags"] = 1
        site.checks.started = True
        types, _ = site.scrape()
    finally:
        site.server.close()
    exported = {f"{name}_total" if kind == "counter" else name for name, kind in types.items() if name.startswith("rtaudio_")}
    documented = dict(re.findall(r"^\| `(rtaudio_\w+)` \| (\w+) \|", DOCS.read_text(), flags=re.M))
    assert set(documented) == exported
    assert {
        name: ("counter" if name.endswith("_total") and types.get(name[: -len("_total")]) == "counter" else types[name]) for name in documented
    } == documented
