"""Home Assistant MQTT discovery: the retained config payloads that make each source a device.

Pure functions, no I/O: ``MqttPublisher`` publishes what ``discovery_messages`` returns (retained),
republishes it when Home Assistant's birth message (``{ha prefix}/status`` = ``online``) arrives,
and clears (empty retained payload) every config it finds under ``discovery_filter`` that the
current site no longer wants (``stale_topics``). See docs/mqtt.md, "Home Assistant discovery".

Layout: ``{ha prefix}/{component}/rtaudio_{site}/{source}_{object}/config``. The node id holds the
site, so one wildcard subscription finds every config this site ever published. One HA device per
source; per reported label and per enabled free-text query a ``binary_sensor`` on its state topic
(``{prefix}/{site}/{source}/state/{label}``, ``ON``/``OFF``); a ``sensor`` for the sound level and,
for captioned sources, one for the caption text. ``unique_id`` depends only on site, source and
label, so entities keep their history and settings across restarts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

STATE_ON = "ON"
STATE_OFF = "OFF"

# Home Assistant's device classes (homeassistant.components.*.const, 2024-2025); tests check ours against these.
BINARY_SENSOR_DEVICE_CLASSES = frozenset(
    "battery battery_charging carbon_monoxide cold connectivity door garage_door gas heat light lock moisture motion moving "
    "occupancy opening plug power presence problem running safety smoke sound tamper update vibration window".split()
)
NUMERIC_SENSOR_DEVICE_CLASSES = frozenset(
    "apparent_power aqi atmospheric_pressure battery carbon_dioxide carbon_monoxide current data_rate data_size distance duration "
    "energy energy_storage frequency gas humidity illuminance irradiance moisture monetary nitrogen_dioxide nitrogen_monoxide "
    "nitrous_oxide ozone ph pm1 pm10 pm25 power power_factor precipitation precipitation_intensity pressure reactive_power "
    "signal_strength sound_pressure speed sulphur_dioxide temperature volatile_organic_compounds volatile_organic_compounds_parts "
    "voltage volume volume_flow_rate volume_storage water weight wind_speed".split()
)
SOUND_PRESSURE_UNITS = frozenset({"dB", "dBA"})  # what HA accepts for device_class sound_pressure

# Labels of the building set (docs/labels.md) with a more telling class than ``sound``.
LABEL_DEVICE_CLASSES = {"smoke_alarm": "smoke", "co_alarm": "carbon_monoxide", "glass_break": "safety", "water_running": "moisture"}
_MOISTURE = re.compile(r"water|leak|drip|flood", re.IGNORECASE)  # water_running-like labels and queries (water_leak)
_OBJECT_ID = re.compile(r"^[A-Za-z0-9_-]+$")  # what HA allows in a discovery topic's node and object ids


@dataclass(frozen=True)
class SourceEntities:
    """What one source publishes: its reported labels (model order), enabled query names, and
    whether it has a caption and a sound-level topic."""

    source: str
    labels: tuple[str, ...]
    queries: tuple[str, ...] = ()
    captions: bool = False
    level: bool = True

    def state_names(self) -> tuple[str, ...]:
        """Every name with a state topic: labels, then queries."""
        return self.labels + self.queries


@dataclass(frozen=True)
class Discovery:
    """One discovery config: its retained topic and JSON payload."""

    topic: str
    payload: dict[str, Any] = field(hash=False)


def state_topic(prefix: str, site: str, source: str, name: str) -> str:
    """``{prefix}/{site}/{source}/state/{label or query name}``: retained ``ON``/``OFF``."""
    return f"{prefix}/{site}/{source}/state/{name}"


def level_topic(prefix: str, site: str, source: str) -> str:
    """The sound-level readings of one source (published by the level meter)."""
    return f"{prefix}/{site}/{source}/level"


def caption_topic(prefix: str, site: str, source: str) -> str:
    return f"{prefix}/{site}/{source}/caption"


def node_id(site: str) -> str:
    """The discovery node id of a site: every config of the site sits under it."""
    return f"rtaudio_{site}"


def discovery_filter(ha_prefix: str, site: str) -> str:
    """The subscription that finds every discovery config this site has published."""
    return f"{ha_prefix}/+/{node_id(site)}/+/config"


def birth_topic(ha_prefix: str) -> str:
    """Home Assistant's status topic: ``online`` when it (re)starts and wants configs again."""
    return f"{ha_prefix}/status"


def device_class(name: str) -> str:
    """The binary_sensor device class of a label or query name: smoke, carbon_monoxide, safety,
    moisture for water-like names, else ``sound``."""
    if name in LABEL_DEVICE_CLASSES:
        return LABEL_DEVICE_CLASSES[name]
    return "moisture" if _MOISTURE.search(name) else "sound"


def _title(name: str) -> str:
    return name.replace("_", " ").replace("-", " ").strip().capitalize() or name


def discovery_messages(
    ha_prefix: str,
    prefix: str,
    site: str,
    model_id: str,
    model_version: str,
    sources: Iterable[SourceEntities],
    status_topic: str,
    online: str = "online",
    offline: str = "offline",
) -> list[Discovery]:
    """Every discovery config of the site, devices in source order; ValueError when two entities
    would share a topic or unique_id (ids that differ only in where an underscore splits them)."""
    messages: list[Discovery] = []
    availability = {"availability_topic": status_topic, "payload_available": online, "payload_not_available": offline}
    origin = {"name": "rtaudio"}
    for entities in sources:
        source = entities.source
        for part, what in ((site, "site"), (source, "source id")):
            if not _OBJECT_ID.match(part):
                raise ValueError(f"{what} {part!r} cannot name a Home Assistant discovery topic; expected letters, digits, '-' and '_'")
        device = {
            "identifiers": [f"rtaudio_{site}_{source}"],
            "name": f"{source} ({site})",
            "manufacturer": "rtaudio",
            "model": model_id,
            "sw_version": model_version,
        }

        def config(component: str, obj: str, name: str, extra: dict[str, Any], source: str = source, device: dict[str, Any] = device) -> Discovery:
            topic = f"{ha_prefix}/{component}/{node_id(site)}/{source}_{obj}/config"
            payload = {"name": name, "unique_id": f"rtaudio_{site}_{source}_{obj}", "device": device, "origin": origin, **availability, **extra}
            return Discovery(topic, payload)

        for label in entities.labels:
            on_off = {"state_topic": state_topic(prefix, site, source, label), "payload_on": STATE_ON, "payload_off": STATE_OFF}
            messages.append(config("binary_sensor", label, _title(label), {**on_off, "device_class": device_class(label)}))
        for query in entities.queries:
            on_off = {"state_topic": state_topic(prefix, site, source, query), "payload_on": STATE_ON, "payload_off": STATE_OFF}
            messages.append(config("binary_sensor", query, f"Query {_title(query).lower()}", {**on_off, "device_class": device_class(query)}))
        if entities.level:
            level = {
                "state_topic": level_topic(prefix, site, source),
                "value_template": "{{ value_json.leq_db }}",
                "device_class": "sound_pressure",
                "unit_of_measurement": "dB",
                "state_class": "measurement",
                "suggested_display_precision": 1,
                "json_attributes_topic": level_topic(prefix, site, source),
                "json_attributes_template": "{{ {'lmax_db': value_json.lmax_db, 'l90_db': value_json.l90_db, 'calibrated': value_json.calibrated} | tojson }}",
            }
            messages.append(config("sensor", "level", "Sound level", level))
        if entities.captions:
            caption = {"state_topic": caption_topic(prefix, site, source), "value_template": "{{ value_json.caption[:255] }}", "icon": "mdi:text-box-outline"}
            messages.append(config("sensor", "caption", "Caption", caption))
    _no_duplicates(messages)
    return messages


def _no_duplicates(messages: Sequence[Discovery]) -> None:
    seen_topics: set[str] = set()
    seen_ids: set[str] = set()
    for message in messages:
        unique = message.payload["unique_id"]
        if message.topic in seen_topics or unique in seen_ids:
            raise ValueError(
                f"Home Assistant discovery: two entities would share {message.topic} (unique_id {unique}); "
                "rename a source or query so that source id + '_' + label is unique"
            )
        seen_topics.add(message.topic)
        seen_ids.add(unique)


def stale_topics(found: Iterable[str], wanted: Iterable[str]) -> list[str]:
    """Discovery topics found retained on the broker that the site no longer publishes (sorted):
    each gets an empty retained payload, so Home Assistant removes its entity."""
    keep = set(wanted)
    return sorted({topic for topic in found if topic not in keep})
