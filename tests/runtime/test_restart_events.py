"""`rtaudio run` as a process against a real mosquitto and a real paho subscriber: it starts on a
corrupt outbox, and events open when it is killed with SIGKILL are closed at the next start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from rtaudio.runtime.publish.messages import load_schema
from tests.helpers import iso_seconds, spawn_rtaudio, tiny_site
from tests.tinymodel import tone

pytestmark = pytest.mark.integration
SR = 16000
EVENTS = "rtaudio/lab/hall/events"
TAGS = "rtaudio/lab/hall/tags"


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    """A long 440 Hz tone (one event that stays open) and a second of silence (none)."""
    tiny_site(tmp_path, "tone.wav", tone(440, 30.0))
    tiny_site(tmp_path, "silence.wav", np.zeros(SR, np.float32))
    return tmp_path


def start(site: Path, port: int, clip: str = "tone.wav", loop: bool = True) -> subprocess.Popen[str]:
    config = site / f"site-{clip}.yaml"
    config.write_text(f"""\
site: lab
model: model
sources:
  - {{id: hall, type: file, path: {clip}, realtime: true, loop: {str(loop).lower()}}}
mqtt: {{broker: 127.0.0.1, port: {port}, outbox_dir: {site / "outbox"}, reconnect_max_s: 2, shutdown_flush_s: 10}}
""")
    return spawn_rtaudio("run", "--config", str(config))


def payloads(sub, topic: str) -> list[dict]:
    return [json.loads(m.payload) for m in sub.on(topic)]


def test_a_corrupt_outbox_is_moved_aside_and_the_run_publishes(site: Path, mosquitto, make_subscriber) -> None:
    outbox = site / "outbox"
    outbox.mkdir()
    garbage = os.urandom(48 * 1024)  # what an SD card can hold after a power cut
    (outbox / "outbox.sqlite3").write_bytes(garbage)
    sub = make_subscriber(mosquitto, "rtaudio/lab/#")
    proc = start(site, mosquitto.port)
    try:
        published = sub.wait_for(lambda: payloads(sub, EVENTS) and payloads(sub, TAGS), timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert published, err[-3000:]
    assert proc.returncode == 0, err[-3000:]
    [moved] = [p for p in outbox.iterdir() if p.name.startswith("outbox.sqlite3.corrupt-")]
    assert moved.read_bytes() == garbage
    lines = [line for line in err.splitlines() if "is unreadable" in line]
    assert len(lines) == 1, err[-3000:]  # logged once
    assert "ERROR" in lines[0] and str(outbox / "outbox.sqlite3") in lines[0] and str(moved) in lines[0]
    assert payloads(sub, EVENTS)[0]["label"] == "tone_440"


def test_events_open_at_sigkill_are_closed_with_reason_restart_at_the_next_start(site: Path, mosquitto, make_subscriber) -> None:
    sub = make_subscriber(mosquitto, "rtaudio/lab/#")
    proc = start(site, mosquitto.port)
    try:
        assert sub.wait_for(lambda: any(e["kind"] == "onset" for e in payloads(sub, EVENTS)), timeout=60), proc.pid
        onset = next(e for e in payloads(sub, EVENTS) if e["kind"] == "onset")
        onset_t = iso_seconds(onset["onset"])
        # Let the event run a while, so the stream time persisted since the onset is what is tested.
        assert sub.wait_for(lambda: any(iso_seconds(t["end"]) >= onset_t + 4.5 for t in payloads(sub, TAGS)), timeout=60)
    finally:
        proc.kill()  # SIGKILL: no shutdown path, no offset
        proc.communicate(timeout=30)
    killed_at = time.time()
    assert proc.returncode == -signal.SIGKILL
    assert [e["kind"] for e in payloads(sub, EVENTS) if e["event_id"] == onset["event_id"]] == ["onset"]

    again = start(site, mosquitto.port, "silence.wav", loop=False)  # silence: nothing reopens; it ends by itself
    out, err = again.communicate(timeout=90)
    assert again.returncode == 0, err[-3000:]
    closed = [e for e in payloads(sub, EVENTS) if e["event_id"] == onset["event_id"] and e["kind"] == "offset"]
    assert closed, err[-3000:]
    offset = closed[0]
    assert offset["reason"] == "restart" and offset["label"] == "tone_440" and offset["onset"] == onset["onset"]
    offset_t = iso_seconds(offset["offset"])
    assert onset_t + 2.5 <= offset_t <= killed_at + 0.5  # the stream time it reached, not the onset's
    assert offset["duration_s"] == pytest.approx(offset_t - onset_t, abs=0.002)
    assert iso_seconds(offset["published"]) > killed_at
    jsonschema.validate(offset, load_schema("events"))
    assert "closing 1 event(s) left open" in err
    assert all("reason" not in e for e in payloads(sub, EVENTS) if e is not offset and e["kind"] == "onset")
