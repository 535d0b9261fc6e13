"""State topics and Home Assistant discovery: the payloads (pure), the latest-value store, and the
publisher and the whole daemon against a real mosquitto and a real paho subscriber."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml

from rtaudio.config.load import load_site_config
from rtaudio.config.site import HomeAssistantConfig, MqttConfig
from rtaudio.contract import load_model_dir
from rtaudio.runtime.events import Event
from rtaudio.runtime.publish import homeassistant as ha
from rtaudio.runtime.publish.mqtt import MqttPublisher
from rtaudio.runtime.publish.retained import RetainedTopics
from rtaudio.runtime.site import state_entities
from tests.helpers import REPO, Broker, Subscriber, demo_site, run_rtaudio, wait_until

SITE, MODEL, VERSION = "hq", "default", "0.6.0"
STATUS = f"rtaudio/{SITE}/status"
DEFAULT_LABELS = tuple(load_model_dir(REPO / "engines" / "default").info.labels)


def messages(sources: list[ha.SourceEntities], version: str = VERSION) -> list[ha.Discovery]:
    return ha.discovery_messages("homeassistant", "rtaudio", SITE, MODEL, version, sources, STATUS)


def lobby(labels: tuple[str, ...] = DEFAULT_LABELS, **kw: Any) -> ha.SourceEntities:
    return ha.SourceEntities("lobby", labels, **kw)


# ------------------------------------------------------------ payloads (pure)


def test_device_classes_are_home_assistants_and_fit_the_labels() -> None:
    for name in (*DEFAULT_LABELS, "water_leak", "anything"):
        assert ha.device_class(name) in ha.BINARY_SENSOR_DEVICE_CLASSES, name
    assert ha.device_class("smoke_alarm") == "smoke"
    assert ha.device_class("co_alarm") == "carbon_monoxide"
    assert ha.device_class("glass_break") == "safety"
    assert ha.device_class("water_running") == "moisture"
    assert ha.device_class("water_leak") == "moisture"  # a query name
    assert ha.device_class("speech") == "sound"


def test_every_source_gets_a_device_with_a_binary_sensor_per_label_and_query_a_level_and_a_caption_sensor() -> None:
    sources = [lobby(queries=("water_leak",), captions=True), ha.SourceEntities("hall", ("speech", "smoke_alarm"))]
    found = messages(sources)
    by_topic = {m.topic: m.payload for m in found}
    assert len(by_topic) == len(found) == (len(DEFAULT_LABELS) + 1 + 2) + (2 + 1)
    smoke = by_topic["homeassistant/binary_sensor/rtaudio_hq/lobby_smoke_alarm/config"]
    assert smoke["state_topic"] == "rtaudio/hq/lobby/state/smoke_alarm"
    assert (smoke["payload_on"], smoke["payload_off"], smoke["device_class"]) == ("ON", "OFF", "smoke")
    assert smoke["unique_id"] == "rtaudio_hq_lobby_smoke_alarm"
    assert smoke["device"] == {"identifiers": ["rtaudio_hq_lobby"], "name": "lobby (hq)", "manufacturer": "rtaudio", "model": MODEL, "sw_version": VERSION}
    query = by_topic["homeassistant/binary_sensor/rtaudio_hq/lobby_water_leak/config"]
    assert (query["state_topic"], query["device_class"]) == ("rtaudio/hq/lobby/state/water_leak", "moisture")
    level = by_topic["homeassistant/sensor/rtaudio_hq/lobby_level/config"]
    assert level["state_topic"] == "rtaudio/hq/lobby/level" and level["value_template"] == "{{ value_json.leq_db }}"
    assert (level["device_class"], level["unit_of_measurement"], level["state_class"]) == ("sound_pressure", "dB", "measurement")
    caption = by_topic["homeassistant/sensor/rtaudio_hq/lobby_caption/config"]
    assert caption["state_topic"] == "rtaudio/hq/lobby/caption" and "caption" in caption["value_template"]
    assert "homeassistant/sensor/rtaudio_hq/hall_caption/config" not in by_topic  # hall is not captioned
    for topic, payload in by_topic.items():
        assert topic.startswith("homeassistant/") and mqtt.topic_matches_sub(ha.discovery_filter("homeassistant", SITE), topic)
        assert (payload["availability_topic"], payload["payload_available"], payload["payload_not_available"]) == (STATUS, "online", "offline")
        assert isinstance(payload["state_topic"], str) and "state_topics" not in payload  # one state topic per entity
        json.dumps(payload)
        if "/binary_sensor/" in topic:  # no units on binary sensors; their classes are binary_sensor classes
            assert "unit_of_measurement" not in payload and payload["device_class"] in ha.BINARY_SENSOR_DEVICE_CLASSES
        elif "device_class" in payload:  # a numeric class only on the numeric sensor, with a unit HA accepts for it
            assert payload["device_class"] in ha.NUMERIC_SENSOR_DEVICE_CLASSES and payload["unit_of_measurement"] in ha.SOUND_PRESSURE_UNITS
            assert payload["state_class"] == "measurement"
        else:
            assert "unit_of_measurement" not in payload and "state_class" not in payload  # the caption is text


def test_topics_and_unique_ids_are_unique_and_stable_across_restarts_and_model_versions() -> None:
    first = messages([lobby(queries=("leak",), captions=True)])
    again = messages([lobby(queries=("leak",), captions=True)], version="0.7.0")
    assert [m.topic for m in first] == [m.topic for m in again]
    assert [m.payload["unique_id"] for m in first] == [m.payload["unique_id"] for m in again]
    assert len({m.payload["unique_id"] for m in first}) == len(first)
    fewer = messages([lobby(DEFAULT_LABELS[1:], queries=("leak",), captions=True)])
    assert {m.payload["unique_id"] for m in fewer} < {m.payload["unique_id"] for m in first}  # removing a label renames nothing


def test_ids_that_would_collide_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="two entities would share .*a_b_c"):
        messages([ha.SourceEntities("a_b", ("c",)), ha.SourceEntities("a", ("b_c",))])


def test_stale_topics_are_those_found_and_no_longer_wanted() -> None:
    assert ha.stale_topics(["x", "y", "z", "y"], ["y", "w"]) == ["x", "z"]


def test_retained_topics_keep_the_latest_value_and_a_short_pulse() -> None:
    store = RetainedTopics()
    store.set("a", b"OFF")
    store.set("a", b"OFF")
    assert store.take(10) == [("a", b"OFF")]
    store.set("a", b"OFF")  # already sent: nothing to do
    assert store.pending() == 0
    store.set("a", b"ON")
    store.set("a", b"OFF")  # a pulse not yet sent: both go, in order
    assert store.take(1) == [("a", b"ON")] and store.take(5) == [("a", b"OFF")]
    store.set("a", b"ON")
    store.set("a", b"OFF")
    store.set("a", b"ON")  # ON, OFF, ON collapses to ON
    store.set("b", b"x")
    assert store.take(10) == [("a", b"ON"), ("b", b"x")]
    store.mark(["a", "nope"])
    store.retry("b")
    assert store.take(10) == [("a", b"ON"), ("b", b"x")] and store.get("a") == b"ON"


def test_state_entities_follow_the_rules_queries_and_captions(tmp_path: Path) -> None:
    site = {
        "site": SITE,
        "model": str(REPO / "engines" / "default"),
        "sources": [
            {"id": "lobby", "type": "file", "path": str(REPO / "config" / "demo.flac")},
            {"id": "off", "type": "file", "path": str(REPO / "config" / "demo.flac"), "enabled": False},
        ],
        "events": {"labels": {"speech": {"enabled": False}}},
        "mqtt": None,
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    config = load_site_config(path)
    info = load_model_dir(config.model).info
    [entities] = state_entities(config, info)
    assert entities.source == "lobby" and "speech" not in entities.labels and entities.labels == tuple(x for x in info.labels if x != "speech")
    assert entities.queries == () and not entities.captions


# ------------------------------------------------------------ the publisher against mosquitto


def _event(kind: str, label: str, t: float, reason: Any = None) -> Event:
    return Event(kind, f"ev-{label}", "lobby", MODEL, label, t, None if kind == "onset" else t + 1, 0.9, 0.8, 3, reason=reason)  # type: ignore[arg-type]


def _retained(broker: Broker, topic: str, sure: str) -> dict[str, bytes]:
    """What the broker keeps retained under ``topic`` now, read by a fresh subscriber; ``sure`` is one
    topic known to be kept: the broker sends them all in one burst after the SUBACK."""
    reader = Subscriber(broker, topic)
    try:
        assert wait_until(lambda: any(m.topic == sure for m in reader.messages)), sure
        time.sleep(0.2)  # the rest of the burst
        return {m.topic: bytes(m.payload) for m in reader.messages if m.retain}
    finally:
        reader.close()


@pytest.mark.integration
def test_states_follow_events_and_discovery_is_published_refreshed_and_cleared(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "mosquitto").start()
    cfg = MqttConfig(broker=broker.host, port=broker.port, reconnect_max_s=1.0)
    on = HomeAssistantConfig(discovery=True)
    labels = ("speech", "smoke_alarm", "glass_break")
    sub = Subscriber(broker, "#")
    publisher = MqttPublisher(cfg, SITE, None, MODEL, [lobby(labels, queries=("leak",)), ha.SourceEntities("hall", ("speech",))], on, VERSION)
    try:
        publisher.start()
        configs = {m.topic for m in publisher.discovery}
        assert len(configs) == (3 + 1 + 1) + (1 + 1)
        assert sub.wait_for(lambda: configs <= {m.topic for m in sub.messages}), sorted(configs - {m.topic for m in sub.messages})
        states = [f"rtaudio/hq/lobby/state/{n}" for n in (*labels, "leak")] + ["rtaudio/hq/hall/state/speech"]
        assert sub.wait_for(lambda: all(sub.on(t) for t in states))
        assert all(m.payload == b"OFF" and m.qos == 1 for t in states for m in sub.on(t))
        smoke = "rtaudio/hq/lobby/state/smoke_alarm"
        publisher.event(_event("onset", "smoke_alarm", time.time()))
        assert sub.wait_for(lambda: [m.payload for m in sub.on(smoke)] == [b"OFF", b"ON"])
        publisher.event(_event("offset", "smoke_alarm", time.time()))
        assert sub.wait_for(lambda: [m.payload for m in sub.on(smoke)] == [b"OFF", b"ON", b"OFF"])
        publisher.event(_event("onset", "leak", time.time()))  # a query's state follows its events too
        assert sub.wait_for(lambda: sub.on("rtaudio/hq/lobby/state/leak")[-1:] and sub.on("rtaudio/hq/lobby/state/leak")[-1].payload == b"ON")
        # Home Assistant restarts: its birth message brings every config again
        before = len(sub.on(next(iter(configs))))
        sub.client.publish("homeassistant/status", b"online", 1)
        assert sub.wait_for(lambda: all(len(sub.on(t)) > before for t in configs))
    finally:
        publisher.close(5)
    assert sub.wait_for(lambda: sub.on("rtaudio/hq/lobby/state/leak")[-1].payload == b"OFF")  # a clean stop turns every state OFF
    sub.close()
    kept = _retained(broker, "#", STATUS)
    assert {t: v for t, v in kept.items() if "/state/" in t} == {t: b"OFF" for t in states}
    assert configs <= set(kept) and kept[STATUS] == b"offline"

    # The next start drops the hall source and the glass_break label: their configs are cleared
    sub = Subscriber(broker, "homeassistant/#")
    second = MqttPublisher(cfg, SITE, None, MODEL, [lobby(("speech", "smoke_alarm"), queries=("leak",))], on, VERSION)
    try:
        second.start()
        gone = {
            "homeassistant/binary_sensor/rtaudio_hq/lobby_glass_break/config",
            "homeassistant/binary_sensor/rtaudio_hq/hall_speech/config",
            "homeassistant/sensor/rtaudio_hq/hall_level/config",
        }
        assert sub.wait_for(lambda: all(any(m.payload == b"" for m in sub.on(t)) for t in gone), timeout=20)
    finally:
        second.close(5)
        sub.close()
    kept = _retained(broker, "homeassistant/#", second.discovery[-1].topic)
    assert set(kept) == {m.topic for m in second.discovery} and not gone & set(kept)
    broker.stop()


@pytest.mark.integration
def test_without_discovery_states_are_published_and_nothing_under_the_ha_prefix(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "mosquitto").start()
    sub = Subscriber(broker, "#")
    publisher = MqttPublisher(MqttConfig(broker=broker.host, port=broker.port), SITE, None, MODEL, [lobby(("speech",))])
    try:
        publisher.start()
        assert sub.wait_for(lambda: sub.on("rtaudio/hq/lobby/state/speech"))
        publisher.event(_event("onset", "speech", time.time()))
        publisher.event(_event("offset", "speech", time.time(), reason="restart"))  # closed at a restart: OFF as well
        assert sub.wait_for(lambda: [m.payload for m in sub.on("rtaudio/hq/lobby/state/speech")] == [b"OFF", b"ON", b"OFF"])
        assert publisher.state("lobby", "speech") == "OFF"
    finally:
        publisher.close(2)
        sub.close()
        broker.stop()
    assert not [m for m in sub.messages if m.topic.startswith("homeassistant/")]


# ------------------------------------------------------------ the daemon: demo audio through the default model


def _site(tmp_path: Path, broker: Broker, sources: list[str], disabled: tuple[str, ...] = ()) -> Path:
    return demo_site(tmp_path / f"site-{len(sources)}.yaml", broker, sources, disabled, source={"realtime": False}, homeassistant={"discovery": True})


@pytest.mark.integration
def test_demo_audio_drives_states_and_a_second_start_clears_what_was_removed(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "mosquitto").start()
    sub = Subscriber(broker, "#")
    try:
        done = run_rtaudio("run", "--config", str(_site(tmp_path, broker, ["demo", "hall"])), timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        events = [json.loads(m.payload) for m in sub.on("rtaudio/demo/demo/events")]
        onsets = {e["label"] for e in events if e["kind"] == "onset"}
        assert onsets, "the demo recording should trigger events"
        for label in onsets:  # each label heard went ON, then OFF (at its offset or at the stop)
            values = [m.payload for m in sub.on(f"rtaudio/demo/demo/state/{label}")]
            assert values[0] == b"OFF" and b"ON" in values and values[-1] == b"OFF", (label, values)
            assert values.index(b"ON") < len(values) - 1
        configs = {m.topic for m in sub.messages if m.topic.startswith("homeassistant/") and m.payload}
        for source in ("demo", "hall"):
            for label in DEFAULT_LABELS:
                assert f"homeassistant/binary_sensor/rtaudio_demo/{source}_{label}/config" in configs, (source, label)
            assert f"homeassistant/sensor/rtaudio_demo/{source}_level/config" in configs
        smoke = next(json.loads(m.payload) for m in sub.messages if m.topic == "homeassistant/binary_sensor/rtaudio_demo/demo_smoke_alarm/config")
        assert smoke["availability_topic"] == "rtaudio/demo/status" and smoke["device_class"] == "smoke"
        sub.messages.clear()

        done = run_rtaudio("run", "--config", str(_site(tmp_path, broker, ["demo"], disabled=("smoke_alarm",))), timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        cleared = {m.topic for m in sub.messages if m.topic.startswith("homeassistant/") and m.payload == b""}
        assert "homeassistant/binary_sensor/rtaudio_demo/demo_smoke_alarm/config" in cleared
        assert {f"homeassistant/binary_sensor/rtaudio_demo/hall_{label}/config" for label in DEFAULT_LABELS} <= cleared
        assert "homeassistant/sensor/rtaudio_demo/hall_level/config" in cleared
        assert "homeassistant/binary_sensor/rtaudio_demo/demo_speech/config" not in cleared
    finally:
        sub.close()
    kept = _retained(broker, "homeassistant/#", "homeassistant/binary_sensor/rtaudio_demo/demo_speech/config")
    assert not [t for t in kept if "/hall_" in t or t.endswith("demo_smoke_alarm/config")]
    broker.stop()
