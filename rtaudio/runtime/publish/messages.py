"""MQTT payloads: topics, JSON bodies and their schemas (documented in docs/mqtt.md).

Every JSON payload carries a ``schema`` id (``rtaudio.<kind>/<major>``), the site, and ISO-8601
UTC times taken from the stream clock. ``published`` is added by the sender at the moment the
message is handed to the broker connection (``stamp``), so a message that waited in the
outbox keeps its original capture times and shows when it actually left.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from typing import Any, Literal

from rtaudio.runtime.events import CaptionResult, Event, TagResult
from rtaudio.runtime.level import LevelReading

Kind = Literal["tags", "events", "captions", "health", "level"]

SCHEMA_IDS: dict[Kind, str] = {
    "tags": "rtaudio.tags/1",
    "events": "rtaudio.event/1",
    "captions": "rtaudio.caption/1",
    "health": "rtaudio.health/1",
    "level": "rtaudio.level/1",
}
STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"


def iso(t: float) -> str:
    """UNIX seconds -> ``2026-11-22T10:00:00.123Z`` (UTC, milliseconds)."""
    stamp = datetime.fromtimestamp(t, timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def status_topic(prefix: str, site: str) -> str:
    return f"{prefix}/{site}/status"


def health_topic(prefix: str, site: str) -> str:
    return f"{prefix}/{site}/health"


def source_topic(prefix: str, site: str, source: str, kind: Literal["tags", "events", "caption", "level"]) -> str:
    return f"{prefix}/{site}/{source}/{kind}"


def _score(value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"score {value} is not a finite number")
    return round(value, 4)


def tags_payload(site: str, result: TagResult) -> dict[str, Any]:
    """One window's labels; ``end`` is the capture time of the window's last sample."""
    return {
        "schema": SCHEMA_IDS["tags"],
        "site": site,
        "source": result.source_id,
        "model": result.model_id,
        "start": iso(result.start_time),
        "end": iso(result.end_time),
        "labels": [{"label": label, "score": _score(score)} for label, score in result.labels],
    }


def event_payload(site: str, event: Event) -> dict[str, Any]:
    """An onset (``offset``/``duration_s`` null) or an offset; ``event_id`` links the pair.

    A free-text query's event adds ``query`` (its text); its label is the query name and its
    scores are cosine similarities. An offset that closes an event a killed run left open adds
    ``"reason": "restart"`` (an offset decided by the audio, or at a clean stop, has none). With event clips on,
    an offset of a clipped label adds ``clip`` (its file, written ``post_s`` after the offset)."""
    duration = None if event.offset_time is None else round(event.offset_time - event.onset_time, 3)
    return {
        "schema": SCHEMA_IDS["events"],
        "site": site,
        "source": event.source_id,
        "model": event.model_id,
        "event_id": event.event_id,
        "kind": event.kind,
        "label": event.label,
        "onset": iso(event.onset_time),
        "offset": None if event.offset_time is None else iso(event.offset_time),
        "duration_s": duration,
        "peak_score": _score(event.peak_score),
        "mean_score": _score(event.mean_score),
        "windows": int(event.windows),
        **({"query": event.query} if event.query is not None else {}),
        **({"reason": event.reason} if event.reason is not None else {}),
        **({"clip": event.clip} if event.clip is not None else {}),
    }


def caption_payload(site: str, result: CaptionResult) -> dict[str, Any]:
    """A caption of the ``window_s`` seconds of audio from ``start`` to ``end``."""
    return {
        "schema": SCHEMA_IDS["captions"],
        "site": site,
        "source": result.source_id,
        "model": result.model_id,
        "model_version": result.model_version,
        "start": iso(result.start_time),
        "end": iso(result.end_time),
        "caption": result.caption,
        "window_s": round(float(result.window_s), 3),
        "latency_ms": round(float(result.latency_ms), 1),
    }


def level_payload(site: str, reading: LevelReading) -> dict[str, Any]:
    """A-weighted levels of one source over ``interval_s`` seconds of its audio ending at ``time``."""
    values = {"leq_db": reading.leq_db, "lmax_db": reading.lmax_db, "l90_db": reading.l90_db}
    for name, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"{name} {value} is not a finite number")
    return {
        "schema": SCHEMA_IDS["level"],
        "site": site,
        "source": reading.source_id,
        "time": iso(reading.end_time),
        "interval_s": round(float(reading.interval_s), 3),
        **{name: round(float(value), 2) for name, value in values.items()},
        "weighting": reading.weighting,
        "calibrated": bool(reading.calibrated),
    }


def health_payload(site: str, model_id: str, snapshot: dict[str, Any]) -> dict[str, Any]:
    """``Health.snapshot()`` with the envelope fields first."""
    return {"schema": SCHEMA_IDS["health"], "site": site, "model": model_id, **snapshot}


def encode(payload: dict[str, Any]) -> bytes:
    """Compact JSON; NaN/Infinity are refused (they are not JSON)."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def stamp(encoded: bytes, published: float) -> bytes:
    """Append ``"published"`` to an encoded JSON object without re-parsing it."""
    if not encoded.endswith(b"}") or len(encoded) < 3:
        raise ValueError("stamp() needs a non-empty encoded JSON object")
    return encoded[:-1] + b',"published":"' + iso(published).encode() + b'"}'


@cache
def load_schema(kind: Kind) -> dict[str, Any]:
    """The JSON Schema shipped for one payload kind."""
    name = {"tags": "tags.json", "events": "event.json", "captions": "caption.json", "health": "health.json", "level": "level.json"}[kind]
    return json.loads(resources.files(__package__).joinpath("schema", name).read_text())
